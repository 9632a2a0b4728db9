"""Sweeps into paper artefacts: Markdown and LaTeX tables, a CSV of every run, and figures.

    rnnlab-aggregate multirun/2026-11-22_05-21-41             # -> multirun/.../aggregate/
    rnnlab-aggregate sweep_a sweep_b --out paper/ --metrics valid/mse,test/accuracy
    rnnlab-aggregate sweep --group-by model --x-key task.length --baseline-variant lstm

Runs are read through `rnnlab.rundir` (a damaged file is skipped with a warning, the run still
reported; never TensorBoard event files). Runs with equal values of the swept keys (or of
`--group-by`) form a variant; its runs are its seeds. The runs are one DataFrame (`runs.csv`);
the table is its `groupby(variant).agg` over completed runs, rendered as Markdown and `to_latex`
(`NOTES` and `Table.notes` say how to read it). Failed and incomplete runs count in no statistic
but are listed, never dropped silently. Mistakes in the arguments are one line on stderr and exit
status 2 before anything is written (`--debug` or `RNNLAB_DEBUG=1` adds the traceback). README
"Aggregating a sweep" describes the outputs.

Table rules:
- One column per distinct metric: metrics equal in every completed run (an MSE task's
  `valid/loss` and `valid/mse`) share one column, the notes name them.
- Every metric column carries its mode's arrow (↓ lower is better, ↑ higher is better):
  `--mode NAME=min|max` first, then a monitored metric's saved mode, then `metric_mode`'s rule
  from the name; a metric of unknown mode has no arrow and is named in the notes.
- Blocks: with two or more grouping keys, the rows sharing every key but the last (e.g. one
  task and length, a row per model) are compared with each other only. The best mean of a
  block (as shown, 4 significant digits; ties all) is bold; `--baseline-variant V` marks with
  † the rows whose seeds differ from those of the block's row with last key V at p < `ALPHA`
  (Welch's two-sided t-test; n >= 2 on both sides).

Figures (`rnnlab.figures` style, one column wide unless `--width page`) show the blocks as
panels (at most `MAX_PANELS`, else one panel) and a line per variant, each with its own colour,
marker and dash; the task's baseline (`results.json` `baselines`, `baseline_value`) is a grey
dotted labelled line; the y axis is logarithmic when the means span more than `LOG_SPAN` (two
decades).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from rnnlab import argcheck, rundir
from rnnlab.errors import ConfigError, report_user_errors
from rnnlab.figures import BASELINE_STYLE, WIDTHS, figure, line_style, save_figure, styled
from rnnlab.progress import console_logging, track
from rnnlab.rundir import COMPLETED, GROUPS, INCOMPLETE, Run, find_run_dirs, load_run, load_runs
from rnnlab.writers import NOT_HPARAMS

PROG = "rnnlab-aggregate"
WALL_KEYS = ("wall_s_total", "wall_s")  # provenance.json: wall-clock seconds of all attempts
PERF_TIME_KEYS = ("compile_s", "train_s", "eval_s")
KINDS = ("final", "best")
BANDS = ("std", "minmax")  # around a mean learning curve: ±1 sample std, or min–max over seeds
DASH = "–"
MODES = ("min", "max")
ARROWS = {"min": ("↓", r"$\downarrow$"), "max": ("↑", r"$\uparrow$")}  # Markdown, LaTeX
MODE_NAMES = {
    "min": ("loss", "mse", "mae", "rmse", "bpc", "perplexity", "ppl", "error", "nll"),
    "max": ("accuracy", "acc", "f1", "auc", "r2"),
}
"""`metric_mode`'s rule: a metric whose last name part (`valid/mse_original` -> `mse`) is listed."""
ACRONYMS = {n: n.upper() for n in ("mse", "mae", "rmse", "bpc", "ppl", "nll", "auc", "f1", "r2")}
BASELINE_ALIASES = {"loss": ("cross_entropy", "mse")}
"""A task's loss is its cross-entropy (classification, copy) or its MSE (regression)."""
ALPHA = 0.05
SIGNIFICANT = ("†", r"$^\dagger$")  # Markdown, LaTeX
NICE_STEPS = (1, 2, 2.5, 5, 10)  # tick spacings: 1, 2, 2.5 or 5 times a power of ten
LOG_SPAN = 100.0
MAX_PANELS = 6
# fmt: off
LATEX_SPECIAL = str.maketrans({
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", DASH: "--",
    "±": r"$\pm$",
})
ASCII = str.maketrans({"±": "+/-", DASH: "--", "↓": "(down)", "↑": "(up)", "†": "+", "≥": ">="})
# fmt: on
NOTES = (
    "Cells: mean ± sample std (ddof=1) over seeds, n = completed runs per variant (± – where "
    "n = 1). final: at the last evaluation; best: at the checkpoint selected by the monitored "
    "metric ({}), for that metric its best value. time: wall-clock seconds (results.json "
    "perf.wall_s or provenance.json; else compile + train + eval seconds)."
)
"""How to read the table's cells (`{}`: the monitored metrics and their modes)."""
Names = Sequence[str] | None  # an option's names; None: its default


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def canonical(value: Any) -> str:
    """A hashable, order-stable text of a value, to compare values across runs."""
    return json.dumps(value, sort_keys=True, default=str)


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """The config groups (in `GROUPS` order), then the other override keys or hparams, whose known
    values differ across `runs` (unknown values are ignored, so a bare failed-run directory does
    not make every key look swept)."""
    seen = dict.fromkeys(key for run in runs for key in run.keys)
    keys = [*(g for g in GROUPS if g in seen), *(k for k in seen if k not in GROUPS)]
    keys = [k for k in keys if k != "seed" and k not in NOT_HPARAMS and not k.startswith("hydra")]
    return [k for k in keys if len({canonical(r.value(k)) for r in runs} - {canonical(None)}) > 1]


def _sort_key(value: Any) -> tuple[int, Any]:
    """Numbers numerically, then text, then booleans and None."""
    if isinstance(value, bool) or value is None:
        return (2, str(value))
    return (0, value) if isinstance(value, int | float) else (1, str(value))


@dataclass(frozen=True)
class Variant:
    """Runs that share the values of the grouping keys (they differ in seed)."""

    values: tuple[Any, ...]
    runs: tuple[Run, ...]


def group_runs(runs: Sequence[Run], keys: Sequence[str]) -> list[Variant]:
    """`runs` by their values of `keys`, sorted by those values, each variant's runs by seed."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(canonical([run.value(k) for k in keys]), []).append(run)
    variants = [
        Variant(
            tuple(g[0].value(k) for k in keys),
            tuple(sorted(g, key=lambda r: (_sort_key(r.seed), str(r.path)))),
        )
        for g in groups.values()
    ]
    return sorted(variants, key=lambda v: [_sort_key(x) for x in v.values])


def monitored(runs: Sequence[Run]) -> dict[str, str | None]:
    """The monitored metrics of the completed runs (one per task in a mixed sweep), in order of
    the runs, each with its saved mode ("min"/"max")."""
    found: dict[str, str | None] = {}
    for run in (r for r in runs if r.completed):
        best = run.results.get("best") or {}
        if best.get("metric"):
            found.setdefault(best["metric"], best.get("mode"))
    return found


def metric_value(run: Run, metric: str, kind: str) -> float | None:
    """`metric` of a run, of kind "final" or "best" (see the module docstring); None if absent."""
    best = run.results.get("best") or {}
    if kind == "final":
        value = (run.results.get("final") or {}).get(metric)
    elif best.get("metric") == metric and best.get("value") is not None:
        value = best["value"]
    else:
        value = (run.results.get("best_checkpoint_metrics") or {}).get(metric)
    return float(value) if _is_number(value) else None


def available_metrics(runs: Sequence[Run]) -> list[str]:
    """The monitored metrics, every `final` metric, then the other best-checkpoint metrics."""
    names = dict.fromkeys(monitored(runs))
    for section in ("final", "best_checkpoint_metrics"):
        for run in (r for r in runs if r.completed):
            names.update(dict.fromkeys(sorted(run.results.get(section) or {})))
    return list(names)


def metric_mode(metric: str, modes: Mapping[str, str | None] | None = None) -> str | None:
    """ "min" (lower is better), "max" or None (unknown) for `metric`: `modes[metric]` if given
    (`--mode`, the monitored metric's saved mode), else by `MODE_NAMES` from its last part split
    at "_"/"-" (`valid/mse` and `test/mse_original` min, `test/top5_acc` max).

        >>> metric_mode("valid/bpc"), metric_mode("test/accuracy"), metric_mode("wall/step_ms")
        ('min', 'max', None)
    """
    if modes and modes.get(metric) in MODES:
        return modes[metric]
    name = metric.rpartition("/")[2].lower()
    parts = {name, *re.split(r"[_\-]", name)}
    return next((mode for mode, names in MODE_NAMES.items() if parts & set(names)), None)


def label(name: str) -> str:
    """A metric or key for a reader: `valid/mse` -> "valid MSE", `task.length` -> "task length"."""
    words = re.split(r"[/._]", name)
    return " ".join(ACRONYMS.get(w.lower(), w) for w in words if w)


def baseline_value(run: Run, metric: str) -> float | None:
    """The task's reference level for `metric` from the run's `results.json` `baselines`:
    `baseline/<split>_<name>`, else `baseline/<name>` (for a `loss`, also its
    `BASELINE_ALIASES`), e.g. `valid/mse` -> `baseline/mse`; None if the task defines none."""
    baselines = run.results.get("baselines") or {}
    split, _, name = metric.rpartition("/")
    names = [f"{split}_{name}" if split else name, name, *BASELINE_ALIASES.get(name, ())]
    value = next((baselines[f"baseline/{n}"] for n in names if f"baseline/{n}" in baselines), None)
    return float(value) if _is_number(value) else None


def read_runs(roots: Sequence[str | os.PathLike[str]], events: bool = False) -> list[Run]:
    """`load_runs(roots)` with progress (`track`), also reading each `metrics.jsonl` if
    `events`; a root without runs raises `load_runs`'s RunNotFoundError."""
    found = [find_run_dirs([root]) for root in roots]
    if not roots or not all(found):
        return load_runs(roots)  # raises, naming the root
    paths = sorted({path for paths in found for path in paths})
    runs = []
    for path in track(paths, desc="reading runs", total=len(paths), unit="run"):
        runs.append(run := load_run(path))
        if events and run.completed:
            run.events  # noqa: B018  (cached: read once, here, under the progress line)
    return runs


def wall_seconds(run: Run) -> float | None:
    """perf.wall_s, provenance.json's wall time, or (older runs) compile + train + eval seconds."""
    perf = run.results.get("perf") or {}
    for value in [perf.get("wall_s"), *(run.provenance.get(k) for k in WALL_KEYS)]:
        if _is_number(value):
            return float(value)
    parts = [perf[k] for k in PERF_TIME_KEYS if _is_number(perf.get(k))]
    return float(sum(parts)) if parts else None


def _error_text(run: Run) -> str:
    if run.status == INCOMPLETE and rundir.RESULTS_FILE in run.damaged:
        return f"{rundir.RESULTS_FILE} is damaged (not readable JSON)"
    if run.status == INCOMPLETE:
        return f"no {rundir.RESULTS_FILE} (interrupted or still running)"
    error = " ".join(str(run.results.get("error") or "").split())  # one line
    return (error[:237] + "..." if len(error) > 240 else error) or DASH


def runs_frame(runs: Sequence[Run], keys: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per run: the columns of `runs.csv`."""
    rows = []
    for run in runs:
        results, perf = run.results, run.results.get("perf") or {}
        row = {"run_dir": str(run.path), "status": run.status, **{k: run.value(k) for k in keys}}
        row.update(seed=run.seed, num_params=results.get("num_params"), steps=results.get("steps"))
        row.update(time_s=wall_seconds(run), train_s=perf.get("train_s"))
        row.update({f"{kind}/{m}": metric_value(run, m, kind) for m in metrics for kind in KINDS})
        rows.append(row | {"error": None if run.completed else _error_text(run)})
    return pd.DataFrame(rows, dtype=object)  # object: ints stay ints, None an empty cell


@dataclass(frozen=True)
class Stat:
    """A metric's cell: mean and sample std (None for n = 1) of `n` of the variant's `of` runs;
    `best`: the best mean of its block (bold); `significant`: Welch's test against the reference
    variant gave p < `ALPHA` (†)."""

    mean: float
    std: float | None
    n: int
    of: int
    best: bool = False
    significant: bool = False


@dataclass(frozen=True)
class Column:
    """A table column: its title, the metric's mode (for an arrow) and its alignment."""

    title: str
    mode: str | None = None
    numeric: bool = True


@dataclass(frozen=True)
class Table:
    """The summary: one row per variant, a cell (str, `Stat` or None) per column; `metrics`: the
    distinct metrics it shows; `notes`: how to read its arrows, bold, marks and merged columns."""

    columns: list[Column]
    rows: list[list[str | Stat | None]]
    metrics: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def format_value(value: Any) -> str:
    """A hyperparameter value as text (floats short, None as "–")."""
    if value is None or isinstance(value, bool):
        return DASH if value is None else str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped (`valid_mse` -> `valid\\_mse`)."""
    return text.translate(LATEX_SPECIAL)


def _params(values: pd.Series) -> str | None:
    counts = sorted({int(v) for v in values if _is_number(v)})
    if not counts:
        return None
    return f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,}–{counts[-1]:,}"


def distinct_metrics(done: pd.DataFrame, metrics: Sequence[str]) -> dict[str, list[str]]:
    """`metrics` less those equal to an earlier one (both kinds) in every completed run (`done`:
    rows of `runs_frame`), each kept with the names it stands for, itself first."""
    values = {m: done[[f"{k}/{m}" for k in KINDS]].astype(float).to_numpy() for m in metrics}
    kept: dict[str, list[str]] = {}
    for metric in metrics:
        same = [m for m in kept if np.array_equal(values[m], values[metric], equal_nan=True)]
        if same and not np.isnan(values[metric]).all():
            kept[same[0]].append(metric)
        else:
            kept[metric] = [metric]
    return kept


def mark_best(cells: list, blocks: Sequence[str], mode: str | None) -> list:
    """`cells` (a column) with `Stat.best` on the best mean as shown (4 significant digits; ties
    all) of every block of two or more means."""
    shown = {
        i: float(f"{c.mean:.4g}")
        for i, c in enumerate(cells)
        if isinstance(c, Stat) and math.isfinite(c.mean)
    }
    means: dict[str, list[float]] = {}
    for i, mean in shown.items():
        means.setdefault(blocks[i], []).append(mean)
    pick = {"min": min, "max": max}.get(mode or "")
    best = {block: pick(m) for block, m in means.items() if pick and len(m) > 1}
    return [
        replace(c, best=True) if i in shown and best.get(blocks[i]) == shown[i] else c
        for i, c in enumerate(cells)
    ]


def mark_significant(
    cells: list, samples: Mapping[int, np.ndarray], blocks: Sequence[str], refs: Mapping[str, int]
) -> list:
    """`cells` (a column) with `Stat.significant` where Welch's two-sided t-test (unequal
    variances) of the row's seeds (`samples[row]`) against those of its block's reference row
    (`refs[block]`) gives p < `ALPHA`; untested where either side has fewer than 2 seeds."""
    from scipy import stats  # a slow import: only with a reference variant

    marked = list(cells)
    for i, cell in enumerate(cells):
        ref = refs.get(blocks[i])
        if not isinstance(cell, Stat) or ref in (None, i):
            continue
        a, b = samples.get(i, np.empty(0)), samples.get(ref, np.empty(0))
        if len(a) >= 2 and len(b) >= 2:
            with warnings.catch_warnings():  # both constant: p is nan, no mark
                warnings.simplefilter("ignore", RuntimeWarning)
                p = stats.ttest_ind(a, b, equal_var=False).pvalue
            marked[i] = replace(cell, significant=bool(p < ALPHA))
    return marked


def build_table(
    frame: pd.DataFrame,
    variants: list[Variant],
    keys: list[str],
    metrics: list[str],
    modes: Mapping[str, str | None],
    reference: str | None = None,
) -> Table:
    """One row per variant (`frame`: `runs_frame`), a column per distinct metric and kind (see
    the module docstring for merged columns, arrows, bold and marks); `modes`: metric ->
    "min"/"max" before `metric_mode`'s rule; `reference`: the last key's value of the variant
    each block is tested against. Metric columns empty in every row are left out."""
    variant_of = {str(r.path): i for i, v in enumerate(variants) for r in v.runs}
    frame = frame.assign(variant=frame["run_dir"].map(variant_of))
    done, ids = frame[frame["status"] == COMPLETED], range(len(variants))
    status = pd.crosstab(frame["variant"], frame["status"])
    n_done = status.pop(COMPLETED) if COMPLETED in status else pd.Series(0, status.index)
    others = [", ".join(f"+{k} {s}" for s, k in row.items() if k) for _, row in status.iterrows()]
    distinct = distinct_metrics(done, metrics)
    columns_of = [f"{kind}/{m}" for m in distinct for kind in KINDS]
    stats = done[["time_s", *columns_of]].astype(float).groupby(done["variant"])
    stats = stats.agg(["mean", "std", "count"]).reindex(ids)
    params = done.groupby("variant")["num_params"].agg(_params)
    columns = [Column(k, numeric=False) for k in keys] or [Column("variant", numeric=False)]
    columns += [Column("n"), Column("params"), Column("time [s]")]
    data = [[format_value(v.values[i]) for v in variants] for i in range(len(keys))]
    data = (data or [["all runs"] * len(variants)]) + [
        [f"{n} ({extra})" if extra else f"{n}" for n, extra in zip(n_done, others, strict=True)],
        [params.get(i) for i in ids],
        [None if pd.isna(t) else f"{t:.3g}" for t in stats[("time_s", "mean")]],
    ]
    blocks = [canonical(v.values[:-1]) for v in variants]
    refs = {
        blocks[i]: i
        for i, v in enumerate(variants)
        if reference is not None and v.values and format_value(v.values[-1]) == reference
    }
    shown: list[str] = []
    for column in columns_of:
        mean, std, count = (stats[(column, s)] for s in ("mean", "std", "count"))
        if not count.any():
            continue
        kind, metric = column.split("/", 1)
        mode = metric_mode(metric, modes)
        cells = [
            Stat(float(m), float(s) if n > 1 else None, int(n), int(of)) if n > 0 else None
            for m, s, n, of in zip(mean, std, count, n_done, strict=True)
        ]
        cells = mark_best(cells, blocks, mode)
        if refs:
            seeds = done.groupby("variant")[column]
            samples = {int(i): g.astype(float).dropna().to_numpy() for i, g in seeds}
            cells = mark_significant(cells, samples, blocks, refs)
        columns.append(Column(f"{label(metric)} ({kind})", mode))
        data.append(cells)
        shown.append(metric)
    shown = list(dict.fromkeys(shown))
    within = f" among rows of equal {', '.join(keys[:-1])}" if len(keys) > 1 else ""
    notes = [
        f"↓ lower is better, ↑ higher is better; bold: the best mean of a column{within} (as "
        "shown; ties all bold)."
    ]
    notes += [
        f"{label(m)} stands for {' = '.join(distinct[m])} (equal in every completed run)."
        for m in shown
        if len(distinct[m]) > 1
    ]
    if unknown := [m for m in shown if metric_mode(m, modes) is None]:
        notes.append(f"No arrow, mode unknown (give --mode NAME=min|max): {', '.join(unknown)}.")
    if refs:
        notes.append(
            f"{SIGNIFICANT[0]}: p < {ALPHA} against {keys[-1]}={reference}{within} in Welch's "
            "two-sided t-test over seeds (unequal variances; scipy.stats.ttest_ind, "
            "equal_var=False), made only where both have n ≥ 2."
        )
    return Table(columns, [list(row) for row in zip(*data, strict=True)], shown, notes)


def _cell(cell: str | Stat | None, latex: bool = False) -> str:
    """A cell's text in Markdown ("|" escaped) or LaTeX (escaped; numbers in math mode, an
    exponent as `\\times 10^{k}`); a mean to 4 and a std to 2 significant digits, trailing zeros
    kept (0.20 is not 0.2); a best mean bold, a significant difference marked †."""
    if not isinstance(cell, Stat):
        text = DASH if cell is None else str(cell)
        return latex_escape(text) if latex else text.replace("|", "\\|")

    def number(x: float, digits: int = 4) -> str:
        text = f"{x:#.{digits}g}"
        text = text[:-1] if text.endswith(".") else text.replace(".e", "e")
        mantissa, _, exponent = text.partition("e")
        return f"${mantissa} \\times 10^{{{int(exponent)}}}$" if latex and exponent else text

    pm, missing = (r"$\pm$", "--") if latex else ("±", DASH)
    std = missing if cell.std is None else number(cell.std, 2)
    n = "" if cell.n == cell.of else f" ($n={cell.n}$)" if latex else f" (n={cell.n})"
    text = f"{number(cell.mean)} {pm} {std}{n}{SIGNIFICANT[latex] if cell.significant else ''}"
    if cell.best:
        return rf"\textbf{{\boldmath {text}}}" if latex else f"**{text}**"
    return text


def render_table(table: Table, latex: bool = False) -> str:
    """`table` as an unpadded GitHub Markdown table, or a booktabs `tabular`."""
    escape = latex_escape if latex else lambda text: text.replace("|", "\\|")
    arrows = {mode: f" {arrow[latex]}" for mode, arrow in ARROWS.items()}
    titles = [escape(c.title) + arrows.get(c.mode, "") for c in table.columns]
    cells = [[_cell(cell, latex) for cell in row] for row in table.rows]
    if latex:
        spec = "".join("r" if c.numeric else "l" for c in table.columns)
        frame = pd.DataFrame(cells, columns=titles)
        return frame.to_latex(index=False, escape=False, column_format=spec)
    rule = "|" + "|".join("---:" if c.numeric else ":---" for c in table.columns) + "|"
    lines = ["| " + " | ".join(row) + " |" for row in [titles, *cells]]
    return "\n".join([lines[0], rule, *lines[1:]])


def render_failures(frame: pd.DataFrame, keys: Sequence[str], root: Path) -> str:
    """The "Failed / incomplete runs" section: every run of `frame` that did not complete."""
    failed = frame[frame["status"] != COMPLETED]
    title = f"## Failed / incomplete runs ({len(failed)})\n\n"
    if failed.empty:
        return title + f"None: all {len(frame)} runs completed."
    cells = failed[["run_dir", "status", *keys, "seed", "error"]].map(format_value)
    paths = map(Path, failed["run_dir"])
    cells["run_dir"] = [f"`{p.relative_to(root) if p.is_relative_to(root) else p}`" for p in paths]
    columns = [Column(t, numeric=False) for t in ["run", "status", *keys, "seed", "error"]]
    return title + render_table(Table(columns, cells.to_numpy().tolist()))


def read_curve(run: Run, metric: str) -> pd.Series:
    """`metric` by step in `metrics.jsonl` (a step logged again after a resume: its last value)."""
    events = [e for e in run.events if _is_number(e.get("step")) and _is_number(e.get(metric))]
    return pd.Series({int(e["step"]): float(e[metric]) for e in events}, dtype=float).sort_index()


def logged_metrics(runs: Sequence[Run]) -> list[str]:
    """The numeric metrics any of `runs` logged in `metrics.jsonl`, sorted."""
    events = [event for run in runs for event in run.events]
    return sorted({k for e in events for k, v in e.items() if k != "step" and _is_number(v)})


def file_stem(*parts: str) -> str:
    """A file-name stem from metric/key names (`valid/mse` -> `valid-mse`)."""
    return "_".join("".join(c if c.isalnum() or c in ".-=" else "-" for c in p) for p in parts)


STATS = ["mean", "std", "min", "max", "count"]


@dataclass(frozen=True)
class Line:
    """One variant in a figure: its panel's title, legend label, `line_style` index, `stat` by x
    (columns `STATS`, over seeds) and the task's baseline for the metric (None if none)."""

    panel: str
    label: str
    style: int
    stat: pd.DataFrame
    baseline: float | None


def _first(values: Iterable[float | None]) -> float | None:
    return next((v for v in values if v is not None), None)


def _parts(keys: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[list[str]]:
    """Each row's `key=value` texts for the keys whose value varies across `rows` (a None
    value left out)."""
    varying = [j for j in range(len(keys)) if len({canonical(r[j]) for r in rows}) > 1]
    return [
        [f"{label(keys[j])} = {format_value(r[j])}" for j in varying if r[j] is not None]
        for r in rows
    ]


def arrange(
    entries: Sequence[tuple[Variant, pd.DataFrame, float | None]], keys: Sequence[str]
) -> tuple[list[Line], str | None]:
    """The `Line`s of (variant, stat, baseline) `entries` and the legend's title: with two or
    more keys and at most `MAX_PANELS` blocks (equal values of all keys but the last), a panel
    per block and a line per value of the last key, styled alike in every panel; otherwise one
    panel, a line per variant. Titles and labels name only the keys that vary."""
    variants = [variant for variant, _, _ in entries]
    split = len(keys) > 1 and len({canonical(v.values[:-1]) for v in variants}) <= MAX_PANELS
    cut = len(keys) - 1 if split else 0
    panels = _parts(keys[:cut], [v.values[:cut] for v in variants])
    values = [v.values[cut:] for v in variants]
    order = sorted({canonical(x): x for x in values}.values(), key=lambda x: [*map(_sort_key, x)])
    single = len(keys) - cut == 1
    labels = [format_value(x[0]) for x in values] if single else _parts(keys[cut:], values)
    lines = [
        Line(", ".join(panel), text if single else ", ".join(text), order.index(x), stat, base)
        for panel, text, x, (_, stat, base) in zip(panels, labels, values, entries, strict=True)
    ]
    return lines, label(keys[-1]) if single else None


def draw(
    lines: Sequence[Line],
    xlabel: str,
    ylabel: str,
    legend_title: str | None = None,
    width: str = "column",
    band: str | None = "std",
    x_ticks: tuple[list[Any], list[str]] | None = None,
    x_log: bool = False,
) -> Figure | None:
    """A figure of `lines` (None if there are none): a panel per distinct `Line.panel`, stacked
    at column width, up to 3 a row at page width; mean lines with a `band` (`BANDS`) or, for
    `band=None`, error bars of ±1 std; the baselines as grey dotted labelled lines; a panel's y
    axis logarithmic when its means are positive and span more than `LOG_SPAN` (a band or bar
    reaching zero or below then stops at the lowest seed); ticks at 1, 2, 2.5 or 5 times a power
    of ten (integers on x), or at `x_ticks` (positions, texts); one legend below the panels."""
    if not lines:
        return None
    titles = list(dict.fromkeys(line.panel for line in lines))
    ncols = 1 if width == "column" else min(len(titles), 3)
    nrows = -(-len(titles) // ncols)
    means = {t: pd.concat([x.stat["mean"] for x in lines if x.panel == t]) for t in titles}
    y_logs = [bool((m > 0).all() and m.max() > LOG_SPAN * m.min()) for m in means.values()]
    fig = figure(width, aspect=0.62 if ncols == 1 else 0.9 / ncols, rows=nrows)
    with styled():
        grid = fig.subplots(nrows, ncols, squeeze=False)
        axes = list(grid.ravel()[: len(titles)])
        for extra in grid.ravel()[len(titles) :]:
            extra.remove()
        for line in lines:
            axes_ = axes[titles.index(line.panel)]
            stat, style = line.stat, line_style(line.style)
            mean, std = stat["mean"], stat["std"].fillna(0.0)
            low, high = (stat["min"], stat["max"]) if band == "minmax" else (mean - std, mean + std)
            if y_logs[titles.index(line.panel)]:
                low = low.where(low > 0, stat["min"])
            if band is None:
                yerr = [mean - low, high - mean]
                style |= {"markevery": None, "capsize": 2, "elinewidth": 0.8}
                axes_.errorbar(stat.index, mean, yerr=yerr, label=line.label, **style)
            else:
                axes_.plot(stat.index, mean, label=line.label, **style)
                axes_.fill_between(stat.index, low, high, color=style["color"], alpha=0.15, lw=0)
        baselines = {(line.panel, line.baseline) for line in lines if line.baseline is not None}
        for panel, value in sorted(baselines):
            axes[titles.index(panel)].axhline(
                value, label=f"baseline {value:.3g}", **BASELINE_STYLE
            )
        for index, (axes_, title, y_log) in enumerate(zip(axes, titles, y_logs, strict=True)):
            axes_.set_title(title)
            if y_log:
                axes_.set_yscale("log")
            else:
                axes_.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=NICE_STEPS))
            if x_log:
                axes_.set_xscale("log")
            if x_ticks is not None:
                axes_.set_xticks(*x_ticks)
                axes_.xaxis.set_minor_locator(NullLocator())
            elif not x_log:
                axes_.xaxis.set_major_locator(MaxNLocator(5, steps=NICE_STEPS, integer=True))
            if index % ncols == 0:
                axes_.set_ylabel(ylabel)
            if index + ncols >= len(titles):
                axes_.set_xlabel(xlabel)
        handles = {
            text: handle
            for axes_ in axes
            for handle, text in zip(*axes_.get_legend_handles_labels(), strict=True)
        }
        handles = dict(sorted(handles.items(), key=lambda item: item[0].startswith("baseline")))
        if handles:
            fig.legend(
                handles.values(),
                handles.keys(),
                loc="outside lower center",
                ncols=min(len(handles), 3),
                title=legend_title,
            )
    return fig


def curve_figure(
    variants: list[Variant], keys: list[str], metric: str, band: str = "std", width: str = "column"
) -> Figure | None:
    """`metric` against step: each variant's mean over its completed seeds with a ±1 std (or
    min–max) band (`draw`); None if no run logged `metric`."""
    entries = []
    for variant in variants:
        done = [r for r in variant.runs if r.completed]
        curves = [c for c in (read_curve(r, metric) for r in done) if not c.empty]
        if curves:
            stat = pd.concat(curves, axis=1).sort_index().agg(STATS, axis=1)
            entries.append((variant, stat, _first(baseline_value(r, metric) for r in done)))
    lines, legend_title = arrange(entries, keys)
    return draw(lines, "step", label(metric), legend_title, width, band)


def versus_figure(
    runs: list[Run], keys: list[str], x_key: str, metric: str, width: str = "column"
) -> Figure | None:
    """`metric` (best, else final) against `x_key`: mean ± std over seeds as error bars, a line
    per combination of the other `keys` (`draw`); a positive `x_key` spanning >= 100x (or a
    learning rate) on a log axis; None if no run with `x_key` has `metric`."""
    # Runs without the key (another task in the same sweep) have no place on this axis.
    done = [r for r in runs if r.completed and r.value(x_key) is not None]
    kind = "best" if any(metric_value(r, metric, "best") is not None for r in done) else "final"
    others = [k for k in keys if k != x_key]
    xs = sorted({canonical(r.value(x_key)): r.value(x_key) for r in done}.values(), key=_sort_key)
    numeric = all(_is_number(v) for v in xs)
    place = {canonical(v): v if numeric else i for i, v in enumerate(xs)}
    entries = []
    for variant in group_runs(done, others):
        points = [
            (place[canonical(r.value(x_key))], metric_value(r, metric, kind)) for r in variant.runs
        ]
        points = pd.DataFrame(points, columns=["x", "y"]).dropna()
        if not points.empty:
            stat = points.groupby("x")["y"].agg(STATS)
            entries.append((variant, stat, _first(baseline_value(r, metric) for r in variant.runs)))
    lines, legend_title = arrange(entries, others)
    x_log = False
    if numeric and xs and all(v > 0 for v in xs):
        span = max(xs) / min(xs)
        x_log = span >= 100 or ("learning_rate" in x_key and span > 1)
    # Lines side by side around each x (1.5% of the axis apart) so their error bars stay apart.
    styles = sorted({line.style for line in lines})
    low, high = (min(place.values()), max(place.values())) if place else (0, 0)
    span = math.log(high / low) if x_log else high - low or 1.0
    for line in lines:
        shift = 0.015 * span * (styles.index(line.style) - (len(styles) - 1) / 2)
        index = line.stat.index
        line.stat.index = index * math.exp(shift) if x_log else index + shift
    ticks = (list(place.values()), [format_value(v) for v in xs])
    ticks = ticks if not numeric or len(xs) <= 12 else None
    ylabel = f"{label(metric)} ({kind})"
    return draw(lines, label(x_key), ylabel, legend_title, width, None, ticks, x_log)


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


def check_options(
    runs: list[Run],
    metrics: Names,
    group_by: Names,
    curves: Names,
    x_key: str | None,
    band: str,
    modes: Mapping[str, str] | None = None,
    width: str = "column",
) -> None:
    """`aggregate`'s options against the runs (`curves`: `curve_metrics`, None without plots):
    ConfigError naming the option and the choices."""
    if band not in BANDS:
        raise ConfigError(f"--band {band!r} is not a band; choose from: {', '.join(BANDS)}")
    if width not in WIDTHS:
        raise ConfigError(f"--width {width!r} is not a width; choose from: {', '.join(WIDTHS)}")
    completed, found = [r for r in runs if r.completed], available_metrics(runs)
    for name, mode in (modes or {}).items():
        if mode not in MODES:
            raise ConfigError(f"--mode {name}={mode}: give NAME=min or NAME=max")
    for option, name in [
        *(("--metrics", m) for m in metrics or []),
        *(("--mode", m) for m in modes or {}),
    ]:
        if completed and name not in found:  # without completed runs, no metric is known
            raise ConfigError(
                f"{option}: no completed run has the metric {name!r}"
                f"{argcheck.did_you_mean(name, found)}; they have: {', '.join(found) or 'none'} "
                f"(in {rundir.RESULTS_FILE})"
            )
    for option, key in [*(("--group-by", k) for k in group_by or []), ("--x-key", x_key)]:
        if key is not None and all(r.value(key) is None for r in runs):
            hint = argcheck.did_you_mean(key, [k for r in runs for k in r.params])
            raise ConfigError(
                f"{option} {key!r} is in no run's config or overrides{hint}; give a group (model, "
                "task, ...) or a dotted config key such as task.length (swept here: "
                f"{', '.join(swept_keys(runs)) or 'none'})"
            )
    xs = {canonical(v): v for r in completed if (v := r.value(x_key or "")) is not None}
    if x_key is not None and len(xs) == 1:
        raise ConfigError(
            f"--x-key {x_key!r} has one value in every completed run ({format_value(*xs.values())})"
            "; a plot against it needs at least 2: give a key with several values (swept here: "
            f"{', '.join(swept_keys(runs)) or 'none'}) or leave --x-key out"
        )
    if completed and curves:
        logged = logged_metrics(completed)
        if missing := [name for name in curves if name not in logged]:
            raise ConfigError(
                f"--curve-metric: no completed run logged {missing[0]!r} in {rundir.METRICS_FILE}"
                f"{argcheck.did_you_mean(missing[0], logged)}; they logged: "
                f"{', '.join(logged) or 'nothing'}"
            )


def check_reference(variants: list[Variant], keys: list[str], reference: str | None) -> None:
    """ConfigError unless `reference` (`--baseline-variant`) is None or a value of the last
    grouping key."""
    values = list(dict.fromkeys(format_value(v.values[-1]) for v in variants if v.values))
    if reference is not None and reference not in values:
        raise ConfigError(
            f"--baseline-variant {reference!r} is no value of the last grouping key "
            f"({keys[-1] if keys else 'none: nothing is grouped'})"
            f"{argcheck.did_you_mean(reference, values)}; give one of: "
            f"{', '.join(values) or 'none'} (or reorder --group-by to end with its key)"
        )


def aggregate(
    roots: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None = None,
    metrics: Names = None,
    group_by: Names = None,
    curve_metrics: Names = None,
    x_key: str | None = None,
    band: str = "std",
    plots: bool = True,
    modes: Mapping[str, str] | None = None,
    baseline_variant: str | None = None,
    width: str = "column",
) -> Summary:
    """Reads the runs under `roots`; writes the tables, CSV and figures to `out` (default
    `<roots[0]>/aggregate`). The options and their defaults are the command line's (`--help`;
    `modes`: `--mode`'s metric -> "min"/"max"). Raises RunNotFoundError or ConfigError
    (`check_options`, `check_reference`) before anything is written."""
    runs = read_runs(roots, events=plots)
    curves = curve_metrics if plots else None
    check_options(runs, metrics, group_by, curves, x_key, band, modes, width)
    swept = swept_keys(runs)
    keys = list(group_by) if group_by else swept
    variants, all_keys = group_runs(runs, keys), list(dict.fromkeys([*swept, *keys]))
    check_reference(variants, keys, baseline_variant)
    out_dir = Path(out) if out is not None else Path(roots[0]) / "aggregate"
    out_dir.mkdir(parents=True, exist_ok=True)
    completed, found = [r for r in runs if r.completed], available_metrics(runs)
    chosen = list(dict.fromkeys(metrics)) if metrics else found
    have = ", ".join(found)
    warned = [
        f"metric {m!r} is in no completed run (have: {have})" for m in chosen if m not in found
    ]
    monitors = monitored(runs)
    frame = runs_frame(runs, all_keys, list(dict.fromkeys([*chosen, *found])))
    modes = {**monitors, **(modes or {})}
    table = build_table(frame, variants, keys, chosen, modes, baseline_variant)

    root = Path(os.path.commonpath([Path(r).resolve() for r in roots]))
    grouping = ", ".join(f"`{k}`" for k in keys) or "nothing (one variant)"
    notes = NOTES.format(" or ".join(f"{m}, {mode}" for m, mode in monitors.items()) or DASH)
    notes = " ".join([notes, *table.notes])
    intro = (
        f"{len(runs)} runs ({len(completed)} completed) in {len(variants)} variants from "
        f"{', '.join(f'`{r}`' for r in roots)}; grouped by {grouping}, seeds within a variant."
    )
    parts = ["# Sweep summary", intro, render_table(table), notes]
    markdown = "\n\n".join([*parts, render_failures(frame, all_keys, root)])
    files = [out_dir / "summary.md", out_dir / "summary.tex", out_dir / "runs.csv"]
    files[0].write_text(markdown + "\n")
    comment = f"{PROG} of {', '.join(map(str, roots))}: {notes}\nNeeds \\usepackage{{booktabs}}."
    comment = "".join(f"% {line}\n" for line in comment.translate(ASCII).splitlines())
    files[1].write_text(comment + render_table(table, latex=True))
    frame.to_csv(files[2], index=False, lineterminator="\r\n")  # CRLF, as the csv module writes

    if plots and completed:
        jobs: list[tuple[str, Callable[[], Figure | None], str]] = []
        if curve_metrics is None:
            has_train = any(not read_curve(r, "train/loss").empty for r in completed)
            curve_metrics = [*monitors, *(["train/loss"] if has_train else [])]
        for name in curve_metrics:
            jobs.append(
                (
                    file_stem("curve", name),
                    lambda name=name: curve_figure(variants, keys, name, band, width),
                    f"no run logged {name!r} in {rundir.METRICS_FILE}: no curve plotted",
                )
            )
        # Default x key: the first grouping key with at least two distinct numeric values.
        for key in [] if x_key else keys:
            values = {r.value(key) for r in completed} - {None}
            if all(_is_number(v) for v in values) and len(values) > 1:
                x_key = key
                break
        if x_key is not None and all(r.value(x_key) is None for r in completed):
            warned.append(f"--x-key {x_key!r} is in no completed run's config")
        elif x_key is not None:
            for name in table.metrics:
                jobs.append(
                    (
                        file_stem("vs", x_key, name),
                        lambda name=name: versus_figure(runs, keys, x_key, name, width),
                        f"no completed run with {x_key} has {name!r}: no plot against it",
                    )
                )
        for stem, make, missing in track(
            jobs, desc="drawing figures", total=len(jobs), unit="figure"
        ):
            fig = make()
            if fig is None:
                warned.append(missing)
            else:
                files += save_figure(fig, out_dir / stem)
    return Summary(runs, keys, variants, chosen, table, markdown, files, warned)


def _names(text: str) -> list[str]:
    """A comma-separated option value as names (the option repeats: argparse "extend")."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _modes(text: str) -> list[tuple[str, str]]:
    """`--mode valid/mse=min,test/f1=max` as (metric, mode) pairs (checked by `check_options`)."""
    pairs = [item.partition("=") for item in _names(text)]
    return [(name.strip(), mode.strip()) for name, _, mode in pairs]


def build_parser() -> argparse.ArgumentParser:
    """The `rnnlab-aggregate` command line; its options are `aggregate`'s arguments."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Aggregate rnnlab sweeps/runs into Markdown and LaTeX tables (mean ± std "
        "over seeds), a CSV of every run and plots. Reads .hydra/*.yaml, results.json and "
        "metrics.jsonl (never TensorBoard events).",
    )
    add = parser.add_argument
    add(
        "dirs",
        nargs="+",
        type=argcheck.directory_text,
        help="sweep or run directories (searched recursively)",
    )
    add("--out", type=argcheck.output_dir, help="output directory (default: <first dir>/aggregate)")
    listed = "comma-separated, repeatable; default:"
    names = {"action": "extend", "type": _names}
    add(
        "--metrics",
        **names,
        help=f"table metrics ({listed} the monitored metrics, every final metric and the test "
        "metrics)",
    )
    add("--group-by", **names, help=f"keys that make a variant ({listed} the swept keys)")
    add(
        "--curve-metric",
        **names,
        dest="curve_metrics",
        metavar="CURVE_METRIC",
        help=f"metrics plotted against step ({listed} the monitored metrics and train/loss)",
    )
    add(
        "--x-key",
        help="hyperparameter of the metric-vs-hyperparameter plots, with at least 2 values "
        "(default: the first swept key with several numeric values)",
    )
    add("--band", choices=BANDS, default="std", help="learning-curve band")
    add(
        "--mode",
        action="extend",
        type=_modes,
        dest="modes",
        metavar="METRIC=min|max",
        help="whether lower (min) or higher (max) is better, for a metric whose name does not say "
        f"({listed} the monitored metric's saved mode, else from the name: loss, mse, ... min; "
        "accuracy, f1, ... max)",
    )
    add(
        "--baseline-variant",
        metavar="VALUE",
        help="mark († p < 0.05, Welch's t-test over seeds) the variants that differ from the one "
        "with this value of the last --group-by key, among rows of equal other keys",
    )
    add("--width", choices=WIDTHS, default="column", help="figure width in a two-column paper")
    add("--no-plots", action="store_false", dest="plots", help="tables and CSV only")
    add("--debug", action="store_true", help="show the traceback of an error in your input")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `rnnlab-aggregate` and `scripts/aggregate.py`."""
    args = build_parser().parse_args(argv)
    return report_user_errors(PROG, _main, args, debug=args.debug)


def _main(args: argparse.Namespace) -> int:
    with console_logging(PROG):
        return _aggregate_main(args)


def _aggregate_main(args: argparse.Namespace) -> int:
    if args.out is None:
        default = Path(args.dirs[0]) / "aggregate"
        argcheck.check_output_dir(default, "the default output directory", "give --out DIR")
    options = {k: v for k, v in vars(args).items() if k not in ("dirs", "debug")}
    options["modes"] = dict(args.modes or [])
    summary = aggregate(args.dirs, **options)
    print(summary.markdown)
    for warning in summary.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    print(f"{PROG}: wrote {len(summary.files)} files to {summary.files[0].parent}", file=sys.stderr)
    return 0
