"""Sweeps into paper artefacts: Markdown and LaTeX tables, a CSV of every run, and plots.

    rnnlab-aggregate multirun/2026-11-22_05-21-41             # -> multirun/.../aggregate/
    rnnlab-aggregate sweep_a sweep_b --out paper/ --metrics valid/mse,test/accuracy
    rnnlab-aggregate sweep --group-by model --x-key task.length --curve-metric valid/loss

What is read. Every directory below the given ones that holds `.hydra/config.yaml`,
`results.json` or `metrics.jsonl` is a run (the search does not descend into a run). Of a run:
`.hydra/resolved.yaml` (the values used), `.hydra/config.yaml` (where no resolved copy exists),
`.hydra/overrides.yaml` (the command line, swept keys included), the group choices in
`.hydra/hydra.yaml`, `results.json` (status, final and best metrics, parameter count, timings),
`metrics.jsonl` (learning curves) and, if present, `provenance.json` (wall time). Never
TensorBoard event files: `metrics.jsonl` holds the same scalars as plain JSON lines. Run files are
read through `rnnlab.rundir`: a torn last line of `metrics.jsonl` or a damaged JSON file is
skipped with a warning naming it, and the run is still reported.

Grouping. The swept keys are the command-line override keys and the config-group choices (model,
task, optim, ...) whose values differ across the runs given; the seed and the keys that say
where or how verbosely (`rnnlab.writers.NOT_HPARAMS`) are never swept keys. Runs with equal
values of the swept keys (or of `--group-by`) form a variant; its runs are its seeds.

Statistics. Over the completed runs of a variant: mean ± sample standard deviation (ddof=1, the
unbiased estimate of the spread between seeds; with n = 1 it is undefined and shown as "± –"),
and n. "final" is a metric at the last evaluation (`results.json` `final`); "best" is the metric
at the checkpoint selected by the monitored metric (`best_checkpoint_metrics`; for the monitored
metric itself, its best value `best.value`): the model-selection number a paper reports, which
for a test metric is its only value.

Failed (`status` failed or diverged) and incomplete runs (no readable `results.json`: interrupted,
still running, or the file is damaged) count in no statistic but are listed in the Markdown
("Failed / incomplete runs"), in the CSV (`status`) and in the table's n column; they are never
dropped silently.

Written to `--out` (default `<first directory>/aggregate/`): `summary.md`, `summary.tex`
(booktabs), `runs.csv` (one row per run, for pandas), `curve_<metric>.png/.pdf` (mean over seeds
against step, with a ±1 std or min–max band) and `vs_<key>_<metric>.png/.pdf` (mean ± std against
a swept hyperparameter, one line per other variant).

Mistakes in the arguments — a directory that is missing or holds no run, a metric or key no run
has, an unwritable `--out` — are one line on stderr and exit status 2, before anything is written
(`--debug` or `RNNLAB_DEBUG=1` adds the traceback).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from rnnlab import argcheck
from rnnlab.errors import ConfigError, UserError, report_user_errors
from rnnlab.rundir import (
    CONFIG_FILE,
    HYDRA_DIR,
    HYDRA_FILE,
    METRICS_FILE,
    OVERRIDES_FILE,
    PROVENANCE_FILE,
    RESOLVED_CONFIG,
    RESULTS_FILE,
    read_json,
    read_jsonl,
)
from rnnlab.writers import NOT_HPARAMS

PROG = "rnnlab-aggregate"
GROUPS = ("model", "task", "optim", "trainer", "logger", "experiment")
"""Top-level config groups: their choice (e.g. model=lstm) is a candidate swept key."""
COMPLETED = "completed"
INCOMPLETE = "incomplete"
WALL_KEYS = ("wall_s_total", "wall_s")
"""Where `provenance.json` keeps a run's wall-clock seconds over all its attempts."""
PERF_TIME_KEYS = ("compile_s", "train_s", "eval_s")
DASH = "–"
_MISSING = object()


# --------------------------------------------------------------------------------------------
# Reading runs


class RunsNotFoundError(UserError, FileNotFoundError):
    """A directory given to aggregate is missing or holds no run directory."""


def _read_yaml(path: Path) -> Any:
    """The YAML document in `path`; None if missing or unreadable."""
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def lookup(tree: Any, dotted: str) -> Any:
    """`tree["a"]["b"]` for `"a.b"`; `_MISSING` where a part is absent."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def parse_overrides(lines: Iterable[str]) -> dict[str, str]:
    """Hydra's `overrides.yaml` entries (`key=value`, `+key=value`, `~key`) as `{key: raw}`,
    in command-line order."""
    parsed: dict[str, str] = {}
    for line in lines:
        key, _, raw = str(line).partition("=")
        parsed[key.lstrip("+~")] = raw
    return parsed


def _is_number(value: Any) -> bool:
    """Whether `value` is an int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_scalar(raw: str) -> Any:
    """An override's raw text as a YAML scalar ("8" -> 8, "True" -> True, "lstm" -> "lstm")."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


@dataclass(frozen=True)
class Run:
    """One run directory, as read from disk.

    Attributes:
        path: the run directory.
        status: `results.json` status ("completed", "failed", "diverged"), or "incomplete" where
            there is no readable `results.json`.
        results: `results.json` (empty if none).
        overrides: the command-line overrides, `{key: raw value}`.
        choices: the config-group choices (`{"model": "lstm", ...}`).
        resolved: `.hydra/resolved.yaml` (else `.hydra/config.yaml`), as a plain dict.
        provenance: `provenance.json` (empty if none).
        damaged: the run files that exist but could not be read (e.g. a `results.json` cut off
            mid-write): such a run is reported, with what is damaged, never dropped.
    """

    path: Path
    status: str
    results: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)
    choices: dict[str, Any] = field(default_factory=dict)
    resolved: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    damaged: tuple[str, ...] = ()

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    @cached_property
    def events(self) -> list[dict[str, Any]]:
        """The events of `metrics.jsonl` (read once; a torn or damaged line is skipped with a
        warning naming the file and line)."""
        return read_jsonl(self.path / METRICS_FILE)

    def value(self, key: str) -> Any:
        """The value of a hyperparameter (dotted key or group name), None if unknown.

        Looked up in the group choices, then the resolved config, then `results.json` hparams,
        then the raw override (a run without saved configs still groups by its overrides).
        """
        group = key in self.choices or key in GROUPS or "/" in key or "@" in key
        if key in self.choices:
            return self.choices[key]
        if not group:
            found = lookup(self.resolved, key)
            unresolved = isinstance(found, str) and "${" in found  # config.yaml, no resolved.yaml
            if found is not _MISSING and not unresolved:
                return found
        hparams = self.results.get("hparams") or {}
        if key in hparams:
            return hparams[key]
        if key in self.overrides:
            return _parse_scalar(self.overrides[key])
        return None

    @property
    def seed(self) -> Any:
        value = self.value("seed")
        return self.results.get("seed") if value is None else value


def is_run_dir(path: Path) -> bool:
    """Whether `path` holds a run: a saved Hydra config, `results.json` or `metrics.jsonl`."""
    return (
        (path / HYDRA_DIR / CONFIG_FILE).is_file()
        or (path / RESULTS_FILE).is_file()
        or (path / METRICS_FILE).is_file()
    )


def find_run_dirs(roots: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Every run directory at or below `roots`, sorted; runs are not searched inside, and
    hidden directories (`.hydra`, `.git`) are skipped."""
    found: set[Path] = set()
    for root in roots:
        for current, dirnames, _ in os.walk(root):
            path = Path(current)
            if is_run_dir(path):
                found.add(path.resolve())
                dirnames.clear()
            else:
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found)


def load_run(path: str | os.PathLike[str]) -> Run:
    """Reads one run directory (see `Run`); missing files leave their fields empty, damaged ones
    too (with a warning naming the file), and a run without a readable `results.json` is
    incomplete."""
    path = Path(path)
    results = read_json(path / RESULTS_FILE)
    provenance = read_json(path / PROVENANCE_FILE)
    damaged = tuple(
        name
        for name, data in ((RESULTS_FILE, results), (PROVENANCE_FILE, provenance))
        if data is None and (path / name).is_file()
    )
    if results is None:
        status = INCOMPLETE
    else:
        status = str(results.get("status") or (COMPLETED if "final" in results else "unknown"))
    hydra_dir = path / HYDRA_DIR
    resolved = _read_yaml(hydra_dir / RESOLVED_CONFIG)
    if not isinstance(resolved, dict):
        resolved = _read_yaml(hydra_dir / CONFIG_FILE)
    overrides = _read_yaml(hydra_dir / OVERRIDES_FILE)
    choices = lookup(_read_yaml(hydra_dir / HYDRA_FILE), "hydra.runtime.choices")
    return Run(
        path=path,
        status=status,
        results=results or {},
        overrides=parse_overrides(overrides if isinstance(overrides, list) else []),
        choices={
            k: v
            for k, v in (choices if isinstance(choices, dict) else {}).items()
            if not str(k).startswith("hydra/")
        },
        resolved=resolved if isinstance(resolved, dict) else {},
        provenance=provenance or {},
        damaged=damaged,
    )


def load_runs(roots: Sequence[str | os.PathLike[str]]) -> list[Run]:
    """Every run at or below `roots`.

    Raises:
        RunsNotFoundError (a FileNotFoundError): a root does not exist, is not a directory, or
            holds no run directory.
    """
    if not roots:
        raise RunsNotFoundError("no directories given: give sweep or run directories")
    for root in roots:
        if not Path(root).exists():
            raise RunsNotFoundError(f"{root} does not exist; check the path")
        if not Path(root).is_dir():
            raise RunsNotFoundError(
                f"{root} is a file, not a directory; give a sweep or run directory"
            )
    found = [(root, find_run_dirs([root])) for root in roots]
    empty = [str(root) for root, dirs in found if not dirs]
    if empty:
        raise RunsNotFoundError(
            "no run directories found under "
            + ", ".join(empty)
            + f" (a run directory holds {HYDRA_DIR}/{CONFIG_FILE}, {RESULTS_FILE} or "
            f"{METRICS_FILE}); give the directory rnnlab-train wrote (e.g. multirun/<date>)"
        )
    return [load_run(p) for p in sorted({d for _, dirs in found for d in dirs})]


# --------------------------------------------------------------------------------------------
# Swept keys, variants, metrics


def _is_hparam_key(key: str) -> bool:
    return key != "seed" and key not in NOT_HPARAMS and not key.startswith("hydra")


def canonical(value: Any) -> str:
    """A hashable, order-stable text of a value, to compare values across runs."""
    return json.dumps(value, sort_keys=True, default=str)


def candidate_keys(runs: Sequence[Run]) -> list[str]:
    """Keys that may be swept: the config groups (model, task, optim, ... in that order), then
    the other override keys in command-line order of first appearance, then, for runs without
    saved Hydra configs, their `results.json` hparams."""
    seen: dict[str, None] = {}
    for run in runs:
        seen.update(dict.fromkeys(g for g in run.choices if "/" not in g and "@" not in g))
        seen.update(dict.fromkeys(run.overrides))
        if not run.choices and not run.overrides:
            seen.update(dict.fromkeys(run.results.get("hparams") or {}))
    groups = [g for g in GROUPS if g in seen]
    rest = [k for k in seen if k not in groups]
    return [k for k in [*groups, *rest] if _is_hparam_key(k)]


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """The candidate keys whose known values differ across `runs` (unknown values are ignored,
    so a bare failed-run directory does not make every key look swept)."""
    swept = []
    for key in candidate_keys(runs):
        values = {canonical(v) for v in (run.value(key) for run in runs) if v is not None}
        if len(values) > 1:
            swept.append(key)
    return swept


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool) or value is None:
        return (2, str(value))
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value))


@dataclass(frozen=True)
class Variant:
    """Runs that share the values of the grouping keys (they differ in seed)."""

    values: tuple[Any, ...]
    runs: tuple[Run, ...]

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.completed]


def group_runs(runs: Sequence[Run], keys: Sequence[str]) -> list[Variant]:
    """`runs` grouped by their values of `keys`, variants sorted by those values (numbers
    numerically)."""
    groups: dict[str, list[Run]] = {}
    values: dict[str, tuple[Any, ...]] = {}
    for run in runs:
        vals = tuple(run.value(k) for k in keys)
        ident = canonical(vals)
        groups.setdefault(ident, []).append(run)
        values[ident] = vals
    ordered = sorted(groups, key=lambda i: [_sort_key(v) for v in values[i]])
    return [Variant(values[i], tuple(sorted(groups[i], key=_run_order))) for i in ordered]


def _run_order(run: Run) -> tuple[Any, str]:
    return (_sort_key(run.seed), str(run.path))


def monitored(runs: Sequence[Run]) -> tuple[str | None, str | None]:
    """The monitored metric and its mode ("min"/"max") of the first completed run."""
    for run in runs:
        best = run.results.get("best") or {}
        if run.completed and best.get("metric"):
            return best["metric"], best.get("mode")
    return None, None


def metric_value(run: Run, metric: str, kind: str) -> float | None:
    """`metric` of a run: kind "final" (last evaluation) or "best" (at the selected checkpoint;
    the monitored metric's own best value). None if the run does not have it."""
    results = run.results
    if kind == "final":
        value = (results.get("final") or {}).get(metric)
    else:
        best = results.get("best") or {}
        if best.get("metric") == metric and best.get("value") is not None:
            value = best["value"]
        else:
            value = (results.get("best_checkpoint_metrics") or {}).get(metric)
    return float(value) if _is_number(value) else None


def available_metrics(runs: Sequence[Run]) -> list[str]:
    """The monitored metric first, then every `final` metric, then the other best-checkpoint
    metrics (test splits), over the completed runs."""
    names: dict[str, None] = {}
    metric, _ = monitored(runs)
    if metric:
        names[metric] = None
    for section in ("final", "best_checkpoint_metrics"):
        for run in runs:
            if run.completed:
                names.update(dict.fromkeys(sorted(run.results.get(section) or {})))
    return list(names)


def wall_seconds(run: Run) -> float | None:
    """A run's wall-clock seconds: `results.json` perf.wall_s, else `provenance.json`
    wall_s_total, else compile + train + eval seconds of results.json perf (older runs: device
    time without data loading and checkpoints)."""
    perf = run.results.get("perf") or {}
    candidates = [perf.get("wall_s"), *(run.provenance.get(k) for k in WALL_KEYS)]
    for value in candidates:
        if _is_number(value):
            return float(value)
    parts = [perf[k] for k in PERF_TIME_KEYS if _is_number(perf.get(k))]
    return float(sum(parts)) if parts else None


@dataclass(frozen=True)
class Stat:
    """Mean, sample std (ddof=1; None for n < 2), n, min and max of some values."""

    mean: float
    std: float | None
    n: int
    lo: float
    hi: float


def summarize(values: Iterable[float | None]) -> Stat | None:
    """The `Stat` of the non-None values; None if there are none."""
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return None
    std = statistics.stdev(kept) if len(kept) > 1 else None
    return Stat(statistics.fmean(kept), std, len(kept), min(kept), max(kept))


# --------------------------------------------------------------------------------------------
# Tables

Cell = str | Stat | None


@dataclass(frozen=True)
class Column:
    """A table column: its title, the metric's mode (for an arrow) and its alignment."""

    title: str
    mode: str | None = None
    numeric: bool = True


@dataclass(frozen=True)
class Table:
    """Columns and rows of cells; `counts[i]` is row i's n (a metric's n is shown if it differs)."""

    columns: list[Column]
    rows: list[list[Cell]]
    counts: list[int | None] = field(default_factory=list)


def format_value(value: Any) -> str:
    """A hyperparameter value as text (floats short, None as "–")."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_number(x: float, digits: int = 4) -> str:
    """`x` to `digits` significant digits, trailing zeros kept (0.20 is not 0.2): 4 for a
    mean, 2 for a std."""
    text = f"{x:#.{digits}g}"
    return text[:-1] if text.endswith(".") else text.replace(".e", "e")


def _count_cell(variant: Variant) -> str:
    """n completed, with the runs that did not complete: "2 (+1 failed)"."""
    others: dict[str, int] = {}
    for run in variant.runs:
        if not run.completed:
            others[run.status] = others.get(run.status, 0) + 1
    extra = ", ".join(f"+{n} {status}" for status, n in sorted(others.items()))
    return f"{len(variant.completed)}" + (f" ({extra})" if extra else "")


def _params_cell(runs: Sequence[Run]) -> str | None:
    counts = sorted(
        {int(r.results["num_params"]) for r in runs if _is_number(r.results.get("num_params"))}
    )
    if not counts:
        return None
    return f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,}–{counts[-1]:,}"


def build_table(
    variants: Sequence[Variant],
    keys: Sequence[str],
    metrics: Sequence[str],
    mode_of: dict[str, str | None] | None = None,
) -> Table:
    """One row per variant: its key values, n, parameters, seconds, then the `Stat` of each
    metric's final and best value. Metric columns empty in every row are left out."""
    mode_of = mode_of or {}
    columns = [Column(k, numeric=False) for k in keys] or [Column("variant", numeric=False)]
    columns += [Column("n"), Column("params"), Column("time [s]")]
    rows: list[list[Cell]] = []
    for variant in variants:
        done = variant.completed
        seconds = summarize(wall_seconds(r) for r in done)
        row: list[Cell] = [format_value(v) for v in variant.values] or ["all runs"]
        row += [_count_cell(variant), _params_cell(done)]
        row.append(None if seconds is None else f"{seconds.mean:.3g}")
        rows.append(row)
    for metric in metrics:
        for kind in ("final", "best"):
            stats = [
                summarize(metric_value(r, metric, kind) for r in v.completed) for v in variants
            ]
            if any(s is not None for s in stats):
                columns.append(Column(f"{metric} ({kind})", mode_of.get(metric)))
                for row, stat in zip(rows, stats, strict=True):
                    row.append(stat)
    return Table(columns, rows, [len(v.completed) for v in variants])


def _markdown_cell(cell: Cell, n: int | None) -> str:
    if cell is None:
        return DASH
    if isinstance(cell, str):
        return cell.replace("|", "\\|")
    std = DASH if cell.std is None else format_number(cell.std, 2)
    text = f"{format_number(cell.mean)} ± {std}"
    return text if cell.n == n else f"{text} (n={cell.n})"


def _row_counts(table: Table) -> list[int | None]:
    return table.counts or [None] * len(table.rows)


ARROWS = {"min": ("↓", r"$\downarrow$"), "max": ("↑", r"$\uparrow$")}


def render_markdown(table: Table) -> str:
    """`table` as a GitHub Markdown table."""
    titles = [
        c.title + (f" {ARROWS[c.mode][0]}" if c.mode in ARROWS else "") for c in table.columns
    ]
    lines = ["| " + " | ".join(t.replace("|", "\\|") for t in titles) + " |"]
    lines.append("|" + "|".join("---:" if c.numeric else ":---" for c in table.columns) + "|")
    for row, n in zip(table.rows, _row_counts(table), strict=True):
        lines.append("| " + " | ".join(_markdown_cell(c, n) for c in row) + " |")
    return "\n".join(lines)


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    DASH: "--",
    "±": r"$\pm$",
}


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped (`valid_mse` -> `valid\\_mse`)."""
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex_number(x: float, digits: int = 4) -> str:
    """A number for LaTeX (`digits` significant digits, exponents as `\\times 10^{k}`)."""
    text = format_number(x, digits)
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"${mantissa} \\times 10^{{{int(exponent)}}}$"


def _latex_cell(cell: Cell, n: int | None) -> str:
    if cell is None:
        return "--"
    if isinstance(cell, str):
        return latex_escape(cell)
    std = "--" if cell.std is None else latex_number(cell.std, 2)
    text = f"{latex_number(cell.mean)} $\\pm$ {std}"
    return text if cell.n == n else f"{text} ($n={cell.n}$)"


def render_latex(table: Table, comment: str = "") -> str:
    """`table` as a booktabs `tabular` (needs `\\usepackage{booktabs}`)."""
    spec = "".join("r" if c.numeric else "l" for c in table.columns)
    titles = [
        latex_escape(c.title) + (f" {ARROWS[c.mode][1]}" if c.mode in ARROWS else "")
        for c in table.columns
    ]
    ascii_comment = comment.replace("±", "+/-").replace(DASH, "--")
    lines = [f"% {line}" for line in ascii_comment.splitlines()]
    lines += [f"\\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(titles) + r" \\"]
    lines.append(r"\midrule")
    for row, n in zip(table.rows, _row_counts(table), strict=True):
        lines.append(" & ".join(_latex_cell(c, n) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


def _error_text(run: Run) -> str:
    if run.status == INCOMPLETE and RESULTS_FILE in run.damaged:
        return f"{RESULTS_FILE} is damaged (not readable JSON)"
    if run.status == INCOMPLETE:
        return f"no {RESULTS_FILE} (interrupted or still running)"
    error = " ".join(str(run.results.get("error") or "").split())  # one line
    return (error[:237] + "..." if len(error) > 240 else error) or DASH


def render_failures(runs: Sequence[Run], keys: Sequence[str], root: Path) -> str:
    """The "Failed / incomplete runs" section: every run that did not complete."""
    failed = [r for r in runs if not r.completed]
    lines = [f"## Failed / incomplete runs ({len(failed)})", ""]
    if not failed:
        lines.append(f"None: all {len(runs)} runs completed.")
        return "\n".join(lines)
    table = Table(
        [Column(t, numeric=False) for t in ("run", "status", *keys, "seed", "error")],
        [
            [
                f"`{_relative(r.path, root)}`",
                r.status,
                *[format_value(r.value(k)) for k in keys],
                format_value(r.seed),
                _error_text(r),
            ]
            for r in failed
        ],
    )
    lines.append(_render_plain_markdown(table))
    return "\n".join(lines)


def _render_plain_markdown(table: Table) -> str:
    lines = ["| " + " | ".join(c.title for c in table.columns) + " |"]
    lines.append("|" + "|".join(":---" for _ in table.columns) + "|")
    lines += ["| " + " | ".join(_markdown_cell(c, None) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# CSV


def csv_rows(runs: Sequence[Run], keys: Sequence[str], metrics: Sequence[str]) -> list[dict]:
    """One dict per run: directory, status, key values, seed, size, time, metrics, error.

    Metric columns are `final/<metric>` and `best/<metric>` (as in `metrics.jsonl`)."""
    rows = []
    for run in runs:
        perf = run.results.get("perf") or {}
        row: dict[str, Any] = {"run_dir": str(run.path), "status": run.status}
        row.update({k: run.value(k) for k in keys})
        row.update(
            seed=run.seed,
            num_params=run.results.get("num_params"),
            steps=run.results.get("steps"),
            time_s=wall_seconds(run),
            train_s=perf.get("train_s"),
        )
        for metric in metrics:
            row[f"final/{metric}"] = metric_value(run, metric, "final")
            row[f"best/{metric}"] = metric_value(run, metric, "best")
        row["error"] = _error_text(run) if not run.completed else None
        rows.append(row)
    return rows


def write_csv(rows: Sequence[dict], path: Path) -> Path:
    """`rows` as CSV (empty cells for None); columns in the order of the first row."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


# --------------------------------------------------------------------------------------------
# Plots


def read_curve(run: Run, metric: str) -> dict[int, float]:
    """`{step: value}` of `metric` in a run's `metrics.jsonl` (a step logged again after a
    resume keeps its last value; unreadable lines, e.g. a truncated last one, are skipped with a
    warning, and so are non-numeric values)."""
    curve: dict[int, float] = {}
    for record in run.events:
        step, value = record.get("step"), record.get(metric)
        if _is_number(step) and _is_number(value):
            curve[int(step)] = float(value)
    return curve


def logged_metrics(runs: Sequence[Run]) -> list[str]:
    """The numeric metrics any of `runs` logged in `metrics.jsonl`, sorted."""
    names = {
        key
        for run in runs
        for record in run.events
        for key, value in record.items()
        if key != "step" and _is_number(value)
    }
    return sorted(names)


def mean_curve(
    curves: Sequence[dict[int, float]], band: str = "std"
) -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps, mean, band low and band high over `curves`, at every step any of them has.

    band: "std" (mean ± sample std, none where one value) or "minmax"."""
    steps = sorted({s for c in curves for s in c})
    means, lows, highs = [], [], []
    for step in steps:
        stat = summarize(c.get(step) for c in curves)
        assert stat is not None
        spread = stat.std or 0.0
        means.append(stat.mean)
        lows.append(stat.lo if band == "minmax" else stat.mean - spread)
        highs.append(stat.hi if band == "minmax" else stat.mean + spread)
    return steps, means, lows, highs


def _figure() -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot: the caller's backend is untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Any, stem: Path) -> list[Path]:
    """`stem.png` and `stem.pdf`."""
    paths = [stem.parent / f"{stem.name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        figure.savefig(path, dpi=150)
    return paths


def file_stem(*parts: str) -> str:
    """A file-name stem from metric/key names (`valid/mse` -> `valid-mse`)."""
    return "_".join(
        "".join(ch if ch.isalnum() or ch in ".-=" else "-" for ch in part) for part in parts
    )


def variant_label(keys: Sequence[str], values: Sequence[Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in zip(keys, values, strict=True)) or "all"


def plot_curves(
    variants: Sequence[Variant], keys: Sequence[str], metric: str, stem: Path, band: str = "std"
) -> list[Path]:
    """`metric` against step, one mean line per variant with a band over its seeds."""
    figure = _figure()
    axes = figure.add_subplot()
    drawn = 0
    for variant in variants:
        curves = [c for c in (read_curve(r, metric) for r in variant.completed) if c]
        if not curves:
            continue
        steps, means, lows, highs = mean_curve(curves, band)
        label = f"{variant_label(keys, variant.values)} (n={len(curves)})"
        (line,) = axes.plot(steps, means, marker="o" if len(steps) <= 30 else None, label=label)
        axes.fill_between(steps, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
        drawn += 1
    if not drawn:
        return []
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    spread = "±1 std" if band == "std" else "min–max"
    axes.set(xlabel="step", ylabel=metric, title=f"{metric}: mean over seeds, band {spread}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return save_figure(figure, stem)


def default_x_key(runs: Sequence[Run], keys: Sequence[str]) -> str | None:
    """The first grouping key with at least two distinct numeric values (e.g. task.length)."""
    done = [r for r in runs if r.completed]
    for key in keys:
        values = [r.value(key) for r in done]
        if values and all(_is_number(v) for v in values) and len(set(values)) > 1:
            return key
    return None


def plot_versus(
    runs: Sequence[Run],
    keys: Sequence[str],
    x_key: str,
    metric: str,
    stem: Path,
) -> list[Path]:
    """`metric` (best, else final) against the hyperparameter `x_key`: mean ± sample std over
    seeds, one line per combination of the other `keys`. A non-numeric `x_key` is categorical;
    a positive one spanning >= 100x (or a learning rate) gets a log axis."""
    # Runs without the key (another task in the same sweep) have no place on this axis.
    done = [r for r in runs if r.completed and r.value(x_key) is not None]
    kind = "best" if any(metric_value(r, metric, "best") is not None for r in done) else "final"
    others = [k for k in keys if k != x_key]
    lines = group_runs(done, others)
    xs_all = sorted({canonical(r.value(x_key)) for r in done})
    values_all = [json.loads(x) for x in xs_all]
    numeric = all(_is_number(v) for v in values_all)
    categories = sorted(values_all, key=_sort_key)
    figure = _figure()
    axes = figure.add_subplot()
    drawn = 0
    for line in lines:
        points = []
        for point in group_runs(line.runs, [x_key]):
            stat = summarize(metric_value(r, metric, kind) for r in point.runs)
            if stat is not None:
                x = point.values[0]
                points.append((x if numeric else categories.index(x), stat))
        if not points:
            continue
        points.sort(key=lambda p: p[0])
        axes.errorbar(
            [p[0] for p in points],
            [p[1].mean for p in points],
            yerr=[p[1].std or 0.0 for p in points],
            marker="o",
            capsize=3,
            label=variant_label(others, line.values) if others else None,
        )
        drawn += 1
    if not drawn:
        return []
    if numeric:
        positive = [v for v in values_all if v > 0]
        if len(positive) == len(values_all) and positive:
            span = max(positive) / min(positive)
            if span >= 100 or ("learning_rate" in x_key and span > 1):
                axes.set_xscale("log")
        if len(values_all) <= 12:
            axes.set_xticks(values_all, [format_value(v) for v in values_all])
            axes.minorticks_off()
    else:
        axes.set_xticks(range(len(categories)), [format_value(c) for c in categories])
    axes.set(xlabel=x_key, ylabel=f"{metric} ({kind})", title=f"{metric} ({kind}): mean ± std")
    axes.grid(alpha=0.3)
    if others:
        axes.legend(fontsize="small")
    return save_figure(figure, stem)


# --------------------------------------------------------------------------------------------
# Everything


@dataclass
class Summary:
    """What `aggregate` found and wrote."""

    runs: list[Run]
    keys: list[str]
    variants: list[Variant]
    metrics: list[str]
    table: Table
    markdown: str
    files: list[Path]
    warnings: list[str]


def _notes(runs: Sequence[Run]) -> str:
    """How to read the table's cells."""
    metric, mode = monitored(runs)
    selected = f"{metric} ({mode})" if metric else "the monitored metric"
    return (
        "Cells: mean ± sample std (ddof=1) over seeds, n = completed runs per variant "
        f"(± {DASH} where n = 1). final: at the last evaluation; best: at the checkpoint "
        f"selected by {selected}, for that metric its best value. time: wall-clock seconds "
        "(results.json perf.wall_s or provenance.json; else compile + train + eval seconds)."
    )


BANDS = ("std", "minmax")
"""The bands around a mean learning curve: ±1 sample std, or min–max over seeds."""


def _flat_keys(tree: Any, prefix: str = "") -> Iterable[str]:
    """The dotted keys of the leaves of a nested dict."""
    if not isinstance(tree, dict):
        yield prefix
        return
    for key, value in tree.items():
        yield from _flat_keys(value, f"{prefix}.{key}" if prefix else str(key))


def _unknown_key(option: str, key: str, runs: Sequence[Run]) -> str:
    known: dict[str, None] = {}
    for run in runs:
        known.update(dict.fromkeys(run.choices))
        known.update(dict.fromkeys(_flat_keys(run.resolved)))
        known.update(dict.fromkeys(run.overrides))
        known.update(dict.fromkeys(run.results.get("hparams") or {}))
    swept = ", ".join(swept_keys(runs)) or "none"
    hint = argcheck.did_you_mean(key, known)
    return (
        f"{option} {key!r} is in no run's config or overrides{hint}; give a group "
        f"(model, task, ...) or a dotted config key such as task.length (swept here: {swept})"
    )


def check_options(
    runs: Sequence[Run],
    metrics: Sequence[str] | None = None,
    group_by: Sequence[str] | None = None,
    curve_metrics: Sequence[str] | None = None,
    x_key: str | None = None,
    band: str = "std",
    plots: bool = True,
) -> None:
    """Checks `aggregate`'s options against the runs before anything is written.

    Raises:
        ConfigError: naming the option (as `rnnlab-aggregate` spells it), the value and what
            the runs have instead: a metric no completed run has, a grouping or x key no run
            has, a curve metric no completed run logged, an unknown band.
    """
    if band not in BANDS:
        raise ConfigError(f"--band {band!r} is not a band; choose from: {', '.join(BANDS)}")
    completed = [r for r in runs if r.completed]
    found = available_metrics(runs)
    for name in metrics or []:
        if completed and name not in found:  # without completed runs, no metric is known
            hint = argcheck.did_you_mean(name, found)
            raise ConfigError(
                f"--metrics: no completed run has the metric {name!r}{hint}; "
                f"they have: {', '.join(found) or 'none'} (in {RESULTS_FILE})"
            )
    for key in group_by or []:
        if all(r.value(key) is None for r in runs):
            raise ConfigError(_unknown_key("--group-by", key, runs))
    if x_key is not None and all(r.value(x_key) is None for r in runs):
        raise ConfigError(_unknown_key("--x-key", x_key, runs))
    if plots and completed and curve_metrics:
        logged = logged_metrics(completed)
        for name in curve_metrics:
            if name not in logged:
                hint = argcheck.did_you_mean(name, logged)
                raise ConfigError(
                    f"--curve-metric: no completed run logged {name!r} in {METRICS_FILE}{hint}; "
                    f"they logged: {', '.join(logged) or 'nothing'}"
                )


def aggregate(
    roots: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None = None,
    metrics: Sequence[str] | None = None,
    group_by: Sequence[str] | None = None,
    curve_metrics: Sequence[str] | None = None,
    x_key: str | None = None,
    band: str = "std",
    plots: bool = True,
) -> Summary:
    """Reads the runs under `roots` and writes the tables, CSV and plots to `out`.

    Args:
        roots: sweep or run directories.
        out: output directory (default `<roots[0]>/aggregate`).
        metrics: metrics of the table (default: the monitored one, then every final metric,
            then test metrics of the best checkpoint).
        group_by: keys that make a variant (default: the swept keys).
        curve_metrics: metrics plotted against step (default: the monitored one and train/loss).
        x_key: hyperparameter of the metric-vs-hyperparameter plots (default: the first
            grouping key with several numeric values; none if there is none).
        band: "std" or "minmax", the band around the mean learning curve.
        plots: False writes the tables and CSV only.

    Raises:
        RunsNotFoundError (a FileNotFoundError): a root is missing or holds no run directory.
        ConfigError: an option names what no run has (see `check_options`); nothing is written.
    """
    runs = load_runs(roots)
    check_options(runs, metrics, group_by, curve_metrics, x_key, band, plots)
    roots_resolved = [Path(r).resolve() for r in roots]
    root = Path(os.path.commonpath(roots_resolved)) if roots_resolved else Path.cwd()
    out_dir = Path(out) if out is not None else Path(roots[0]) / "aggregate"
    out_dir.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []

    swept = swept_keys(runs)
    keys = list(group_by) if group_by else swept
    completed = [r for r in runs if r.completed]
    found = available_metrics(runs)
    chosen = list(metrics) if metrics else found
    for name in chosen:
        if name not in found:
            warnings.append(f"metric {name!r} is in no completed run (have: {', '.join(found)})")
    monitor, mode = monitored(runs)
    variants = group_runs(runs, keys)
    table = build_table(variants, keys, chosen, {monitor: mode} if monitor else {})

    sources = ", ".join(f"`{r}`" for r in roots)
    grouping = ", ".join(f"`{k}`" for k in keys) or "nothing (one variant)"
    markdown = "\n\n".join(
        [
            "# Sweep summary",
            f"{len(runs)} runs ({len(completed)} completed) in {len(variants)} variants from "
            f"{sources}; grouped by {grouping}, seeds within a variant.",
            render_markdown(table),
            _notes(runs),
            render_failures(runs, list(dict.fromkeys([*swept, *keys])), root),
        ]
    )
    files = [out_dir / "summary.md", out_dir / "summary.tex"]
    files[0].write_text(markdown + "\n")
    comment = (
        f"rnnlab-aggregate of {', '.join(str(r) for r in roots)}: {_notes(runs)}"
        "\nNeeds \\usepackage{booktabs}."
    )
    files[1].write_text(render_latex(table, comment))
    csv_metrics = list(dict.fromkeys([*chosen, *found]))
    csv_keys = list(dict.fromkeys([*swept, *keys]))
    files.append(write_csv(csv_rows(runs, csv_keys, csv_metrics), out_dir / "runs.csv"))

    if plots and completed:
        if curve_metrics is None:
            has_train = any(read_curve(r, "train/loss") for r in completed)
            curve_metrics = [m for m in (monitor, "train/loss" if has_train else None) if m]
        for name in curve_metrics:
            written = plot_curves(variants, keys, name, out_dir / file_stem("curve", name), band)
            if not written:
                warnings.append(f"no run logged {name!r} in {METRICS_FILE}: no curve plotted")
            files += written
        x_key = x_key or default_x_key(runs, keys)
        if x_key is not None:
            if all(r.value(x_key) is None for r in completed):
                warnings.append(f"--x-key {x_key!r} is in no completed run's config")
            else:
                for name in chosen:
                    stem = out_dir / file_stem("vs", x_key, name)
                    files += plot_versus(runs, keys, x_key, name, stem)
    return Summary(runs, keys, variants, chosen, table, markdown, files, warnings)


def _split(values: Sequence[str] | None) -> list[str] | None:
    """Comma-separated, repeatable option values as one list (None if not given)."""
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _run_root(text: str) -> str:
    """A sweep or run directory argument: it must exist and be a directory (kept as typed)."""
    argcheck.directory(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    """The `rnnlab-aggregate` command line."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Aggregate rnnlab sweeps/runs into Markdown and LaTeX tables (mean ± std "
        "over seeds), a CSV of every run and plots. Reads .hydra/*.yaml, results.json and "
        "metrics.jsonl (never TensorBoard events).",
    )
    parser.add_argument(
        "dirs", nargs="+", type=_run_root, help="sweep or run directories (searched recursively)"
    )
    parser.add_argument(
        "--out", type=argcheck.output_dir, help="output directory (default: <first dir>/aggregate)"
    )
    parser.add_argument(
        "--metrics",
        action="append",
        help="table metrics, comma-separated (default: the monitored metric, every final "
        "metric and the test metrics)",
    )
    parser.add_argument(
        "--group-by", action="append", help="keys that make a variant (default: the swept keys)"
    )
    parser.add_argument(
        "--curve-metric",
        action="append",
        help="metrics plotted against step (default: the monitored metric and train/loss)",
    )
    parser.add_argument(
        "--x-key",
        help="hyperparameter of the metric-vs-hyperparameter plots (default: the first swept "
        "key with several numeric values)",
    )
    parser.add_argument("--band", choices=BANDS, default="std", help="learning-curve band")
    parser.add_argument("--no-plots", action="store_true", help="tables and CSV only")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error in your input"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `rnnlab-aggregate` and `scripts/aggregate.py`: prints the Markdown summary
    (table and failed runs) and writes the files. A mistake in the arguments (a missing
    directory, one without runs, a metric or key no run has, an unwritable `--out`) is one line
    on stderr and exit status 2, before anything is written."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return report_user_errors(PROG, _main, args, debug=args.debug)


def _main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: warning: %(message)s")
    if args.out is None:
        default = Path(args.dirs[0]) / "aggregate"
        argcheck.check_output_dir(default, "the default output directory", "give --out DIR")
    summary = aggregate(
        args.dirs,
        out=args.out,
        metrics=_split(args.metrics),
        group_by=_split(args.group_by),
        curve_metrics=_split(args.curve_metric),
        x_key=args.x_key,
        band=args.band,
        plots=not args.no_plots,
    )
    print(summary.markdown)
    for warning in summary.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    print(f"{PROG}: wrote {len(summary.files)} files to", end=" ", file=sys.stderr)
    print(summary.files[0].parent, file=sys.stderr)
    return 0
