"""The error surface of `rnnlab-aggregate`, `rnnlab-diagnose` and `rnnlab-benchmark`.

Every bad input is one line naming the argument or file (exit status 2, no traceback), caught
before anything is written: the files in the run directories are byte-identical afterwards, and
no file appears. A torn `metrics.jsonl` or a damaged `results.json`/`provenance.json` is no error
at all: the run is still aggregated (or diagnosed) and reported. Everything runs in-process on
hand-made run directories (no training).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rnnlab import aggregate as agg
from rnnlab import bench
from rnnlab.diagnostics import cli as diagnose
from tests.test_aggregate import MONITOR, write_fake_run

CONFIG = """\
seed: 0
model:
  name: lstm
  cell:
    _target_: rnnlab.cells.lstm.LSTMCell
    hidden_size: 4
task:
  _target_: rnnlab.tasks.AddingTask
  length: 6
  eval_batches: 1
  eval_batch_size: 4
trainer:
  batch_size: 4
"""
"""A composed config of a tiny adding-problem run, as `.hydra/config.yaml`."""

MAINS: dict[str, Callable[[list[str]], object]] = {
    "aggregate": agg.main,
    "diagnose": diagnose.main,
    "benchmark": bench.main,
}


def write_diagnose_run(path: Path, steps: tuple[int, ...] = (3,)) -> Path:
    """A run directory for `rnnlab-diagnose`: the config, empty step folders (enough for the
    argument checks, which do not open a checkpoint), `metrics.jsonl` and `results.json`."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(CONFIG)
    for step in steps:
        (path / "checkpoints" / str(step)).mkdir(parents=True)
    (path / "metrics.jsonl").write_text(json.dumps({"step": 1, "train/loss": 0.5}) + "\n")
    (path / "results.json").write_text(json.dumps({"status": "completed", "final": {}}))
    return path


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """`sweep/` (3 runs of task.length x seed), `empty/`, `blocked/` (a run, and a file where
    the default output folder would go), `file.txt`, `dsweep/` (a diagnose run, a run without
    checkpoints, a run with a damaged config), `bench/` (`tiny.json` is a folder)."""
    sweep = tmp_path / "sweep"
    for length, seed, value in ((4, 0, 0.1), (4, 1, 0.3), (16, 0, 0.5)):
        write_fake_run(sweep / f"task.length={length},seed={seed}", length, seed, value)
    (tmp_path / "empty").mkdir()
    write_fake_run(tmp_path / "blocked" / "seed=0", 4, 0, 0.2)
    (tmp_path / "blocked" / "aggregate").write_text("not a folder\n")
    (tmp_path / "file.txt").write_text("a file\n")
    dsweep = tmp_path / "dsweep"
    write_diagnose_run(dsweep / "model=lstm,seed=0")
    write_diagnose_run(dsweep / "model=lstm,seed=1", steps=())
    broken = write_diagnose_run(tmp_path / "broken")
    (broken / ".hydra" / "config.yaml").write_text("model: [unclosed\n")
    (tmp_path / "bench" / "tiny.json").mkdir(parents=True)
    return tmp_path


def snapshot(root: Path) -> dict[str, str]:
    """`{relative path: sha256}` of every file under `root` (folders as "dir")."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(root.rglob("*"))
    }


RUN = "dsweep/model=lstm,seed=0"
BENCH = ["--grid", "tiny", "--out", "{w}/bench/out"]
CASES = [
    # rnnlab-aggregate
    ("aggregate", ["{w}/missing"], ["argument dirs", "missing", "does not exist"]),
    ("aggregate", ["{w}/file.txt"], ["argument dirs", "file.txt", "not a directory"]),
    ("aggregate", ["{w}/empty"], ["no run directories found", "empty", ".hydra/config.yaml"]),
    ("aggregate", ["{w}/sweep", "{w}/empty"], ["no run directories found under", "empty"]),
    ("aggregate", [], ["the following arguments are required: dirs"]),
    (
        "aggregate",
        ["{w}/sweep", "--metrics", f"{MONITOR},valid/acc"],
        ["--metrics", "'valid/acc'", "they have: valid/mse, test/mse"],
    ),
    (
        "aggregate",
        ["{w}/sweep", "--group-by", "task.lenght"],
        ["--group-by", "'task.lenght'", "did you mean 'task.length'"],
    ),
    ("aggregate", ["{w}/sweep", "--x-key", "optim.lr"], ["--x-key", "'optim.lr'"]),
    (
        "aggregate",
        ["{w}/sweep", "--curve-metric", "train/loss"],
        ["--curve-metric", "'train/loss'", "metrics.jsonl", "they logged: valid/mse"],
    ),
    ("aggregate", ["{w}/sweep", "--band", "iqr"], ["argument --band", "'iqr'"]),
    ("aggregate", ["{w}/sweep", "--out", "{w}/file.txt"], ["argument --out", "file.txt"]),
    (
        "aggregate",
        ["{w}/sweep", "--out", "{w}/file.txt/sub"],
        ["argument --out", "cannot create", "file.txt is a file"],
    ),
    (
        "aggregate",
        ["{w}/blocked"],
        ["the default output directory", "blocked/aggregate is a file", "--out"],
    ),
    # rnnlab-diagnose
    ("diagnose", [], ["give run directories", "--cells"]),
    ("diagnose", ["{w}/missing"], ["argument run_dirs", "missing", "does not exist"]),
    (
        "diagnose",
        ["{w}/dsweep"],
        ["dsweep is not a run directory", ".hydra/config.yaml", "it holds 2 run directories"],
    ),
    ("diagnose", ["{w}/dsweep/model=lstm,seed=1"], ["seed=1 has no checkpoints", "--init"]),
    ("diagnose", ["{w}/broken"], ["broken/.hydra/config.yaml is damaged", "YAML"]),
    ("diagnose", ["{w}/" + RUN, "--checkpoint", "last"], ["argument --checkpoint", "'last'"]),
    ("diagnose", ["{w}/" + RUN, "--checkpoint=-2"], ["argument --checkpoint", "'-2'"]),
    ("diagnose", ["{w}/" + RUN, "--checkpoint", "7"], ["--checkpoint 7", "steps [3]"]),
    ("diagnose", ["{w}/" + RUN, "--batch-size", "0"], ["argument --batch-size", ">= 1, got 0"]),
    ("diagnose", ["{w}/" + RUN, "--example=-1"], ["argument --example", ">= 0, got -1"]),
    ("diagnose", ["{w}/" + RUN, "--what", "gates,gate"], ["argument --what", "'gate'"]),
    ("diagnose", ["{w}/" + RUN, "--out", "{w}/file.txt"], ["argument --out", "file.txt"]),
    ("diagnose", ["{w}/" + RUN, "--logdir", "{w}/file.txt/tb"], ["argument --logdir"]),
    ("diagnose", ["{w}/" + RUN, "--data-dir", "{w}/nodata"], ["argument --data-dir", "nodata"]),
    ("diagnose", ["{w}/" + RUN, "--cells", "lstm"], ["--cells, not both"]),
    ("diagnose", ["--cells", "lstm,lstn"], ["--cells", "'lstn'", "did you mean 'lstm'"]),
    ("diagnose", ["--cells", "lstm", "--length", "1"], ["argument --length", ">= 2, got 1"]),
    ("diagnose", ["--cells", "lstm", "--hidden", "0"], ["argument --hidden", ">= 1"]),
    ("diagnose", ["--cells", "lstm", "--seed", "x"], ["argument --seed", "'x'"]),
    ("diagnose", ["--cells", "lstm", "--seed", str(2**32)], ["argument --seed", "0 to"]),
    # rnnlab-benchmark
    ("benchmark", [*BENCH, "--repeats", "0"], ["argument --repeats", ">= 1, got 0"]),
    ("benchmark", [*BENCH, "--warmup=-1"], ["argument --warmup", ">= 0"]),
    ("benchmark", [*BENCH, "--min-seconds", "nan"], ["argument --min-seconds", "finite"]),
    ("benchmark", [*BENCH, "--peak-size", "0"], ["argument --peak-size"]),
    ("benchmark", [*BENCH, "--cells", "lstm,lsmt"], ["argument --cells", "'lsmt'"]),
    ("benchmark", [*BENCH, "--impls", "tourch"], ["argument --impls", "did you mean 'torch'"]),
    ("benchmark", [*BENCH, "--modes", "train,eval"], ["argument --modes", "'eval'"]),
    ("benchmark", [*BENCH, "--variants", "tri"], ["argument --variants", "'tri'"]),
    ("benchmark", [*BENCH, "--grid", "huge"], ["argument --grid", "'huge'"]),
    ("benchmark", [*BENCH, "--configs", "lstm:32,128"], ["argument --configs", "4 to 6 sizes"]),
    ("benchmark", [*BENCH, "--configs", "lsmt:1,2,3,4"], ["argument --configs", "'lsmt'"]),
    ("benchmark", [*BENCH, "--configs", "gru:1,2,3,0"], ["argument --configs", ">= 1, got 0"]),
    ("benchmark", [*BENCH, "--configs", "gru:1,2,3,4,1,3"], ["directions must be 1 or 2"]),
    ("benchmark", [*BENCH, "--configs", ";"], ["argument --configs", "no configuration"]),
    ("benchmark", [*BENCH, "--out", "{w}/file.txt"], ["argument --out", "file.txt"]),
    ("benchmark", [*BENCH, "--stem", "a/b"], ["argument --stem", "'a/b'"]),
    ("benchmark", ["--grid", "tiny", "--out", "{w}/bench"], ["bench/tiny.json is a directory"]),
]


def run_main(
    command: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int | str | None, str]:
    """Runs a command's main in-process; its exit code and stderr."""
    with pytest.raises(SystemExit) as exit_info:
        MAINS[command](argv)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "argv", "expected"),
    CASES,
    ids=[f"{c}-{i}-{' '.join(a)[:40]}" for i, (c, a, _) in enumerate(CASES)],
)
def test_bad_input_is_one_line_and_writes_nothing(
    world: Path,
    command: str,
    argv: list[str],
    expected: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(world)  # a default output folder would land here, inside the snapshot
    monkeypatch.delenv("RNNLAB_DEBUG", raising=False)
    before = snapshot(world)
    code, err = run_main(command, [a.format(w=world) for a in argv], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    prog = f"rnnlab-{command}: error: "
    lines = [line for line in err.splitlines() if line.startswith(prog)]
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], (text, err)
    assert snapshot(world) == before


def test_debug_shows_the_traceback_of_a_user_error(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main("aggregate", [str(world / "empty"), "--debug"], capsys)
    assert code == 2 and "Traceback" in err and "RunNotFoundError" in err
    assert "rnnlab-aggregate: error: no run directories found" in err


def test_benchmark_names_a_missing_torch(
    world: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    out = world / "bench" / "out"
    code, err = run_main("benchmark", ["--impls", "rnnlab,torch", "--out", str(out)], capsys)
    assert code == 2 and "Traceback" not in err
    assert "--impls torch needs torch, which is not installed: pip install torch" in err
    assert not out.exists()
    # Not asked for by name: the benchmark runs without it and says so.
    calls = []

    def fake_benchmark(configs, implementations, **kwargs):
        calls.append(implementations)
        return {
            "machine": {
                "platform": "test",
                "cores": 1,
                "matmul_peak_gflops": {},
                "xla_flags": "",
                "versions": {},
            },
            "settings": kwargs,
            "rows": [],
        }

    monkeypatch.setattr(bench, "benchmark", fake_benchmark)
    assert bench.main(["--grid", "tiny", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "torch is not installed, so torch is skipped (pip install torch" in err
    assert calls == [list(bench.IMPLEMENTATIONS)]  # skipped by `benchmark` itself
    assert (out / "tiny.json").is_file() and (out / "tiny.md").is_file()


def test_aggregate_reports_runs_with_torn_metrics_and_damaged_results(
    world: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    sweep = world / "sweep"
    torn = sweep / "task.length=4,seed=1" / "metrics.jsonl"
    with torn.open("a") as handle:
        handle.write('{"step": 3, "valid/m')  # killed mid-line
    damaged = sweep / "task.length=16,seed=0"
    (damaged / ".hydra").mkdir()  # its overrides still say which variant it is
    (damaged / ".hydra" / "overrides.yaml").write_text("- task.length=16\n- seed=0\n")
    (damaged / "results.json").write_text('{"status": "completed", "final": {"valid/m')
    (damaged / "provenance.json").write_bytes(b"\xff\xfe not json")
    before = snapshot(sweep)
    out = world / "out"
    with caplog.at_level(logging.WARNING):
        assert agg.main([str(sweep), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert snapshot(sweep) == before  # read only: nothing repaired or moved
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{torn}: line 3 is torn" in warnings
    assert f"{damaged / 'results.json'} is damaged" in warnings
    assert f"{damaged / 'provenance.json'} is damaged" in warnings
    # The torn run counts with its two complete lines; the damaged one is listed, not dropped.
    assert "| 4 | 2 | 10 | 3.5 | 0.2000 ± 0.14 |" in captured.out
    assert "| 16 | 0 (+1 incomplete) |" in captured.out
    assert "| incomplete | 16 | 0 | results.json is damaged (not readable JSON) |" in captured.out
    rows = (out / "runs.csv").read_text()
    assert "incomplete" in rows and "results.json is damaged" in rows
    assert (out / "curve_valid-mse.png").stat().st_size > 1000


def test_diagnose_runs_with_torn_metrics_and_damaged_results(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = world / RUN
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 2, "train/lo')
    (run / "results.json").write_text('{"status": "comp')
    (run / "provenance.json").write_text("[1, 2")
    before = snapshot(run)
    out = world / "diag"
    argv = [str(run), "--init", "--what", "grad_flow", "--no-tensorboard", "--out", str(out)]
    diagnose.main(argv)
    assert "Traceback" not in capsys.readouterr().err
    assert snapshot(run) == before
    result = json.loads((out / "diagnostics_init.json").read_text())
    assert result["init"] is True and len(result["grad_flow"]["stack/input"]) == 6
    # An example beyond the first evaluation batch: named, before anything is written.
    other = world / "diag2"
    code, err = run_main("diagnose", [*argv[:-1], str(other), "--example", "9"], capsys)
    assert code == 2 and "Traceback" not in err
    assert "--example 9: the first evaluation batch of lstm has 4 examples; choose 0 to 3" in err
    assert not other.exists() and snapshot(run) == before
