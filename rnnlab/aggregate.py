"""Sweeps into paper artefacts: Markdown and LaTeX tables, a CSV of every run, and plots.

    rnnlab-aggregate multirun/2026-11-22_05-21-41             # -> multirun/.../aggregate/
    rnnlab-aggregate sweep_a sweep_b --out paper/ --metrics valid/mse,test/accuracy
    rnnlab-aggregate sweep --group-by model --x-key task.length --curve-metric valid/loss

Runs are read through `rnnlab.rundir` (a damaged file is skipped with a warning, the run still
reported; never TensorBoard event files). Runs with equal values of the swept keys (or of
`--group-by`) form a variant; its runs are its seeds. The runs are one DataFrame (`runs.csv`);
the table is its `groupby(variant).agg` over completed runs, rendered as Markdown and `to_latex`
(`NOTES` says how to read a cell). Failed and incomplete runs count in no statistic but are
listed, never dropped silently. Mistakes in the arguments are one line on stderr and exit status
2 before anything is written (`--debug` or `RNNLAB_DEBUG=1` adds the traceback). README
"Aggregating a sweep" describes the outputs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.ticker import MaxNLocator

from rnnlab import argcheck, rundir
from rnnlab.errors import ConfigError, report_user_errors
from rnnlab.figures import figure, save_figure
from rnnlab.rundir import COMPLETED, GROUPS, INCOMPLETE, Run, load_runs
from rnnlab.writers import NOT_HPARAMS

PROG = "rnnlab-aggregate"
WALL_KEYS = ("wall_s_total", "wall_s")  # provenance.json: wall-clock seconds of all attempts
PERF_TIME_KEYS = ("compile_s", "train_s", "eval_s")
KINDS = ("final", "best")
BANDS = ("std", "minmax")  # around a mean learning curve: ±1 sample std, or min–max over seeds
DASH = "–"
ARROWS = {"min": ("↓", r"$\downarrow$"), "max": ("↑", r"$\uparrow$")}  # Markdown, LaTeX
# fmt: off
LATEX_SPECIAL = str.maketrans({
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", DASH: "--",
    "±": r"$\pm$",
})
# fmt: on
NOTES = (
    "Cells: mean ± sample std (ddof=1) over seeds, n = completed runs per variant (± – where "
    "n = 1). final: at the last evaluation; best: at the checkpoint selected by {}, for that "
    "metric its best value. time: wall-clock seconds (results.json perf.wall_s or "
    "provenance.json; else compile + train + eval seconds)."
)
"""How to read the table's cells (`{}`: the monitored metric and its mode)."""
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


def monitored(runs: Sequence[Run]) -> tuple[str | None, str | None]:
    """The monitored metric and its mode ("min"/"max") of the first completed run."""
    for run in runs:
        best = run.results.get("best") or {}
        if run.completed and best.get("metric"):
            return best["metric"], best.get("mode")
    return None, None


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
    """The monitored metric, every `final` metric, then the other best-checkpoint metrics."""
    names = dict.fromkeys([m] if (m := monitored(runs)[0]) else [])
    for section in ("final", "best_checkpoint_metrics"):
        for run in (r for r in runs if r.completed):
            names.update(dict.fromkeys(sorted(run.results.get(section) or {})))
    return list(names)


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
    """A metric's cell: mean and sample std (None for n = 1) of `n` of the variant's `of` runs."""

    mean: float
    std: float | None
    n: int
    of: int


@dataclass(frozen=True)
class Column:
    """A table column: its title, the metric's mode (for an arrow) and its alignment."""

    title: str
    mode: str | None = None
    numeric: bool = True


@dataclass(frozen=True)
class Table:
    """The summary: one row per variant, a cell (str, `Stat` or None) per column."""

    columns: list[Column]
    rows: list[list[str | Stat | None]]


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


def build_table(
    frame: pd.DataFrame, variants: list[Variant], keys: list[str], metrics: list[str], modes: dict
) -> Table:
    """One row per variant (`frame`: `runs_frame`), a column per metric and kind; `modes`: metric
    -> "min"/"max". Metric columns empty in every row are left out."""
    variant_of = {str(r.path): i for i, v in enumerate(variants) for r in v.runs}
    frame = frame.assign(variant=frame["run_dir"].map(variant_of))
    done, ids = frame[frame["status"] == COMPLETED], range(len(variants))
    status = pd.crosstab(frame["variant"], frame["status"])
    n_done = status.pop(COMPLETED) if COMPLETED in status else pd.Series(0, status.index)
    others = [", ".join(f"+{k} {s}" for s, k in row.items() if k) for _, row in status.iterrows()]
    metrics = [f"{kind}/{m}" for m in metrics for kind in KINDS]
    stats = done[["time_s", *metrics]].astype(float).groupby(done["variant"])
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
    for column in metrics:
        mean, std, count = (stats[(column, s)] for s in ("mean", "std", "count"))
        if count.any():
            kind, metric = column.split("/", 1)
            columns.append(Column(f"{metric} ({kind})", modes.get(metric)))
            data.append(
                [
                    Stat(float(m), float(s) if n > 1 else None, int(n), int(of)) if n > 0 else None
                    for m, s, n, of in zip(mean, std, count, n_done, strict=True)
                ]
            )
    return Table(columns, [list(row) for row in zip(*data, strict=True)])


def _cell(cell: str | Stat | None, latex: bool = False) -> str:
    """A cell's text in Markdown ("|" escaped) or LaTeX (escaped; numbers in math mode, an
    exponent as `\\times 10^{k}`); a mean to 4 and a std to 2 significant digits, trailing zeros
    kept (0.20 is not 0.2)."""
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
    return f"{number(cell.mean)} {pm} {std}{n}"


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


def variant_label(keys: Sequence[str], values: Sequence[Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in zip(keys, values, strict=True)) or "all"


def plot_curves(
    variants: list[Variant], keys: list[str], metric: str, out_dir: Path, band: str
) -> list[Path]:
    """`metric` against step, a mean line per variant with a band over its seeds; the files
    written to `out_dir` (none if no run logged `metric`)."""
    axes = figure(figsize=(5.5, 3.6), layout="constrained").add_subplot()
    for variant in variants:
        curves = [read_curve(r, metric) for r in variant.runs if r.completed]
        if not (curves := [c for c in curves if not c.empty]):
            continue
        stat = pd.concat(curves, axis=1).sort_index().agg(["mean", "std", "min", "max"], axis=1)
        mean, spread = stat["mean"], stat["std"].fillna(0.0)
        low, high = (
            (stat["min"], stat["max"]) if band == "minmax" else (mean - spread, mean + spread)
        )
        label = f"{variant_label(keys, variant.values)} (n={len(curves)})"
        (line,) = axes.plot(stat.index, mean, marker="o" if len(stat) <= 30 else None, label=label)
        axes.fill_between(stat.index, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    if not axes.lines:
        return []
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    spread = "±1 std" if band == "std" else "min–max"
    axes.set(xlabel="step", ylabel=metric, title=f"{metric}: mean over seeds, band {spread}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return save_figure(axes.figure, out_dir / file_stem("curve", metric))


def plot_versus(
    runs: list[Run], keys: list[str], x_key: str, metric: str, out_dir: Path
) -> list[Path]:
    """`metric` (best, else final) against `x_key`: mean ± std over seeds, a line per combination
    of the other `keys`; a positive `x_key` spanning >= 100x (or a learning rate) on a log axis."""
    # Runs without the key (another task in the same sweep) have no place on this axis.
    done = [r for r in runs if r.completed and r.value(x_key) is not None]
    kind = "best" if any(metric_value(r, metric, "best") is not None for r in done) else "final"
    others = [k for k in keys if k != x_key]
    xs = sorted({canonical(r.value(x_key)): r.value(x_key) for r in done}.values(), key=_sort_key)
    numeric = all(_is_number(v) for v in xs)
    place = {canonical(v): v if numeric else i for i, v in enumerate(xs)}
    axes = figure(figsize=(5.5, 3.6), layout="constrained").add_subplot()
    for line in group_runs(done, others):
        points = [
            (place[canonical(r.value(x_key))], metric_value(r, metric, kind)) for r in line.runs
        ]
        points = pd.DataFrame(points, columns=["x", "y"]).dropna()
        stat = points.groupby("x")["y"].agg(["mean", "std"])
        if not stat.empty:
            label = variant_label(others, line.values) if others else None
            yerr = stat["std"].fillna(0.0)
            axes.errorbar(stat.index, stat["mean"], yerr=yerr, marker="o", capsize=3, label=label)
    if not axes.lines:
        return []
    if numeric and all(v > 0 for v in xs):
        span = max(xs) / min(xs)
        if span >= 100 or ("learning_rate" in x_key and span > 1):
            axes.set_xscale("log")
    if not numeric or len(xs) <= 12:
        axes.set_xticks(list(place.values()), [format_value(v) for v in xs])
        axes.minorticks_off()
    axes.set(xlabel=x_key, ylabel=f"{metric} ({kind})", title=f"{metric} ({kind}): mean ± std")
    axes.grid(alpha=0.3)
    if others:
        axes.legend(fontsize="small")
    return save_figure(axes.figure, out_dir / file_stem("vs", x_key, metric))


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
    runs: list[Run], metrics: Names, group_by: Names, curves: Names, x_key: str | None, band: str
) -> None:
    """`aggregate`'s options against the runs (`curves`: `curve_metrics`, None without plots):
    ConfigError naming the option and the choices."""
    if band not in BANDS:
        raise ConfigError(f"--band {band!r} is not a band; choose from: {', '.join(BANDS)}")
    completed, found = [r for r in runs if r.completed], available_metrics(runs)
    for name in metrics or []:
        if completed and name not in found:  # without completed runs, no metric is known
            raise ConfigError(
                f"--metrics: no completed run has the metric {name!r}"
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
    if completed and curves:
        logged = logged_metrics(completed)
        if missing := [name for name in curves if name not in logged]:
            raise ConfigError(
                f"--curve-metric: no completed run logged {missing[0]!r} in {rundir.METRICS_FILE}"
                f"{argcheck.did_you_mean(missing[0], logged)}; they logged: "
                f"{', '.join(logged) or 'nothing'}"
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
) -> Summary:
    """Reads the runs under `roots`; writes the tables, CSV and plots to `out` (default
    `<roots[0]>/aggregate`). The options and their defaults are the command line's (`--help`).
    Raises RunNotFoundError or ConfigError (`check_options`) before anything is written."""
    runs = load_runs(roots)
    check_options(runs, metrics, group_by, curve_metrics if plots else None, x_key, band)
    out_dir = Path(out) if out is not None else Path(roots[0]) / "aggregate"
    out_dir.mkdir(parents=True, exist_ok=True)
    swept = swept_keys(runs)
    keys = list(group_by) if group_by else swept
    completed, found = [r for r in runs if r.completed], available_metrics(runs)
    chosen = list(dict.fromkeys(metrics)) if metrics else found
    have = ", ".join(found)
    warnings = [
        f"metric {m!r} is in no completed run (have: {have})" for m in chosen if m not in found
    ]
    monitor, mode = monitored(runs)
    variants, all_keys = group_runs(runs, keys), list(dict.fromkeys([*swept, *keys]))
    frame = runs_frame(runs, all_keys, list(dict.fromkeys([*chosen, *found])))
    table = build_table(frame, variants, keys, chosen, {monitor: mode})

    root = Path(os.path.commonpath([Path(r).resolve() for r in roots]))
    grouping = ", ".join(f"`{k}`" for k in keys) or "nothing (one variant)"
    notes = NOTES.format(f"{monitor} ({mode})" if monitor else "the monitored metric")
    intro = (
        f"{len(runs)} runs ({len(completed)} completed) in {len(variants)} variants from "
        f"{', '.join(f'`{r}`' for r in roots)}; grouped by {grouping}, seeds within a variant."
    )
    parts = ["# Sweep summary", intro, render_table(table), notes]
    markdown = "\n\n".join([*parts, render_failures(frame, all_keys, root)])
    files = [out_dir / "summary.md", out_dir / "summary.tex", out_dir / "runs.csv"]
    files[0].write_text(markdown + "\n")
    comment = f"{PROG} of {', '.join(map(str, roots))}: {notes}\nNeeds \\usepackage{{booktabs}}."
    comment = comment.replace("±", "+/-").replace(DASH, "--")  # ASCII
    comment = "".join(f"% {line}\n" for line in comment.splitlines())
    files[1].write_text(comment + render_table(table, latex=True))
    frame.to_csv(files[2], index=False, lineterminator="\r\n")  # CRLF, as the csv module writes

    if plots and completed:
        if curve_metrics is None:
            has_train = any(not read_curve(r, "train/loss").empty for r in completed)
            curve_metrics = [m for m in (monitor, "train/loss" if has_train else None) if m]
        for name in curve_metrics:
            written = plot_curves(variants, keys, name, out_dir, band)
            if not written:
                warnings.append(
                    f"no run logged {name!r} in {rundir.METRICS_FILE}: no curve plotted"
                )
            files += written
        # Default x key: the first grouping key with at least two distinct numeric values.
        for key in [] if x_key else keys:
            values = [r.value(key) for r in completed]
            if all(_is_number(v) for v in values) and len(set(values)) > 1:
                x_key = key
                break
        if x_key is not None and all(r.value(x_key) is None for r in completed):
            warnings.append(f"--x-key {x_key!r} is in no completed run's config")
        elif x_key is not None:
            for name in chosen:
                files += plot_versus(runs, keys, x_key, name, out_dir)
    return Summary(runs, keys, variants, chosen, table, markdown, files, warnings)


def _names(text: str) -> list[str]:
    """A comma-separated option value as names (the option repeats: argparse "extend")."""
    return [part.strip() for part in text.split(",") if part.strip()]


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
        help=f"table metrics ({listed} the monitored metric, every final metric and the test "
        "metrics)",
    )
    add("--group-by", **names, help=f"keys that make a variant ({listed} the swept keys)")
    add(
        "--curve-metric",
        **names,
        dest="curve_metrics",
        metavar="CURVE_METRIC",
        help=f"metrics plotted against step ({listed} the monitored metric and train/loss)",
    )
    add(
        "--x-key",
        help="hyperparameter of the metric-vs-hyperparameter plots (default: the first "
        "swept key with several numeric values)",
    )
    add("--band", choices=BANDS, default="std", help="learning-curve band")
    add("--no-plots", action="store_false", dest="plots", help="tables and CSV only")
    add("--debug", action="store_true", help="show the traceback of an error in your input")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `rnnlab-aggregate` and `scripts/aggregate.py`."""
    args = build_parser().parse_args(argv)
    return report_user_errors(PROG, _main, args, debug=args.debug)


def _main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: warning: %(message)s")
    if args.out is None:
        default = Path(args.dirs[0]) / "aggregate"
        argcheck.check_output_dir(default, "the default output directory", "give --out DIR")
    options = {k: v for k, v in vars(args).items() if k not in ("dirs", "debug")}
    summary = aggregate(args.dirs, **options)
    print(summary.markdown)
    for warning in summary.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    print(f"{PROG}: wrote {len(summary.files)} files to {summary.files[0].parent}", file=sys.stderr)
    return 0
