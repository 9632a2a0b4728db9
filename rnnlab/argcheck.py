"""Command-line argument checks shared by the console scripts (argparse `type=` functions).

Each check either returns the parsed value or raises `argparse.ArgumentTypeError`, which argparse
prints as `prog: error: argument --name: <message>` with exit status 2, like `rnnlab.errors`'
user errors. `check_output_dir` raises `rnnlab.errors.UserError` instead, for paths that are only
known after parsing (a default output directory).
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from rnnlab.checks import in_range, range_text
from rnnlab.errors import UserError


def directory(text: str) -> Path:
    """An existing directory (a run or sweep directory)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist; check the path")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a directory; give a directory")
    return path


def directory_text(text: str) -> str:
    """An existing directory, kept as typed (where the text is shown or substituted as given)."""
    directory(text)
    return text


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer in `[low, high]` (no upper bound where `high` is None)."""
    wanted = f"an integer {range_text(low)}" if high is None else f"an integer from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if not in_range(value, low, high):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def float_at_least(low: float) -> Callable[[str], float]:
    """A finite number >= `low`."""
    wanted = range_text(low, spec="g")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {wanted}, got {text!r}") from None
        if not math.isfinite(value) or not in_range(value, low):
            raise argparse.ArgumentTypeError(f"must be a finite number {wanted}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` for the closest of `candidates` to `name`, or `""`."""
    close = difflib.get_close_matches(name, list(dict.fromkeys(candidates)), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_names(names: Sequence[str], known: Sequence[str], what: str) -> str | None:
    """A message naming the first of `names` not in `known` (with close matches and every known
    name), or None if all are known."""
    for name in names:
        if name not in known:
            hint = did_you_mean(name, known)
            return f"unknown {what} {name!r}{hint}; choose from: {', '.join(known)}"
    return None


def name_list(known: Sequence[str], what: str) -> Callable[[str], list[str]]:
    """A comma-separated, non-empty list of names out of `known` (e.g. `lstm,gru`)."""

    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"give at least one {what} ({', '.join(known)})")
        problem = unknown_names(names, known, what)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return names

    parse.__name__ = "list"
    return parse


def output_dir_problem(path: Path) -> str | None:
    """Why `path` cannot be (created and) written as a directory, or None if it can."""
    if path.exists():
        if not path.is_dir():
            return f"{path} is a file, not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable"
        return None
    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot create {path}: {ancestor} is a file"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot create {path}: {ancestor} is not writable"
    return None


def check_output_dir(path: str | os.PathLike[str], what: str, fix: str | None = None) -> Path:
    """`path` as a Path if a directory can be written there, else a `UserError` naming `what`
    (e.g. "--out") and the fix (default: give another with `what`)."""
    path = Path(path)
    problem = output_dir_problem(path)
    if problem:
        raise UserError(f"{what}: {problem}; {fix or f'give a writable directory with {what}'}")
    return path


def output_dir(text: str) -> Path:
    """A directory that exists and is writable, or that can be created."""
    path = Path(text)
    problem = output_dir_problem(path)
    if problem:
        raise argparse.ArgumentTypeError(f"{problem}; give a writable directory")
    return path


def checkpoint(text: str) -> str:
    """A `--checkpoint` value (`rnnlab.checkpoint.parse_checkpoint`), kept as typed."""
    from rnnlab.checkpoint import CHECKPOINT_HELP, parse_checkpoint

    try:
        parse_checkpoint(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {CHECKPOINT_HELP}, got {text!r}") from None
    return text
