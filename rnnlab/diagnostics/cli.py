"""`rnnlab-diagnose` (also `experiments/diagnose.py`): diagnostics of runs from their checkpoints.

    rnnlab-diagnose RUN_DIR [RUN_DIR ...] [--out DIR] [--checkpoint best|latest|STEP] [--init]
                    [--what grad_flow,gates,attention] [--example 0] [--batch-size 32]
                    [--logdir DIR | --no-tensorboard]
    rnnlab-diagnose --cells rnn_tanh,lstm,gru --length 100 [--hidden 64] [--out DIR]

Per run it writes into `<run_dir>/diagnostics/` (or `--out`): PNG + PDF figures in the paper
style of `rnnlab.figures`, the numbers as `diagnostics[_init].json` (gradient norms per step and
their first/last ratios, mean gate activations, attention shapes) and the full arrays as `.npz`.
TensorBoard gets the same figures as images and distributions as histograms (gate activations
per layer and gate; log10 gradient norms over t per series), at the run's checkpoint step (0 with
`--init`), in `<run_dir>/diagnostics/` (or `--logdir`), so `tensorboard --logdir <sweep>` lists
them as run `<run>/diagnostics` next to the training curves. Never scalars: a diagnostic is a
function of t at one checkpoint, not a series over training steps. Running it again replaces
them: the event files a previous run of the same kind (trained or `--init`) wrote there are
deleted first, so every tag holds one image or histogram.

With several run directories, grad-flow also draws them on one comparison plot (in `--out`, else
`<common parent>/diagnostics/`). `--cells` compares freshly initialised cells
(`conf/cell/<name>.yaml`) on the adding problem without any run; it writes
`grad_flow_cells.{png,pdf,json}` to `--out`, by default `runs/diagnostics/cells/` under the
current directory (next to `rnnlab-train`'s `runs/`).

The console gets what is being done as it happens (restoring, compiling, each figure; progress
over runs and layers through `rnnlab.progress.track`) on stderr, and a short readable summary per
run on stdout.

An argparse command (like `rnnlab-sample`): sweep run directories are named by their overrides
(`model=lstm,seed=0`), which Hydra's override grammar would make the user quote. Every argument is
checked before anything is written: a mistake (a directory that is no run, a run without
checkpoints, a step it did not keep, an unknown cell, a non-positive size, an unwritable output
folder) is one line on stderr and exit status 2 (`--debug` or `RNNLAB_DEBUG=1`: the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from rnnlab import argcheck, cli
from rnnlab.checkpoint import CHECKPOINT_HELP
from rnnlab.diagnostics import gradflow, plots
from rnnlab.diagnostics.attention_maps import attention_weights, lengths_of
from rnnlab.diagnostics.loading import LoadedRun, check_checkpoint, first_batch
from rnnlab.diagnostics.names import (
    attention_label,
    gate_label,
    layer_label,
    ordered_gates,
    series_label,
    slug,
)
from rnnlab.errors import ConfigError, UserError, report_user_errors
from rnnlab.progress import console_logging, format_duration, track

log = logging.getLogger(__name__)

PROG = "rnnlab-diagnose"

WHAT = ("grad_flow", "gates", "attention")
OUT_SUBDIR = "diagnostics"
CELLS_OUT = Path("runs") / "diagnostics" / "cells"
"""`--cells` output folder without `--out`, relative to the current directory."""
EVENTS_PREFIX = "events.out.tfevents."
EVENTS_SUFFIX = ".rnnlab-diagnostics-{kind}"
"""The end of the event files of one kind (`trained`, `init`) of diagnostics: what a re-run
deletes, and nothing else (never the training's own event files in the same folder)."""


def events_files(logdir: Path, kind: str) -> list[Path]:
    """The TensorBoard event files of diagnostics of `kind` in `logdir`."""
    suffix = EVENTS_SUFFIX.format(kind=kind)
    return sorted(p for p in logdir.glob(f"{EVENTS_PREFIX}*") if p.name.endswith(suffix))


class Sink:
    """Writes figures (PNG + PDF) into a folder and, optionally, to TensorBoard: each figure as an
    image (the saved PNG, so TensorBoard shows the very pixels of the file) and distributions as
    histograms, all at one step (the checkpoint's). Opening it deletes the event files of the
    same `kind` that an earlier run left in `logdir`: re-running replaces, never duplicates.

    Tags are `<section>/<kind>/<name>` (`grad_flow/trained/...`, `gates/init/layer_1/...`), the
    same for every run, so TensorBoard puts the runs' diagnostics side by side.
    """

    def __init__(self, out_dir: Path, logdir: Path | None, kind: str, step: int):
        self.out_dir = out_dir
        self.kind = kind
        self.step = step
        self.files: list[Path] = []
        self.images: list[str] = []
        self.writer = None
        self.logdir = logdir
        if logdir is not None:
            from tensorboardX import SummaryWriter

            logdir.mkdir(parents=True, exist_ok=True)
            for old in events_files(logdir, kind):
                old.unlink()
            self.writer = SummaryWriter(
                logdir=str(logdir), filename_suffix=EVENTS_SUFFIX.format(kind=kind)
            )

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def tag(self, section: str, name: str) -> str:
        return f"{section}/{self.kind}/{name}"

    def figure(self, fig: Figure, stem: str, section: str, name: str) -> None:
        """Saves `fig` as `<out_dir>/<stem>.png|.pdf` and logs the PNG under `section`/`name`."""
        log.info("  figure %s", self.out_dir / f"{stem}.png")
        paths = plots.save_figure(fig, self.out_dir / stem)
        self.files += paths
        if self.writer is not None:
            from matplotlib.image import imread

            pixels = imread(paths[0])[..., :3]
            pixels = np.round(pixels * 255).astype(np.uint8)
            tag = self.tag(section, name)
            self.writer.add_image(tag, pixels, self.step, dataformats="HWC")
            self.images.append(tag)

    def histogram(self, section: str, name: str, values: np.ndarray) -> None:
        """A distribution (any shape, flattened; non-finite values dropped) at the sink's step."""
        values = np.asarray(values, dtype=float).ravel()
        values = values[np.isfinite(values)]
        if self.writer is not None and values.size:
            self.writer.add_histogram(self.tag(section, name), values, self.step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _example(array: np.ndarray, example: int, length: int | None) -> np.ndarray:
    """One example's `[t, units]` trace; a leaf with more axes per step (mLSTM's per-head
    matrix memory `[t, heads, dk, dk]`) is flattened to units."""
    values = np.asarray(array)[example]
    values = values.reshape(values.shape[0], -1) if values.ndim > 2 else values
    return values if length is None else values[:length]


def _valid_steps(trace: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """`[b, t, ...]` values at the steps each example really has (all steps without lengths)."""
    values = np.asarray(trace)
    if lengths is None:
        return values.ravel()
    mask = np.arange(values.shape[1])[None, :] < np.asarray(lengths)[:, None]
    return values[mask].ravel()


class _Timer:
    """Logs `<what> ...` on entry and `<what>: <duration>` on exit."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self) -> _Timer:
        log.info("%s ...", self.what)
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            took = format_duration(time.perf_counter() - self.started)
            log.info("%s: done in %s", self.what, took)


def diagnose(
    run: LoadedRun,
    out_dir: Path,
    what: Sequence[str] = WHAT,
    example: int = 0,
    batch_size: int = 32,
    logdir: Path | None = None,
    label: str = "",
) -> dict[str, Any]:
    """All requested diagnostics of one loaded run on its first validation batch.

    Args:
        run: from `rnnlab.cli.restore_run_dir`.
        out_dir: where the figures, JSON and arrays go.
        what: any of `WHAT`.
        example: the example of the batch drawn in the per-example figures.
        batch_size: examples the gradient norms are averaged over.
        logdir: TensorBoard directory (its earlier diagnostics events of the same kind are
            replaced), or None for none.
        label: a name for titles.

    Returns:
        The JSON written as `diagnostics[_init].json`.
    """
    init = run.step is None
    kind = "init" if init else "trained"
    suffix = "_init" if init else ""
    batch = first_batch(run.task, batch_size=max(batch_size, example + 1))
    examples = int(np.shape(batch["inputs"])[0])
    if not 0 <= example < examples:
        raise ConfigError(
            f"--example {example}: the first evaluation batch of {label or 'the run'} has "
            f"{examples} examples; choose 0 to {examples - 1}"
        )
    lengths = lengths_of(batch)
    length = None if lengths is None else int(lengths[example])
    when = "at initialisation" if init else f"step {run.step}"
    title = f"{label}, {when}" if label else when
    result: dict[str, Any] = {
        "label": label,
        "checkpoint_step": run.step,
        "init": init,
        "model": type(run.model).__name__,
        "cell": type(run.model.cell).__name__,
        "batch_size": examples,
        "example": example,
    }
    arrays: dict[str, np.ndarray] = {}
    with Sink(out_dir, logdir, kind, 0 if init else run.step) as sink:
        if "grad_flow" in what:
            with _Timer(f"gradient flow over {examples} examples (compiling, then running)"):
                series = gradflow.model_grad_flow(run.task, run.model, run.params, batch)
            result["grad_flow"] = {k: [float(x) for x in v] for k, v in series.items()}
            result["grad_flow_labels"] = {k: series_label(k, plain=True) for k in series}
            result["grad_flow_summary"] = gradflow.summarize(series)
            arrays.update({f"grad_flow/{k}": v for k, v in series.items()})
            fig = plots.plot_grad_flow(series, f"Gradient flow through time ({title})")
            sink.figure(fig, f"grad_flow{suffix}", "grad_flow", "figure")
            for name, values in series.items():
                positive = np.asarray(values)[np.asarray(values) > 0]
                tag = f"log10_norm/{slug(series_label(name, plain=True))}"
                sink.histogram("grad_flow", tag, np.log10(positive))
        if "gates" in what:
            with _Timer("gate activations of every layer (compiling, then running)"):
                traces = gradflow.model_gate_traces(run.task, run.model, run.params, batch)
            result["gates"] = {}
            for layer, trace in track(
                traces.items(), total=len(traces), desc="gate figures", unit="layer"
            ):
                gates = ordered_gates(k for k in trace if k not in ("c", "h", "y"))
                order = gates + [k for k in trace if k not in gates]
                one = {k: _example(trace[k], example, length) for k in order}
                result["gates"][layer] = {k: float(np.mean(one[k])) for k in gates}
                arrays.update({f"gates/{layer}/{k}": v for k, v in one.items()})
                layer_slug = slug(layer_label(layer))
                what_of = "Gates" if gates else "Hidden state"
                fig = plots.plot_gates(
                    one, f"{what_of} of {layer_label(layer)} ({title}, example {example})"
                )
                sink.figure(fig, f"gates_{layer_slug}{suffix}", "gates", layer_slug)
                for name in [k for k in order if k != "y"]:  # y: h (the projection's)
                    section = "gates" if name in gates else "states"
                    tag = f"{layer_slug}/{slug(gate_label(name, gates, plain=True))}"
                    sink.histogram(section, tag, _valid_steps(trace[name], lengths))
        if "attention" in what:
            with _Timer("attention weights"):
                maps = attention_weights(run.task, run.model, run.params, batch)
            result["attention"] = {k: list(v.shape) for k, v in maps.items()}
            result["attention_peak"] = {}
            inputs = np.asarray(batch["inputs"])
            features = inputs[example] if inputs.ndim == 3 and inputs.shape[-1] <= 8 else None
            if features is not None and length is not None:
                features = features[:length]
            for name, weights in track(
                maps.items(), total=len(maps), desc="attention figures", unit="map"
            ):
                one = np.asarray(weights)[example]
                if length is not None and one.ndim == 1:
                    one = one[:length]
                arrays[f"attention/{name}"] = one
                if one.ndim == 1:
                    peak = int(np.argmax(one))
                    result["attention_peak"][name] = {"step": peak, "weight": float(one[peak])}
                what_name = attention_label(name)
                fig = plots.plot_attention(
                    one,
                    f"{what_name[0].upper()}{what_name[1:]} weights\n{title}, example {example}",
                    features,
                )
                stem = slug(what_name)
                stem = stem if "attention" in stem else f"attention_{stem}"
                sink.figure(fig, f"{stem}{suffix}", "attention", slug(what_name))
            if not maps:
                log.info("%s: the model has no attention weights to draw", label or out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out_dir / f"diagnostics{suffix}.npz", **arrays)
        result["files"] = [str(p) for p in sink.files]
        result["tensorboard"] = None if logdir is None else str(logdir)
        result["tensorboard_images"] = sink.images
        (out_dir / f"diagnostics{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.3g}"


def ratio_lines(summary: Mapping[str, Mapping[str, Any]], steps: int) -> list[str]:
    """`gradflow.summarize` as aligned lines, `layer 1, h_t   0.444`, saying which steps are
    compared where they are not t=0 and t=T-1, and why a series has no ratio."""
    labels = {name: series_label(name, plain=True) for name in summary}
    width = max(len(label) for label in labels.values())
    lines = []
    for name, one in summary.items():
        text = f"{labels[name]:<{width}}  {_number(one['ratio_first_last'])}"
        first, last = one["first_step"], one["last_step"]
        backward = first != 0
        usual_last = 0 if backward else steps - 1
        notes = []
        if last is None:
            notes.append("the gradient is 0 at every step")
        elif backward:
            notes.append(f"backward direction: t={first} relative to t={last}")
        elif last != usual_last:
            notes.append(f"relative to t={last}")
        if last is not None and last != usual_last:
            leaf = name.split("/")[-1]
            if leaf == "c":
                notes.append(f"c_{usual_last} reaches the loss through no further step")
            else:
                notes.append(f"the gradient is 0 at t={usual_last}")
        if notes:
            text += f"  ({': '.join(notes)})"
        lines.append(text)
    return lines


def summary_text(result: Mapping[str, Any], head: str) -> str:
    """A run's diagnostics for the console: gradient ratios, mean gates, attention, files."""
    lines = [head]
    if "grad_flow_summary" in result:
        steps = len(next(iter(result["grad_flow"].values())))
        lines.append(
            f"  gradient norm at t=0 relative to t={steps - 1} "
            "(about 1: reaches back; much less than 1: vanishes):"
        )
        lines += [f"    {line}" for line in ratio_lines(result["grad_flow_summary"], steps)]
    if result.get("gates"):
        lines.append(f"  mean gate activation, example {result['example']}:")
        for layer, gates in result["gates"].items():
            names = list(gates)
            values = ", ".join(
                f"{gate_label(g, names, plain=True)} {v:.2f}" for g, v in gates.items()
            )
            lines.append(f"    {layer_label(layer)}: {values or 'no gates (h_t drawn)'}")
    for name, peak in result.get("attention_peak", {}).items():
        lines.append(
            f"  {attention_label(name)}, example {result['example']}: largest weight "
            f"{peak['weight']:.2f} at t={peak['step']}"
        )
    figures = sorted({Path(p).stem for p in result["files"]})
    if figures:
        folder = Path(result["files"][0]).parent
        count = f"{len(figures)} figure{'s' if len(figures) > 1 else ''}"
        lines.append(f"  {count} (PNG + PDF) in {folder}: {', '.join(figures)}")
    if result.get("tensorboard"):
        lines.append(
            f"  TensorBoard (images, histograms at step {result['checkpoint_step'] or 0}): "
            f"{result['tensorboard']}"
        )
    return "\n".join(lines)


def run_labels(run_dirs: Sequence[Path], model_names: Sequence[str]) -> list[str]:
    """Short legend names: the model config's name (`lstm`), plus, where several runs share it,
    the `key=value` items of their directory names (a sweep job's overrides) that differ."""
    items = [set(Path(d).absolute().name.split(",")) for d in run_dirs]
    labels = []
    for index, name in enumerate(model_names):
        twins = [i for i, other in enumerate(model_names) if other == name]
        if len(twins) == 1:
            labels.append(name)
            continue
        shared = set.intersection(*(items[i] for i in twins))
        extra = sorted(i for i in items[index] - shared if "=" in i)
        labels.append(",".join([name, *extra]) if extra else f"{name}#{twins.index(index)}")
    return labels


def compare_cells(
    names: Sequence[str], length: int, hidden: int, out_dir: Path, seed: int = 0
) -> dict[str, Any]:
    """Freshly initialised cells (`conf/cell/<name>.yaml`, `hidden` units) on the adding problem
    of `length` steps: one comparison plot and JSON (`grad_flow_cells.*`) in `out_dir`."""
    import jax

    runs = {}
    for name in track(names, total=len(names), desc="cells", unit="cell"):
        with _Timer(f"{name}: gradient flow on the adding problem (compiling, then running)"):
            cell = cli.build_cell(name, hidden)
            runs[name] = gradflow.adding_grad_flow(cell, jax.random.PRNGKey(seed), length)
    fig = plots.plot_grad_flow_comparison(
        runs, title=f"Adding problem, $T = {length}$: fresh cells ({hidden} units, seed {seed})"
    )
    log.info("  figure %s", out_dir / "grad_flow_cells.png")
    files = plots.save_figure(fig, out_dir / "grad_flow_cells")
    result = {
        "length": length,
        "hidden": hidden,
        "seed": seed,
        "grad_flow": {k: {n: [float(x) for x in v] for n, v in s.items()} for k, s in runs.items()},
        "grad_flow_summary": {k: gradflow.summarize(s) for k, s in runs.items()},
        "files": [str(p) for p in files],
    }
    (out_dir / "grad_flow_cells.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


_parse_what = argcheck.name_list(WHAT, "diagnostic")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Gradient flow through time, gate activations and attention maps of runs.",
    )
    parser.add_argument(
        "run_dirs", nargs="*", type=argcheck.directory, help="run directories of rnnlab-train"
    )
    parser.add_argument(
        "--out",
        type=argcheck.output_dir,
        help="output folder (default: <run_dir>/diagnostics; with several runs, one subfolder "
        "per run and the comparison plot here, else in <common parent>/diagnostics; with "
        f"--cells: {CELLS_OUT}/ under the current directory)",
    )
    parser.add_argument(
        "--checkpoint", type=argcheck.checkpoint, default="best", help=CHECKPOINT_HELP
    )
    parser.add_argument("--init", action="store_true", help="the run's initial parameters")
    parser.add_argument("--what", type=_parse_what, default=list(WHAT), help=",".join(WHAT))
    parser.add_argument(
        "--example", type=argcheck.int_at_least(0), default=0, help="example drawn in the figures"
    )
    parser.add_argument(
        "--batch-size", type=argcheck.int_at_least(1), default=32, help="examples for grad norms"
    )
    parser.add_argument(
        "--logdir",
        type=argcheck.output_dir,
        help="TensorBoard folder (default: <run_dir>/diagnostics, shown as run "
        "<run>/diagnostics; with several runs, one subfolder per run)",
    )
    parser.add_argument("--no-tensorboard", action="store_true", help="write no TensorBoard events")
    parser.add_argument(
        "--data-dir",
        type=argcheck.directory_text,
        help="replaces the runs' data_dir (data-backed tasks)",
    )
    parser.add_argument("--cells", help="compare fresh cells instead, e.g. rnn_tanh,lstm,gru")
    parser.add_argument(
        "--length", type=argcheck.int_at_least(2), default=100, help="--cells: sequence length"
    )
    parser.add_argument(
        "--hidden", type=argcheck.int_at_least(1), default=64, help="--cells: hidden units"
    )
    parser.add_argument(
        "--seed", type=argcheck.int_at_least(0, 2**32 - 1), default=0, help="--cells: init seed"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error in your input"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console script `rnnlab-diagnose` (see the module docstring)."""
    args = build_parser().parse_args(argv)
    report_user_errors(PROG, _main, args, debug=args.debug)


def _logdir(args: argparse.Namespace, run_dir: Path, label: str) -> Path | None:
    """Where a run's TensorBoard events go (`--logdir`, one subfolder per run when there are
    several; else `<run_dir>/diagnostics`), or None with `--no-tensorboard`."""
    if args.no_tensorboard:
        return None
    if args.logdir is None:
        return run_dir / OUT_SUBDIR
    return args.logdir / slug(label) if len(args.run_dirs) > 1 else args.logdir


def _check_runs(args: argparse.Namespace) -> None:
    """Checks every run directory and output folder before anything is written."""
    for run_dir in args.run_dirs:
        cli.load_config(run_dir)  # a run directory with a readable config
        if not args.init:
            check_checkpoint(run_dir, args.checkpoint)
    several = len(args.run_dirs) > 1
    if args.out is None:
        for run_dir in args.run_dirs:
            argcheck.check_output_dir(
                run_dir / OUT_SUBDIR, "the default output folder", "give --out DIR"
            )
        if several:
            common = Path(os.path.commonpath([str(p.absolute()) for p in args.run_dirs]))
            argcheck.check_output_dir(
                common / OUT_SUBDIR, "the default comparison folder", "give --out DIR"
            )
    if not args.no_tensorboard and args.logdir is None:
        for run_dir in args.run_dirs:
            argcheck.check_output_dir(
                run_dir / OUT_SUBDIR,
                "TensorBoard events go to <run_dir>/diagnostics",
                "give --logdir DIR or --no-tensorboard",
            )


def _compare_cells(args: argparse.Namespace) -> None:
    names = argcheck.name_list(cli.cell_names(), "cell")
    try:
        cells = names(args.cells)
    except argparse.ArgumentTypeError as err:
        raise UserError(f"--cells: {err} (conf/cell/<name>.yaml)") from None
    out = args.out or argcheck.check_output_dir(
        CELLS_OUT, "the default output folder", "give --out DIR"
    )
    out.mkdir(parents=True, exist_ok=True)
    result = compare_cells(cells, args.length, args.hidden, out, args.seed)
    print(
        f"adding problem, T={args.length}, fresh {args.hidden}-unit cells (seed {args.seed}): "
        f"gradient norm at t=0 relative to t={args.length - 1} "
        "(about 1: reaches back; much less than 1: vanishes)"
    )
    for name, summary in result["grad_flow_summary"].items():
        print(f"  {name}:")
        print("\n".join(f"    {line}" for line in ratio_lines(summary, args.length)))
    print(f"figure: {', '.join(result['files'])}")


def _main(args: argparse.Namespace) -> None:
    with console_logging(PROG):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    if args.cells and args.run_dirs:
        raise UserError(
            "give run directories or --cells, not both (--cells compares fresh cells, no run)"
        )
    if args.cells:
        _compare_cells(args)
        return
    if not args.run_dirs:
        raise UserError("give run directories (written by rnnlab-train) or --cells")
    _check_runs(args)
    several = len(args.run_dirs) > 1
    compared: dict[str, dict[str, np.ndarray]] = {}
    names = [cli.saved_model_name(d) for d in args.run_dirs]
    labelled = list(zip(args.run_dirs, run_labels(args.run_dirs, names), strict=True))
    for run_dir, label in track(labelled, total=len(labelled), desc="runs", unit="run"):
        which = "initial parameters" if args.init else f"checkpoint {args.checkpoint}"
        with _Timer(f"{label}: restoring the {which} of {run_dir}"):
            run = cli.restore_run_dir(
                run_dir, args.checkpoint, init=args.init, data_dir=args.data_dir
            )
        out = run_dir / OUT_SUBDIR if args.out is None else args.out
        if several and args.out is not None:
            out = args.out / slug(label)
        logdir = _logdir(args, run_dir, label)
        result = diagnose(run, out, args.what, args.example, args.batch_size, logdir, label)
        where = "initial parameters" if args.init else f"checkpoint step {run.step}"
        print(summary_text(result, f"{label} ({where}): {run_dir}"))
        if "grad_flow" in result:
            compared[label] = {k: np.asarray(v) for k, v in result["grad_flow"].items()}
    if several and compared:
        common = Path(os.path.commonpath([str(p.absolute()) for p in args.run_dirs]))
        out = args.out or common / OUT_SUBDIR
        suffix = "_init" if args.init else ""
        when = "at initialisation" if args.init else f"{args.checkpoint} checkpoint"
        fig = plots.plot_grad_flow_comparison(
            compared, title=f"Gradient flow through time, {len(compared)} runs, {when}"
        )
        files = plots.save_figure(fig, out / f"grad_flow_comparison{suffix}")
        summary = {k: gradflow.summarize(v) for k, v in compared.items()}
        (out / f"grad_flow_comparison{suffix}.json").write_text(
            json.dumps({"runs": [str(p) for p in args.run_dirs], "summary": summary}, indent=2)
            + "\n"
        )
        print(f"comparison of {len(compared)} runs: {', '.join(str(p) for p in files)}")
