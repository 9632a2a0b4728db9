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

`load_run`/`load_runs` read whole run directories into `Run` records (status, results,
hyperparameters by dotted key, provenance, damaged files): what `rnnlab-aggregate` tabulates.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from rnnlab.errors import RunNotFoundError

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
GROUPS = ("model", "task", "optim", "trainer", "logger", "experiment")
"""Top-level config groups: their choice (e.g. model=lstm) is a hyperparameter of a run."""
COMPLETED, INCOMPLETE = "completed", "incomplete"
"""A run's status when its `results.json` says it completed / when it has none readable."""


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


def read_jsonl(path: StrPath) -> list[dict[str, Any]]:
    """The events of a JSON-lines file (e.g. `metrics.jsonl`), in order; [] if missing.

    Unreadable lines — a torn last line, or a damaged one — are left out with a warning naming
    the file and line (a resumed run then rewrites the file without them: `truncate_jsonl`).
    """
    path = Path(path)
    if not path.is_file():
        return []
    events, skipped = _parse_lines(path)
    if skipped:
        log.warning("%s: %s; leaving them out", path, "; ".join(skipped))
    return events


def write_jsonl(path: StrPath, events: Iterable[Mapping[str, Any]]) -> None:
    """Writes `events` as JSON lines, atomically."""
    _write_atomic(Path(path), "".join(json.dumps(dict(e)) + "\n" for e in events))


# ------------------------------------------------------------------ reading whole runs


def _read_yaml(path: Path) -> Any:
    """The YAML document in `path`; None if missing or unreadable."""
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _scalar(raw: str) -> Any:
    """An override's raw text as a YAML scalar ("8" -> 8, "True" -> True, "lstm" -> "lstm")."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Every node of a nested dict by its dotted key (`{"task": {...}, "task.length": 8}`)."""
    if not isinstance(tree, dict):
        return {}
    nodes = {f"{prefix}{k}": v for k, v in tree.items()}
    return nodes | {n: v for k, v in tree.items() for n, v in _flat(v, f"{prefix}{k}.").items()}


@dataclass(frozen=True)
class Run:
    """One run directory (`load_run`). `status`: `results.json`'s ("completed", "failed",
    "diverged"), or "incomplete" where none is readable; `keys`: its candidate swept keys;
    `params`: its hyperparameters by dotted key or group name; `damaged`: the run files that exist
    but could not be read (e.g. a `results.json` cut off mid-write): it is reported, not dropped."""

    path: Path
    status: str
    results: dict[str, Any]
    keys: tuple[str, ...]
    params: dict[str, Any]
    provenance: dict[str, Any]
    damaged: tuple[str, ...]

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    @cached_property
    def events(self) -> list[dict[str, Any]]:
        """The events of `metrics.jsonl`, read once (torn or damaged lines skipped, warned)."""
        return read_jsonl(self.path / METRICS_FILE)

    def value(self, key: str) -> Any:
        """A hyperparameter (dotted key or group name), None if unknown."""
        return self.params.get(key)

    @property
    def seed(self) -> Any:
        return self.results.get("seed") if self.value("seed") is None else self.value("seed")


def load_run(path: str | os.PathLike[str]) -> Run:
    """One run directory; missing or damaged files (warned) count as empty. A value is the config
    group's choice (`hydra.yaml`), else the resolved config's (`config.yaml` where no resolved
    copy exists, unless it is an unresolved `${...}`), else `results.json` hparams', else the
    raw override's (a run without saved configs still groups by its overrides)."""
    path, hydra = Path(path), Path(path) / HYDRA_DIR
    results = read_json(path / RESULTS_FILE)
    provenance = read_json(path / PROVENANCE_FILE)
    files = {RESULTS_FILE: results, PROVENANCE_FILE: provenance}
    resolved = _read_yaml(hydra / RESOLVED_CONFIG)
    if not isinstance(resolved, dict):
        resolved = _read_yaml(hydra / CONFIG_FILE)
    lines = _read_yaml(hydra / OVERRIDES_FILE)  # key=value, +key=value, ~key
    lines = [str(line).partition("=") for line in (lines if isinstance(lines, list) else [])]
    overrides = {key.lstrip("+~"): _scalar(raw) for key, _, raw in lines}
    choices = _flat(_read_yaml(hydra / HYDRA_FILE)).get("hydra.runtime.choices")
    choices = choices if isinstance(choices, dict) else {}
    choices = {k: v for k, v in choices.items() if not str(k).startswith("hydra/")}
    config = {
        k: v
        for k, v in _flat(resolved).items()
        if not (k in GROUPS or "/" in k or "@" in k or isinstance(v, str) and "${" in v)
    }
    hparams = (results or {}).get("hparams") or {}
    keys = [*(g for g in choices if "/" not in g and "@" not in g), *overrides]
    if results is None:
        status = INCOMPLETE
    else:
        status = str(results.get("status") or (COMPLETED if "final" in results else "unknown"))
    return Run(
        path=path,
        status=status,
        results=results or {},
        keys=tuple(keys if choices or overrides else hparams),
        params={**overrides, **hparams, **config, **choices},
        provenance=provenance or {},
        damaged=tuple(n for n, data in files.items() if data is None and (path / n).is_file()),
    )


def find_run_dirs(roots: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Every run directory (it holds `.hydra/config.yaml`, `results.json` or `metrics.jsonl`) at
    or below `roots`, sorted; runs are not searched inside, nor hidden directories (`.hydra`)."""
    marks = (Path(HYDRA_DIR, CONFIG_FILE), RESULTS_FILE, METRICS_FILE)
    found: set[Path] = set()
    for root in roots:
        for current, dirnames, _ in os.walk(root):
            if any((Path(current) / mark).is_file() for mark in marks):
                found.add(Path(current).resolve())
                dirnames.clear()
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found)


def load_runs(roots: Sequence[str | os.PathLike[str]]) -> list[Run]:
    """Every run at or below `roots`; RunNotFoundError (a FileNotFoundError) if a root does not
    exist, is not a directory, or holds no run directory."""
    if not roots:
        raise RunNotFoundError("no directories given: give sweep or run directories")
    for root in (r for r in roots if not Path(r).is_dir()):
        if not Path(root).exists():
            raise RunNotFoundError(f"{root} does not exist; check the path")
        raise RunNotFoundError(f"{root} is a file, not a directory; give a sweep or run directory")
    found = {root: find_run_dirs([root]) for root in roots}
    if empty := [str(root) for root, dirs in found.items() if not dirs]:
        raise RunNotFoundError(
            f"no run directories found under {', '.join(empty)} (a run directory holds "
            f"{HYDRA_DIR}/{CONFIG_FILE}, {RESULTS_FILE} or "
            f"{METRICS_FILE}); give the directory rnnlab-train wrote (e.g. multirun/<date>)"
        )
    return [load_run(p) for p in sorted({d for dirs in found.values() for d in dirs})]
