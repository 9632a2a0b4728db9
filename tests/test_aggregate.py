"""`rnnlab-aggregate` on run directories written by real tiny runs of the runner.

One 2 x 2 multirun (model=lstm,gru x seed=0,1) plus two hand-made runs beside it: a failed one
(`results.json` status failed) and an interrupted one (a real run's configs and metrics without
`results.json`). Expected means and stds are computed here from the `results.json` files.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from rnnlab import aggregate as agg
from tests.subprocess_runs import REPO, TINY_MODEL, TINY_TASK, TRAIN, job_dir, launch

TINY = [*TINY_MODEL, "trainer.steps=4", "trainer.eval_every=2", *TINY_TASK]
MONITOR = "valid/mse"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sweep/` (4 real runs) and `extra/` (a failed and an interrupted run)."""
    root = tmp_path_factory.mktemp("aggregate")
    sweep = root / "sweep"
    # The default compilation cache: warm on a re-run.
    proc = launch([*TRAIN, "-m", "model=lstm,gru", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 0, proc.stderr[-3000:]

    failed = root / "extra" / "model=lstm,seed=2"
    failed.mkdir(parents=True)
    (failed / "results.json").write_text(
        json.dumps(
            {
                "status": "failed",
                "error": "ValueError: boom\nmore lines",
                "hparams": {"model": "lstm", "seed": 2},
            }
        )
    )
    interrupted = root / "extra" / "model=gru,seed=2"
    source = job_dir(sweep, "model=gru", "seed=0")
    shutil.copytree(source / ".hydra", interrupted / ".hydra")
    shutil.copy(source / "metrics.jsonl", interrupted / "metrics.jsonl")
    for name in ("overrides.yaml", "resolved.yaml"):
        path = interrupted / ".hydra" / name
        text = path.read_text().replace("seed=0", "seed=2").replace("seed: 0", "seed: 2")
        path.write_text(text)
    return root


@pytest.fixture(scope="module")
def summary(root: Path) -> agg.Summary:
    return agg.aggregate([root / "sweep", root / "extra"], out=root / "out")


def completed_results(root: Path, model: str) -> list[dict]:
    files = sorted((root / "sweep").glob(f"*model={model},*/results.json"))
    results = [json.loads(f.read_text()) for f in files]
    assert len(results) == 2 and all(r["status"] == "completed" for r in results)
    return results


def test_groups_by_the_swept_key_and_finds_every_run(summary: agg.Summary) -> None:
    assert summary.keys == ["model"]  # seed, hidden size, length...: constant or not swept
    assert len(summary.runs) == 6
    assert sorted(r.status for r in summary.runs) == [
        "completed",
        "completed",
        "completed",
        "completed",
        "failed",
        "incomplete",
    ]
    assert [v.values for v in summary.variants] == [("gru",), ("lstm",)]
    assert summary.metrics[0] == MONITOR and "valid/loss" in summary.metrics
    assert not summary.warnings


def test_means_and_sample_stds_match_results_json(root: Path, summary: agg.Summary) -> None:
    titles = [c.title for c in summary.table.columns]
    best = titles.index(f"{MONITOR} (best)")
    final = titles.index(f"{MONITOR} (final)")
    params = titles.index("params")
    for row, model in zip(summary.table.rows, ("gru", "lstm"), strict=True):
        results = completed_results(root, model)
        for column, values in (
            (best, [r["best"]["value"] for r in results]),
            (final, [r["final"][MONITOR] for r in results]),
        ):
            stat = row[column]
            assert isinstance(stat, agg.Stat) and stat.n == 2
            assert stat.mean == pytest.approx(statistics.mean(values), rel=1e-12)
            assert stat.std == pytest.approx(statistics.stdev(values), rel=1e-12)  # ddof=1
        assert row[params] == f"{results[0]['num_params']:,}"
        values = [r["best"]["value"] for r in results]
        shown = f"{statistics.mean(values):#.4g} ± {statistics.stdev(values):#.2g}"
        assert f"| {model} |" in summary.markdown and shown in summary.markdown
    n_column = titles.index("n")
    assert [row[n_column] for row in summary.table.rows] == ["2 (+1 incomplete)", "2 (+1 failed)"]


def test_csv_has_one_row_per_run_with_status(root: Path, summary: agg.Summary) -> None:
    with (root / "out" / "runs.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    by_dir = {Path(r["run_dir"]).name: r for r in rows}
    assert by_dir["model=lstm,seed=2"]["status"] == "failed"
    assert by_dir["model=lstm,seed=2"]["error"] == "ValueError: boom more lines"
    assert by_dir["model=gru,seed=2"]["status"] == "incomplete"
    assert by_dir["model=gru,seed=2"]["seed"] == "2"
    for row in rows:
        if row["status"] == "completed":
            results = json.loads((Path(row["run_dir"]) / "results.json").read_text())
            assert float(row[f"best/{MONITOR}"]) == results["best"]["value"]
            assert float(row[f"final/{MONITOR}"]) == results["final"][MONITOR]
            assert row["model"] == results["hparams"]["model"]
            assert int(row["seed"]) == results["seed"] and int(row["num_params"]) > 0
            assert float(row["time_s"]) > 0


def test_failed_and_incomplete_runs_are_listed(summary: agg.Summary) -> None:
    section = summary.markdown.split("## Failed / incomplete runs (2)")[1]
    failed = "`extra/model=lstm,seed=2` | failed | lstm | 2 | ValueError: boom more lines |"
    assert failed in section
    assert "`extra/model=gru,seed=2` | incomplete | gru | 2 | no results.json" in section


def test_latex_table_is_balanced(root: Path, summary: agg.Summary) -> None:
    tex = (root / "out" / "summary.tex").read_text()
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    spec = re.search(r"\\begin\{tabular\}\{([lr]+)\}", tex).group(1)
    assert len(spec) == len(summary.table.columns)
    body = tex.split(r"\toprule")[1].split(r"\bottomrule")[0]
    rows = [line for line in body.strip().splitlines() if line != r"\midrule"]
    assert len(rows) == 1 + len(summary.table.rows)
    for row in rows:
        assert row.endswith(r"\\")
        assert len(re.findall(r"(?<!\\)&", row)) == len(spec) - 1
    assert r"$\pm$" in tex and "±" not in tex
    # Underscores and other specials are escaped (a group-by key with an underscore).
    other = agg.aggregate(
        [root / "sweep"],
        out=root / "out_lr",
        group_by=["model", "optim.learning_rate"],
        plots=False,
    )
    tex = (root / "out_lr" / "summary.tex").read_text()
    assert r"optim.learning\_rate" in tex and "0.003" in tex and not other.warnings
    assert not re.search(r"(?<!\\)_", tex.split(r"\begin{tabular}")[1])
    assert agg.latex_escape("a_b & 50% #1 $x$") == r"a\_b \& 50\% \#1 \$x\$"


def test_plots_are_written(root: Path, summary: agg.Summary) -> None:
    out = root / "out"
    for stem in (f"curve_{MONITOR.replace('/', '-')}", "curve_train-loss"):
        for ext in ("png", "pdf"):
            path = out / f"{stem}.{ext}"
            assert path in summary.files and path.stat().st_size > 1000
    # No numeric swept key here: a metric-vs-hyperparameter plot only when asked for one.
    assert not list(out.glob("vs_*"))
    agg.aggregate([root / "sweep"], out=root / "out_vs", x_key="model", curve_metrics=[])
    assert (root / "out_vs" / "vs_model_valid-mse.png").stat().st_size > 1000
    assert (root / "out_vs" / "vs_model_valid-mse.pdf").stat().st_size > 1000


def write_fake_run(path: Path, length: int, seed: int, value: float) -> None:
    """A run directory with only `results.json` and `metrics.jsonl` (no Hydra configs)."""
    path.mkdir(parents=True)
    results = {
        "status": "completed",
        "best": {"metric": MONITOR, "mode": "min", "step": 2, "value": value},
        "final": {MONITOR: value},
        "best_checkpoint_metrics": {MONITOR: value, "test/mse": 2 * value},
        "num_params": 10,
        "perf": {"compile_s": 1.0, "train_s": 2.0, "eval_s": 0.5},
        "hparams": {"model": "lstm", "task.length": length, "seed": seed},
        "seed": seed,
    }
    (path / "results.json").write_text(json.dumps(results))
    lines = [{"step": 1, MONITOR: 2 * value}, {"step": 2, MONITOR: value}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_numeric_sweep_gets_a_versus_plot_and_n1_has_no_std(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for length, seed, value in ((4, 0, 0.1), (4, 1, 0.3), (16, 0, 0.5)):
        write_fake_run(sweep / f"task.length={length},seed={seed}", length, seed, value)
    summary = agg.aggregate([sweep])
    out = sweep / "aggregate"
    assert summary.keys == ["task.length"]
    assert summary.metrics == [MONITOR, "test/mse"]
    assert (out / "vs_task.length_valid-mse.png").stat().st_size > 1000
    assert (out / "vs_task.length_test-mse.pdf").stat().st_size > 1000
    assert "| 4 | 2 | 10 | 3.5 | 0.2000 ± 0.14 |" in summary.markdown
    assert "| 16 | 1 | 10 | 3.5 | 0.5000 ± – |" in summary.markdown
    assert "test/mse (best)" in summary.markdown and "test/mse (final)" not in summary.markdown


def test_cli_prints_the_table_and_errors_without_runs(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        agg.main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2  # a user error: one line, no traceback
    assert str(tmp_path / "missing") in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        agg.main([str(tmp_path / "empty")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no run directories found" in err and str(tmp_path / "empty") in err
    # The script wrapper, as a user runs it.
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "aggregate.py"), str(root / "sweep"), "--out"]
        + [str(out), "--metrics", "valid/loss", "--no-plots"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "| model | n | params | time [s] | valid/loss (final) | valid/loss (best) |" in proc.stdout
    )
    assert sorted(p.name for p in out.iterdir()) == ["runs.csv", "summary.md", "summary.tex"]
