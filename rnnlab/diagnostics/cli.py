"""`rnnlab-diagnose` (also `experiments/diagnose.py`): diagnostics of runs from their checkpoints.

    rnnlab-diagnose RUN_DIR [RUN_DIR ...] [--out DIR] [--checkpoint best|latest|STEP] [--init]
                    [--what grad_flow,gates,attention] [--example 0] [--batch-size 32]
    rnnlab-diagnose --cells rnn_tanh,lstm,gru --length 100 [--hidden 64] [--out DIR]

Per run it writes into `<run_dir>/diagnostics/` (or `--out`): PNG + PDF figures, the numbers as
`diagnostics[_init].json` (gradient norms per step and their first/last ratios, gate means,
attention shapes) and the full arrays as `.npz`, and logs the same to TensorBoard in the run
directory (or `--logdir`): per-step gradient norms as scalar series whose step axis is the time
step t (`diagnostics/<trained|init>/grad_flow/<series>`) and every figure (`add_figure`). With
several run directories, grad-flow also draws them on one comparison plot. `--cells` compares
freshly initialised cells (`conf/cell/<name>.yaml`) on the adding problem without any run.

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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab import argcheck, cli
from rnnlab.checkpoint import CHECKPOINT_HELP
from rnnlab.diagnostics import gradflow, plots
from rnnlab.diagnostics.attention_maps import attention_weights, lengths_of
from rnnlab.diagnostics.loading import LoadedRun, check_checkpoint, first_batch
from rnnlab.errors import ConfigError, UserError, report_user_errors

log = logging.getLogger(__name__)

PROG = "rnnlab-diagnose"

WHAT = ("grad_flow", "gates", "attention")
OUT_SUBDIR = "diagnostics"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_")


class Sink:
    """Writes figures (PNG + PDF) into a folder and, optionally, to a TensorBoard writer."""

    def __init__(self, out_dir: Path, logdir: Path | None, tag: str, step: int):
        self.out_dir = out_dir
        self.tag = tag
        self.step = step
        self.files: list[Path] = []
        self.writer = None
        if logdir is not None:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(logdir=str(logdir))

    def figure(self, fig: Any, name: str) -> None:
        self.files += plots.save_figure(fig, self.out_dir / name)
        if self.writer is not None:
            self.writer.add_figure(f"diagnostics/{self.tag}/{name}", fig, self.step, close=False)

    def series(self, group: str, series: Mapping[str, np.ndarray]) -> None:
        if self.writer is None:
            return
        for name, values in series.items():
            for t, value in enumerate(np.asarray(values, dtype=float)):
                self.writer.add_scalar(f"diagnostics/{self.tag}/{group}/{name}", value, t)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _example(array: np.ndarray, example: int, length: int | None) -> np.ndarray:
    values = np.asarray(array)[example]
    return values if length is None else values[:length]


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
        logdir: TensorBoard directory, or None for none.
        label: a name for titles.

    Returns:
        The JSON written as `diagnostics[_init].json`.
    """
    init = run.step is None
    tag = "init" if init else "trained"
    suffix = "_init" if init else ""
    batch = first_batch(run.task, batch_size=max(batch_size, example + 1))
    examples = int(np.shape(batch["inputs"])[0])
    if not 0 <= example < examples:
        raise ConfigError(
            f"--example {example}: the first evaluation batch of {label or 'the run'} has "
            f"{examples} examples; choose 0 to {examples - 1}"
        )
    sink = Sink(out_dir, logdir, tag, 0 if init else run.step)
    lengths = lengths_of(batch)
    length = None if lengths is None else int(lengths[example])
    when = "at initialisation" if init else f"checkpoint step {run.step}"
    title = f"{label} ({when})" if label else when
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
    if "grad_flow" in what:
        series = gradflow.model_grad_flow(run.task, run.model, run.params, batch)
        result["grad_flow"] = {k: [float(x) for x in v] for k, v in series.items()}
        result["grad_flow_summary"] = gradflow.summarize(series)
        arrays.update({f"grad_flow/{k}": v for k, v in series.items()})
        sink.series("grad_flow", series)
        sink.figure(plots.plot_grad_flow(series, f"gradient flow: {title}"), f"grad_flow{suffix}")
    if "gates" in what:
        traces = gradflow.model_gate_traces(run.task, run.model, run.params, batch)
        result["gates"] = {}
        for layer, trace in traces.items():
            one = {k: _example(v, example, length) for k, v in trace.items()}
            result["gates"][layer] = {k: float(np.mean(v)) for k, v in one.items()}
            arrays.update({f"gates/{layer}/{k}": v for k, v in one.items()})
            name = f"gates_{_slug(layer)}{suffix}"
            sink.figure(plots.plot_gates(one, f"{layer}, example {example}: {title}"), name)
    if "attention" in what:
        maps = attention_weights(run.task, run.model, run.params, batch)
        result["attention"] = {k: list(v.shape) for k, v in maps.items()}
        inputs = np.asarray(batch["inputs"])
        features = inputs[example] if inputs.ndim == 3 and inputs.shape[-1] <= 8 else None
        for name, weights in maps.items():
            one = np.asarray(weights)[example]
            if length is not None and one.ndim == 1:
                one = one[:length]
            arrays[f"attention/{name}"] = one
            sink.figure(
                plots.plot_attention(one, f"{name}, example {example}: {title}", features),
                f"attention_{_slug(name)}{suffix}",
            )
        if not maps:
            log.info("%s: the model has no attention weights to draw", label or out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / f"diagnostics{suffix}.npz", **arrays)
    result["files"] = [str(p) for p in sink.files]
    (out_dir / f"diagnostics{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    sink.close()
    return result


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
    for name in names:
        cell = cli.build_cell(name, hidden)
        runs[name] = gradflow.adding_grad_flow(cell, jax.random.PRNGKey(seed), length)
    fig = plots.plot_grad_flow_comparison(
        runs, title=f"adding problem T={length}, fresh cells ({hidden} units, seed {seed})"
    )
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
        "per run and the comparison plot here, else in <common parent>/diagnostics)",
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
        "--logdir", type=argcheck.output_dir, help="TensorBoard directory (default: run dir)"
    )
    parser.add_argument("--no-tensorboard", action="store_true")
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
                run_dir,
                "TensorBoard logs go to the run directory",
                "give --logdir DIR or --no-tensorboard",
            )


def _main(args: argparse.Namespace) -> None:
    from rnnlab.cli import _quiet_third_party_logs

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _quiet_third_party_logs()
    if args.cells and args.run_dirs:
        raise UserError(
            "give run directories or --cells, not both (--cells compares fresh cells, no run)"
        )
    if args.cells:
        names = argcheck.name_list(cli.cell_names(), "cell")
        try:
            cells = names(args.cells)
        except argparse.ArgumentTypeError as err:
            raise UserError(f"--cells: {err} (conf/cell/<name>.yaml)") from None
        out = args.out or argcheck.check_output_dir(
            Path(OUT_SUBDIR), "the default output folder", "give --out DIR"
        )
        out.mkdir(parents=True, exist_ok=True)
        result = compare_cells(cells, args.length, args.hidden, out, args.seed)
        for name, summary in result["grad_flow_summary"].items():
            ratios = {k: f"{v['ratio_first_last']:.3g}" for k, v in summary.items()}
            print(f"{name}: first/last gradient norm {ratios}")
        print("\n".join(result["files"]))
        return
    if not args.run_dirs:
        raise UserError("give run directories (written by rnnlab-train) or --cells")
    _check_runs(args)
    several = len(args.run_dirs) > 1
    compared: dict[str, dict[str, np.ndarray]] = {}
    names = [cli.saved_model_name(d) for d in args.run_dirs]
    for run_dir, label in zip(args.run_dirs, run_labels(args.run_dirs, names), strict=True):
        run = cli.restore_run_dir(run_dir, args.checkpoint, init=args.init, data_dir=args.data_dir)
        out = run_dir / OUT_SUBDIR if args.out is None else args.out
        if several and args.out is not None:
            out = args.out / _slug(label)
        logdir = None if args.no_tensorboard else (args.logdir or run_dir)
        result = diagnose(run, out, args.what, args.example, args.batch_size, logdir, label)
        where = "init" if args.init else f"step {run.step}"
        print(f"{run_dir} ({label}, {where}): {len(result['files'])} figure files in {out}")
        for name, summary in result.get("grad_flow_summary", {}).items():
            print(f"  {name}: first/last gradient norm {summary['ratio_first_last']:.3g}")
        if "grad_flow" in result:
            compared[label] = {k: np.asarray(v) for k, v in result["grad_flow"].items()}
    if several and compared:
        common = Path(os.path.commonpath([str(p.absolute()) for p in args.run_dirs]))
        out = args.out or common / OUT_SUBDIR
        suffix = "_init" if args.init else ""
        when = "at initialisation" if args.init else f"checkpoint {args.checkpoint}"
        fig = plots.plot_grad_flow_comparison(compared, title=f"gradient flow, {when}")
        files = plots.save_figure(fig, out / f"grad_flow_comparison{suffix}")
        summary = {k: gradflow.summarize(v) for k, v in compared.items()}
        (out / f"grad_flow_comparison{suffix}.json").write_text(
            json.dumps({"runs": [str(p) for p in args.run_dirs], "summary": summary}, indent=2)
            + "\n"
        )
        print("comparison: " + ", ".join(str(p) for p in files))
