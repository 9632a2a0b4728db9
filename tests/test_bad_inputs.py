"""Every user mistake gets one clear line, exit status 2, no traceback, and loses nothing saved.

A battery of malformed inputs to `rnnlab-train` and `rnnlab-sample` — config values, data files,
run-directory states, file-system states, command-line arguments — each run through the real
console entry point (in-process, for speed: `cli.train_main` with `sys.argv` set, as the console
script calls it). Each case asserts the exit status, that the message names the offending key,
file or argument, that no traceback is printed, and that the files of the run directories made
before (a completed run, an interrupted one, a language-model run) are byte-identical after it.
(`tests/test_tool_errors.py` holds the battery of the other console scripts.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra

from rnnlab import aggregate, cli
from rnnlab.rundir import ATTEMPTS_DIR, RESULTS_FILE
from tests import faults
from tests.test_train import make_tiny_data

TINY = [
    "trainer=debug",
    "trainer.quiet=true",
    "model.cell.hidden_size=8",
    "task.length=8",
    "task.eval_batches=1",
    "task.eval_batch_size=8",
]


@dataclass
class Outcome:
    code: int | str | None
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run_cli(
    main: Callable[[], object], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> Outcome:
    """Runs a console script's main in-process, as the installed script would."""
    with console_script(main.__name__, argv):
        try:
            main()
            code: int | str | None = 0
        except SystemExit as done:
            code = done.code
    out, err = capsys.readouterr()
    return Outcome(code, out, err)


@contextlib.contextmanager
def console_script(name: str, argv: list[str]) -> Iterator[None]:
    """`sys.argv` as the console script gets it; Hydra's global state and the logging handlers
    it installs (on this test's captured streams) are undone afterwards."""
    saved_argv, saved_handlers, saved_level = sys.argv, logging.root.handlers[:], logging.root.level
    sys.argv = [name, *argv]
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        sys.argv = saved_argv
        GlobalHydra.instance().clear()
        for handler in logging.root.handlers:
            if handler not in saved_handlers:
                handler.close()
        logging.root.handlers[:] = saved_handlers
        logging.root.setLevel(saved_level)


def train(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Outcome:
    return run_cli(cli.train_main, argv, capsys)


def sample(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Outcome:
    return run_cli(lambda: cli.sample_main(argv), [], capsys)


def snapshot(run_dir: Path) -> dict[str, str]:
    """SHA-256 of every file of a run directory (each attempt's own record aside)."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and ATTEMPTS_DIR not in p.relative_to(run_dir).parts
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved runs that no bad input may touch, tiny datasets, and a few bad files."""
    root = tmp_path_factory.mktemp("bad_inputs")
    data = make_tiny_data(root / "data")
    paths = {"root": root, "data": data}
    for name, extra in (
        ("done", []),
        ("lm", ["task=char_lm", "task.bptt=8", "task.eval_max_windows=2", f"data_dir={data}"]),
    ):
        run_dir = root / name
        argv = [*TINY, f"hydra.run.dir={run_dir}", "trainer.compilation_cache_dir=null", *extra]
        if name == "lm":
            argv = [a for a in argv if not a.startswith(("task.length", "task.eval_batches"))]
        with console_script("rnnlab-train", argv):
            cli.train_main()
        assert json.loads((run_dir / RESULTS_FILE).read_text())["status"] == "completed"
        paths[name] = run_dir
    # An interrupted run: checkpoints, no results, an attempt still marked running.
    interrupted = root / "interrupted"
    shutil.copytree(paths["done"], interrupted)
    (interrupted / RESULTS_FILE).unlink()
    paths["interrupted"] = interrupted
    for name, damage in (("vocab.json", b'{"tokens": ["a", '), (".hydra/config.yaml", b"a: [\n")):
        copy = root / f"lm_bad_{Path(name).stem.replace('.', '')}"
        shutil.copytree(paths["lm"], copy)
        (copy / name).write_bytes(damage)
        paths[copy.name] = copy
    copy = root / "lm_bad_metrics"  # Orbax would not even open its checkpoint directory
    shutil.copytree(paths["lm"], copy)
    for metrics in (copy / "checkpoints").glob("*/metrics/metrics"):
        metrics.write_bytes(b'{"valid/lo')
    paths[copy.name] = copy
    bad = root / "bad"
    bad.mkdir()
    (bad / "a_file").write_text("not a directory\n")
    (bad / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (bad / "empty.txt").write_text("")
    paths["bad"] = bad
    return paths


def ett_data(world: dict[str, Path], name: str, edit: Callable[[list[str]], None]) -> Path:
    """A copy of the tiny data root whose ETTh1.csv lines were edited by `edit`."""
    root = world["root"] / f"data_{name}"
    if not root.exists():
        shutil.copytree(world["data"], root)
        path = root / "ETT-small" / "ETTh1.csv"
        lines = path.read_text().splitlines()
        edit(lines)
        path.write_text("\n".join(lines) + "\n")
    return root


def _set_cell(row: int, column: int, value: str) -> Callable[[list[str]], None]:
    def edit(lines: list[str]) -> None:
        cells = lines[row].split(",")
        cells[column] = value
        lines[row] = ",".join(cells)

    return edit


ETT = ["task=ett", "task.input_len=8", "task.horizon=4", "task.train_rows=48"]
ETT += ["task.val_rows=24", "task.test_rows=24", "task.eval_batch_size=16"]


@dataclass
class Case:
    """A bad input: `argv` (with `{data}`, `{bad}`, `{root}`, `{done}`, `{interrupted}`, `{lm}`
    placeholders), the fragments its message must hold, and which run directory it targets
    (`None`: a new one)."""

    argv: list[str]
    names: list[str]
    run_dir: str | None = None
    tiny: bool = True
    setup: Callable[[dict[str, Path]], dict[str, str]] | None = None
    extra: dict[str, str] = field(default_factory=dict)


TRAIN_CASES: dict[str, Case] = {
    # trainer/
    "steps zero": Case(["trainer.steps=0"], ["trainer.steps"]),
    "steps negative": Case(["trainer.steps=-5"], ["trainer.steps"]),
    "steps not a number": Case(["trainer.steps=abc"], ["steps", "abc"]),
    "batch size zero": Case(["trainer.batch_size=0"], ["trainer.batch_size"]),
    "eval every zero": Case(["trainer.eval_every=0"], ["trainer.eval_every"]),
    "checkpoint every zero": Case(["trainer.checkpoint_every=0"], ["trainer.checkpoint_every"]),
    "keep last zero": Case(["trainer.keep_last=0"], ["trainer.keep_last"]),
    "epochs zero": Case(["trainer.epochs=0"], ["trainer.epochs"]),
    "epochs on a generated task": Case(["trainer.epochs=2"], ["trainer.epochs"]),
    "best mode": Case(["trainer.best_mode=median"], ["trainer.best_mode"]),
    "best metric unknown": Case(["trainer.best_metric=valid/bleu"], ["valid/bleu"]),
    "distributed": Case(["trainer.distributed=sometimes"], ["trainer.distributed"]),
    "divergence factor": Case(["trainer.divergence_factor=0.5"], ["trainer.divergence_factor"]),
    "unroll zero": Case(["trainer.unroll=0"], ["trainer.unroll"]),
    "unknown trainer key": Case(["trainer.stepz=5"], ["stepz"]),
    # optim/
    "learning rate negative": Case(["optim.learning_rate=-1"], ["optim.learning_rate"]),
    "learning rate zero": Case(["optim.learning_rate=0"], ["optim.learning_rate"]),
    "learning rate inf": Case(["optim.learning_rate=inf"], ["optim.learning_rate"]),
    "learning rate nan": Case(["optim.learning_rate=nan"], ["optim.learning_rate"]),
    "clip negative": Case(["optim.grad_clip_norm=-1"], ["optim.grad_clip_norm"]),
    "clip zero": Case(["optim.grad_clip_norm=0"], ["optim.grad_clip_norm"]),
    "weight decay negative": Case(["optim.weight_decay=-0.1"], ["optim.weight_decay"]),
    "beta one": Case(["optim.b1=1.5"], ["optim.b1"]),
    "eps zero": Case(["optim.eps=0"], ["optim.eps"]),
    "unknown optimiser": Case(["optim.name=adamax"], ["optim.name", "adamax"]),
    "unknown optim group": Case(["optim=adamax"], ["optim", "adamax"]),
    "unknown schedule": Case(["optim.schedule.name=linear"], ["optim.schedule.name"]),
    "warmup negative": Case(["optim.schedule.warmup=-1"], ["optim.schedule"]),
    "min lr ratio": Case(["optim.schedule.min_lr_ratio=2"], ["optim.schedule.min_lr_ratio"]),
    "epoch schedule without epochs": Case(["optim.schedule.unit=epoch"], ["unit=epoch"]),
    # logger/, seed
    "log every zero": Case(["logger.log_every=0"], ["logger.log_every"]),
    "seed text": Case(["seed=abc"], ["seed", "abc"]),
    "seed negative": Case(["seed=-1"], ["seed", "-1"]),
    "seed fraction": Case(["seed=1.5"], ["seed", "1.5"]),
    "seed too large": Case(["seed=99999999999"], ["seed"]),
    # model/
    "unknown model": Case(["model=transformerxl"], ["model", "transformerxl"]),
    "hidden size zero": Case(["model.cell.hidden_size=0"], ["model", "hidden_size"]),
    "hidden size negative": Case(["model.cell.hidden_size=-4"], ["model", "hidden_size"]),
    "layers zero": Case(["model.num_layers=0"], ["num_layers"]),
    "dropout above one": Case(["model.dropout=1.5"], ["dropout"]),
    "unknown cell": Case(["model/cell=lstmx"], ["cell", "lstmx"]),
    # task/
    "unknown task": Case(["task=translation"], ["task", "translation"]),
    "length zero": Case(["task.length=0"], ["task.length"]),
    "length negative": Case(["task.length=-3"], ["task.length"]),
    "eval batches zero": Case(["task.eval_batches=0"], ["task.eval_batches"]),
    "eval batch size zero": Case(["task.eval_batch_size=0"], ["task.eval_batch_size"]),
    "unknown task argument": Case(["+task.foo=1"], ["foo"]),
    "copy lag zero": Case(["task=copy", "task.lag=0"], ["task.lag"], tiny=False),
    "ett horizon zero": Case(
        [*ETT, "task.horizon=0", "data_dir={data}"], ["task.horizon"], tiny=False
    ),
    "ett input zero": Case(
        [*ETT, "task.input_len=0", "data_dir={data}"], ["task.input_len"], tiny=False
    ),
    "ett missing policy": Case(
        [*ETT, "task.missing=sometimes", "data_dir={data}"], ["task.missing"], tiny=False
    ),
    "ett nan cell": Case([*ETT, "data_dir={ett_nan}"], ["ETTh1.csv", "line 6", "OT"], tiny=False),
    "ett text cell": Case(
        [*ETT, "data_dir={ett_text}"], ["ETTh1.csv", "line 9", "HULL"], tiny=False
    ),
    "ett inf cell": Case(
        [*ETT, "data_dir={ett_inf}"], ["ETTh1.csv", "line 12", "MUFL"], tiny=False
    ),
    "ett missing column": Case([*ETT, "data_dir={ett_cols}"], ["ETTh1.csv", "OT"], tiny=False),
    "ett too short": Case(
        [*ETT, "task.train_rows=400", "data_dir={data}"], ["task.train_rows"], tiny=False
    ),
    # data files and paths
    "corpus missing": Case(
        ["task=char_lm", "data_dir={root}/nowhere"], ["input.txt", "task.path"], tiny=False
    ),
    "corpus binary": Case(
        ["task=char_lm", "task.path={bad}/binary.txt"], ["binary.txt", "UTF-8"], tiny=False
    ),
    "corpus empty": Case(
        ["task=char_lm", "task.path={bad}/empty.txt"], ["empty.txt", "empty"], tiny=False
    ),
    "corpus is a directory": Case(
        ["task=char_lm", "task.path={bad}"], ["{bad}", "task.path"], tiny=False
    ),
    "sentiment data missing": Case(
        ["task=sentiment", "data_dir={root}/nowhere"], ["rt-polarity", "task."], tiny=False
    ),
    "word corpus missing": Case(
        ["task=word_lm", "data_dir={root}/nowhere"], ["ptb", "task."], tiny=False
    ),
    # the file system
    "run dir is a file": Case(["hydra.run.dir={bad}/a_file"], ["a_file"]),
    "run dir under a file": Case(["hydra.run.dir={bad}/a_file/run"], ["a_file"]),
    "cache dir is a file": Case(
        ["trainer.compilation_cache_dir={bad}/a_file"], ["a_file", "compilation_cache_dir"]
    ),
    # command-line grammar
    "unparsable override": Case(["trainer.steps=[1,"], ["trainer.steps"]),
    "override of a missing key": Case(["trainer.nonexistent.x=1"], ["nonexistent"]),
    # re-runs of saved runs that must be refused, leaving them byte-identical
    "another model size": Case(["model.cell.hidden_size=16"], ["hidden_size"], "done"),
    "another seed": Case(["seed=1"], ["seed"], "done"),
    "another batch size": Case(["trainer.batch_size=16"], ["trainer.batch_size"], "done"),
    "another task length": Case(["task.length=9"], ["task.length"], "done"),
    "resume false over checkpoints": Case(["trainer.resume=false"], ["trainer.resume"], "done"),
    "bad value on a finished run": Case(["trainer.steps=0"], ["trainer.steps"], "done"),
    "bad data on a finished run": Case(
        ["task=char_lm", "task.path={bad}/binary.txt"], ["binary.txt"], "lm", tiny=False
    ),
    "interrupted, another model": Case(
        ["model.cell.hidden_size=16"], ["hidden_size"], "interrupted"
    ),
    "interrupted, resume false": Case(["trainer.resume=false"], ["trainer.resume"], "interrupted"),
    "interrupted, bad optimiser": Case(
        ["optim.grad_clip_norm=-1"], ["optim.grad_clip_norm"], "interrupted"
    ),
}


def _placeholders(world: dict[str, Path]) -> dict[str, str]:
    edits = {
        "ett_nan": _set_cell(5, 7, "nan"),
        "ett_text": _set_cell(8, 2, "abc"),
        "ett_inf": _set_cell(11, 3, "inf"),
        "ett_cols": lambda lines: lines.__setitem__(0, lines[0].replace(",OT", ",XX")),
    }
    values = {k: str(v) for k, v in world.items()}
    values.update({name: str(ett_data(world, name, edit)) for name, edit in edits.items()})
    return values


@pytest.mark.parametrize("name", sorted(TRAIN_CASES))
def test_train_refuses_bad_input_clearly(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    case = TRAIN_CASES[name]
    values = _placeholders(world)
    fill = lambda s: s.format(**values)  # noqa: E731
    argv = [fill(a) for a in case.argv]
    if case.tiny:
        argv = [*TINY, *argv]
    else:
        argv = ["trainer=debug", "trainer.quiet=true", "model.cell.hidden_size=8", *argv]
    if not any(a.startswith("hydra.run.dir=") for a in argv):
        target = world[case.run_dir] if case.run_dir else tmp_path / "run"
        argv.append(f"hydra.run.dir={target}")
    if not any(a.startswith("trainer.compilation_cache_dir") for a in argv):
        argv.append("trainer.compilation_cache_dir=null")
    saved = {k: snapshot(world[k]) for k in ("done", "interrupted", "lm")}
    outcome = train(argv, capsys)
    assert outcome.code == 2, outcome.text[-3000:]
    assert "Traceback" not in outcome.text, outcome.text[-3000:]
    (line,) = [x for x in outcome.err.splitlines() if x.startswith("rnnlab-train: error:")]
    for fragment in case.names:
        assert fill(fragment) in line, line
    for key, files in saved.items():
        assert snapshot(world[key]) == files, f"{key} changed"


SAMPLE_CASES: dict[str, tuple[list[str], list[str]]] = {
    "temperature negative": (["{lm}", "--temperature", "-1"], ["--temperature"]),
    "temperature inf": (["{lm}", "--temperature", "inf"], ["--temperature"]),
    "top k negative": (["{lm}", "--top-k", "-3"], ["--top-k"]),
    "tokens negative": (["{lm}", "--num-tokens", "-5"], ["--num-tokens"]),
    "tokens zero": (["{lm}", "--num-tokens", "0"], ["--num-tokens"]),
    "samples zero": (["{lm}", "--num-samples", "0"], ["--num-samples"]),
    "seed negative": (["{lm}", "--seed", "-1"], ["--seed"]),
    "checkpoint word": (["{lm}", "--checkpoint", "first"], ["--checkpoint"]),
    "checkpoint not kept": (["{lm}", "--checkpoint", "12345"], ["step 12345", "keeps steps"]),
    "run dir missing": (["{root}/nowhere"], ["nowhere"]),
    "not a run dir": (["{bad}"], ["{bad}"]),
    "not a language model": (["{done}"], ["vocab.json", "char_lm"]),
    "prompt out of vocabulary": (["{lm}", "--prompt", "QZX#"], ["--prompt"]),
    "prompt file missing": (["{lm}", "--prompt-file", "{bad}/nowhere.txt"], ["nowhere.txt"]),
    "prompt file binary": (["{lm}", "--prompt-file", "{bad}/binary.txt"], ["binary.txt"]),
    "sweep dir for a run dir": (["{root}"], ["{root}", "run directories"]),
    "damaged vocabulary": (["{lm_bad_vocab}"], ["vocab.json", "damaged"]),
    "damaged config": (["{lm_bad_config}"], ["config.yaml", "damaged"]),
    "damaged checkpoint metrics": (["{lm_bad_metrics}"], ["metrics/metrics", "damaged"]),
}


@pytest.mark.parametrize("name", sorted(SAMPLE_CASES))
def test_sample_refuses_bad_input_clearly(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str], name: str
) -> None:
    argv, names = SAMPLE_CASES[name]
    values = {k: str(v) for k, v in world.items()}
    saved = snapshot(world["lm"])
    outcome = sample([a.format(**values) for a in argv], capsys)
    assert outcome.code == 2, outcome.text[-3000:]
    assert "Traceback" not in outcome.text, outcome.text[-3000:]
    (line,) = [x for x in outcome.err.splitlines() if x.startswith("rnnlab-sample: error:")]
    for fragment in names:
        assert fragment.format(**values) in line, line
    assert snapshot(world["lm"]) == saved


def test_refused_rerun_leaves_the_run_usable(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a refused re-run the saved config is the run's own, aggregation counts the run
    and sampling reads it; a re-run of the same command is skipped, also changing nothing."""
    run_dir = tmp_path / "run"
    shutil.copytree(world["done"], run_dir)
    before = snapshot(run_dir)
    argv = [*TINY, f"hydra.run.dir={run_dir}", "trainer.compilation_cache_dir=null"]
    refused = train([*argv, "model.cell.hidden_size=16"], capsys)
    assert refused.code == 2 and snapshot(run_dir) == before
    assert cli.load_config(run_dir).model.cell.hidden_size == 8
    attempts = sorted((run_dir / ATTEMPTS_DIR).iterdir())
    assert "hidden_size=16" in (attempts[-1] / "overrides.yaml").read_text()
    skipped = train(argv, capsys)
    assert skipped.code == 0 and "Skipping" in skipped.text and snapshot(run_dir) == before
    assert aggregate.main([str(run_dir), "--out", str(tmp_path / "agg")]) == 0
    assert "completed" in (tmp_path / "agg" / "runs.csv").read_text()
    assert snapshot(run_dir) == before


def test_loss_explosion_stops_as_diverged_and_names_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    argv = [*TINY, f"hydra.run.dir={run_dir}", "trainer.compilation_cache_dir=null"]
    outcome = train([*argv, "optim.learning_rate=1e6", "optim.grad_clip_norm=null"], capsys)
    assert outcome.code == 2 and "Traceback" not in outcome.text, outcome.text[-3000:]
    line = outcome.err.splitlines()[-1]
    assert "optim.learning_rate" in line and "trainer.divergence_factor" in line, line
    results = json.loads((run_dir / RESULTS_FILE).read_text())
    assert results["status"] == "diverged"


def test_nan_data_is_blamed_on_the_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    argv = [*TINY, f"hydra.run.dir={run_dir}", "trainer.compilation_cache_dir=null"]
    with faults.step_hook(faults.poisoned(2)):
        outcome = train(argv, capsys)
    assert outcome.code == 2 and "Traceback" not in outcome.text, outcome.text[-3000:]
    line = outcome.err.splitlines()[-1]
    assert "non-finite values in 'inputs'" in line and "learning_rate" not in line, line


def test_debug_shows_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RNNLAB_DEBUG", "1")
    outcome = train([*TINY, "trainer.steps=0", f"hydra.run.dir={tmp_path / 'r'}"], capsys)
    assert outcome.code == 2 and "Traceback" in outcome.err and "trainer.steps" in outcome.err


def test_the_battery_is_large_enough() -> None:
    assert len(TRAIN_CASES) + len(SAMPLE_CASES) >= 60
    assert np.unique(list(TRAIN_CASES)).size == len(TRAIN_CASES)


def test_user_errors_survive_pickling() -> None:
    """Hydra's joblib launcher sends a failed job's exception back through pickle."""
    import pickle

    from rnnlab.checkpoint import CheckpointDamaged
    from rnnlab.data import DataNotFoundError
    from rnnlab.train import ConfigMismatchError, LossExplodedError, NonFiniteLossError

    errors = [
        DataNotFoundError("/data/input.txt", "task.path", "download it"),
        CheckpointDamaged(6, "its meta does not match the digest recorded with it"),
        NonFiniteLossError(5, float("nan"), float("nan"), 4, Path("/run/checkpoints"), "inputs"),
        LossExplodedError(7, 1e9, 0.5, 1000.0, None, Path("/run/checkpoints")),
        ConfigMismatchError("/run holds checkpoints of a different experiment"),
    ]
    for err in errors:
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
        assert getattr(back, "step", None) == getattr(err, "step", None)
