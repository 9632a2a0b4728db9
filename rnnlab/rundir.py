"""The files of a run directory, and the one way to read and write them.

A run directory (`runs/<task>/<model>/<time>/`, or one job of a sweep) holds:

    .hydra/config.yaml, overrides.yaml, hydra.yaml, resolved.yaml
                        the run's config: written by rnnlab once an attempt is accepted
    attempts/<time>/    what Hydra writes for every attempt (its config, overrides and the log
                        `train.log`), refused attempts included
    checkpoints/<step>/ Orbax checkpoints (`rnnlab.checkpoint`)
    damaged/            checkpoints that failed to restore or verify, moved aside with the reason
    metrics.jsonl       one JSON object per log event
    results.json        the outcome (`status`, metrics, config, provenance summary)
    provenance.json     one entry per attempt (`rnnlab.provenance`)
    events.out.tfevents.*  TensorBoard

Every JSON file is written atomically (a temporary file, fsync, rename), so a crash leaves the old
file or the new one. Readers are tolerant: a torn last line of `metrics.jsonl` (a run killed while
logging) is skipped with a warning naming the file, and a damaged JSON file is reported as such —
never a bare `JSONDecodeError` — and, where it would be overwritten, moved aside first
(`set_aside`) so nothing already saved is lost. Resume, aggregation, diagnostics and sampling all
read run files through this module.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HYDRA_DIR = ".hydra"
CONFIG_FILE = "config.yaml"
OVERRIDES_FILE = "overrides.yaml"
HYDRA_FILE = "hydra.yaml"
RESOLVED_CONFIG = "resolved.yaml"
"""The resolved copy of the composed config (values used, no `${...}` left) in `.hydra/`."""
ATTEMPTS_DIR = "attempts"
CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "damaged"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
PROVENANCE_FILE = "provenance.json"

StrPath = str | os.PathLike[str]


def timestamp() -> str:
    """A UTC time for file names, to the microsecond (`2026-11-30T12-00-00.123456Z`)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H-%M-%S.%fZ")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json(path: StrPath, data: Mapping[str, Any]) -> None:
    """Writes `data` as indented JSON atomically (temporary file, fsync, rename)."""
    _write_atomic(Path(path), json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def set_aside(path: StrPath, reason: str) -> Path:
    """Renames a damaged file to `<name>.damaged-<time>` beside it (never deletes) and warns.

    Returns:
        The new path.
    """
    path = Path(path)
    target = path.with_name(f"{path.name}.damaged-{timestamp()}")
    os.replace(path, target)
    log.warning("%s is damaged (%s); moved it aside to %s", path, reason, target.name)
    return target


def read_json(path: StrPath, *, set_aside_damaged: bool = False) -> dict[str, Any] | None:
    """The JSON object in `path`; None if the file is missing or damaged.

    A damaged file (not UTF-8, not JSON, not an object) gets a warning naming it, and with
    `set_aside_damaged` is moved aside (`set_aside`) so that writing a new one loses nothing.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        problem = (
            None if isinstance(data, dict) else f"holds a {type(data).__name__}, not an object"
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        problem = f"not valid JSON: {err}"
    if problem is None:
        return data
    if set_aside_damaged:
        set_aside(path, problem)
    else:
        log.warning("%s is damaged (%s); ignoring it", path, problem)
    return None


def _parse_lines(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The events of a JSON-lines file and a description of each line that was skipped."""
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    events: list[dict[str, Any]] = []
    skipped: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = number == len(lines)  # no newline after it: the writer was stopped mid-line
        try:
            event = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            event = None
        if isinstance(event, dict) and not last:
            events.append(event)
        elif last:
            skipped.append(f"line {number} is torn (the run was stopped while writing it)")
        else:
            skipped.append(f"line {number} is not a JSON object")
    return events, skipped


def read_jsonl(path: StrPath, *, repair: bool = False) -> list[dict[str, Any]]:
    """The events of a JSON-lines file (e.g. `metrics.jsonl`), in order; [] if missing.

    Unreadable lines — a torn last line, or a damaged one — are skipped with a warning naming the
    file and line; with `repair` the file is rewritten without them (atomically).
    """
    path = Path(path)
    if not path.is_file():
        return []
    events, skipped = _parse_lines(path)
    if skipped:
        action = "cut them off" if repair else "skipping them"
        log.warning("%s: %s; %s", path, "; ".join(skipped), action)
        if repair:
            write_jsonl(path, events)
    return events


def write_jsonl(path: StrPath, events: Iterable[Mapping[str, Any]]) -> None:
    """Writes `events` as JSON lines, atomically."""
    _write_atomic(Path(path), "".join(json.dumps(dict(e)) + "\n" for e in events))
