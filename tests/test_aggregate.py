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
    best = titles.index("valid MSE (best)")
    final = titles.index("valid MSE (final)")
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
    # valid/loss is valid/mse in every run (an MSE task): one column, named in the notes.
    assert "valid/loss" in summary.metrics and "valid/loss" not in summary.table.metrics
    assert not any("loss" in title for title in titles)
    assert "valid MSE stands for valid/mse = valid/loss" in summary.markdown
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


def write_fake_run(
    path: Path,
    length: int,
    seed: int,
    value: float,
    model: str = "lstm",
    final: dict | None = None,
    baselines: dict | None = None,
) -> None:
    """A run directory with only `results.json` and `metrics.jsonl` (no Hydra configs); `final`:
    more metrics (final and at the best checkpoint), `baselines`: the task's."""
    path.mkdir(parents=True)
    results = {
        "status": "completed",
        "best": {"metric": MONITOR, "mode": "min", "step": 2, "value": value},
        "final": {MONITOR: value, **(final or {})},
        "best_checkpoint_metrics": {MONITOR: value, "test/mse": 2 * value, **(final or {})},
        "baselines": baselines or {},
        "num_params": 10,
        "perf": {"compile_s": 1.0, "train_s": 2.0, "eval_s": 0.5},
        "hparams": {"model": model, "task.length": length, "seed": seed},
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
    assert "| 4 | 2 | 10 | 3.5 | **0.2000 ± 0.14** | **0.2000 ± 0.14** |" in summary.markdown
    assert "| 16 | 1 | 10 | 3.5 | 0.5000 ± – | 0.5000 ± – |" in summary.markdown
    assert "test MSE (best) ↓" in summary.markdown and "test MSE (final)" not in summary.markdown


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
        "| model | n | params | time [s] | valid loss (final) ↓ | valid loss (best) ↓ |"
        in proc.stdout
    )
    assert sorted(p.name for p in out.iterdir()) == ["runs.csv", "summary.md", "summary.tex"]


def write_variants(root: Path, values: dict[str, list[float]], **kwargs) -> Path:
    """A fake run per (model, seed) with `values[model][seed]` as valid/mse."""
    for model, seeds in values.items():
        for seed, value in enumerate(seeds):
            write_fake_run(root / f"model={model},seed={seed}", 4, seed, value, model, **kwargs)
    return root


def markdown_rows(summary: agg.Summary) -> dict[str, list[str]]:
    """The summary table's Markdown rows by their first cell."""
    lines = summary.markdown.split("\n\n")[2].splitlines()[2:]
    return {cells[0]: cells[1:] for cells in (line.strip("| ").split(" | ") for line in lines)}


def test_metric_modes_follow_the_name_the_saved_mode_and_the_option() -> None:
    assert [agg.metric_mode(m) for m in ("valid/loss", "test/mse_original", "valid/bpc")] == [
        "min"
    ] * 3
    assert [agg.metric_mode(m) for m in ("valid/ppl", "test/error", "valid/rmse")] == ["min"] * 3
    assert [agg.metric_mode(m) for m in ("test/accuracy", "valid/top5_acc", "test/f1")] == [
        "max"
    ] * 3
    assert agg.metric_mode("wall/tokens_per_s") is None
    assert agg.metric_mode("valid/loss", {"valid/loss": "max"}) == "max"  # saved or --mode wins


def test_every_metric_column_has_its_arrow_and_unknown_modes_are_named(tmp_path: Path) -> None:
    final = {"test/accuracy": 0.9, "valid/bpc": 1.2, "wall/step_ms": 30.0}
    sweep = write_variants(tmp_path / "sweep", {"a": [0.1], "b": [0.2]}, final=final)
    summary = agg.aggregate([sweep], out=tmp_path / "out", plots=False)
    titles = [c.title + {"min": " ↓", "max": " ↑"}.get(c.mode, "") for c in summary.table.columns]
    assert "valid MSE (best) ↓" in titles and "test accuracy (final) ↑" in titles
    assert "valid BPC (best) ↓" in titles and "test MSE (best) ↓" in titles
    assert "wall step ms (final)" in titles  # unknown: no arrow, named in the notes
    assert "mode unknown (give --mode NAME=min|max): wall/step_ms." in summary.markdown
    assert r"valid MSE (best) $\downarrow$" in (tmp_path / "out" / "summary.tex").read_text()
    other = agg.aggregate([sweep], out=tmp_path / "o2", plots=False, modes={"wall/step_ms": "max"})
    assert "wall step ms (final) ↑" in other.markdown and "mode unknown" not in other.markdown
    with pytest.raises(agg.ConfigError, match="--mode wall/step_ms=high: give NAME=min"):
        agg.aggregate([sweep], out=tmp_path / "o3", modes={"wall/step_ms": "high"})


def test_best_mean_is_bold_in_each_column_by_its_mode(tmp_path: Path) -> None:
    values = {"a": [0.1, 0.3], "b": [0.5, 0.7], "c": [0.3, 0.1]}  # a and c tie on valid/mse
    accuracy = {"a": 0.5, "b": 0.9, "c": 0.7}
    sweep = tmp_path / "sweep"
    for model, seeds in values.items():
        for seed, value in enumerate(seeds):
            final = {"test/accuracy": accuracy[model]}
            write_fake_run(sweep / f"model={model},seed={seed}", 4, seed, value, model, final)
    summary = agg.aggregate([sweep], out=tmp_path / "out", plots=False)
    titles = [c.title for c in summary.table.columns]
    mse, acc = titles.index("valid MSE (final)"), titles.index("test accuracy (final)")
    best = {
        t: [row[0] for row in summary.table.rows if row[i].best]
        for t, i in (("mse", mse), ("acc", acc))
    }
    assert best == {"mse": ["a", "c"], "acc": ["b"]}  # min: ties all bold; max: the highest
    rows = markdown_rows(summary)
    assert rows["a"][mse - 1] == "**0.2000 ± 0.14**" and rows["b"][mse - 1] == "0.6000 ± 0.14"
    assert rows["b"][acc - 1] == "**0.9000 ± 0.0**"
    tex = (tmp_path / "out" / "summary.tex").read_text()
    assert r"\textbf{\boldmath 0.9000 $\pm$ 0.0}" in tex


def test_welch_test_marks_a_clear_difference_and_not_an_equal_one(tmp_path: Path) -> None:
    values = {
        "ref": [1.0, 1.1, 0.9],
        "far": [5.0, 5.1, 4.9],  # far from ref: p ~ 1e-6
        "same": [1.1, 0.9, 1.0],  # the same values as ref: p = 1
        "single": [9.0],  # n = 1: not tested
    }
    sweep = write_variants(tmp_path / "sweep", values)
    summary = agg.aggregate([sweep], out=tmp_path / "out", baseline_variant="ref", plots=False)
    column = [c.title for c in summary.table.columns].index("valid MSE (final)")
    marked = {row[0]: row[column].significant for row in summary.table.rows}
    assert marked == {"far": True, "ref": False, "same": False, "single": False}
    assert markdown_rows(summary)["far"][column - 1] == "5.000 ± 0.10†"
    assert "Welch's two-sided t-test" in summary.markdown and "p < 0.05" in summary.markdown
    assert r"5.000 $\pm$ 0.10$^\dagger$" in (tmp_path / "out" / "summary.tex").read_text()
    plain = agg.aggregate([sweep], out=tmp_path / "plain", plots=False)
    assert "†" not in plain.markdown
    with pytest.raises(agg.ConfigError, match="--baseline-variant 'lsmt' .* give one of: far"):
        agg.aggregate([sweep], out=tmp_path / "bad", baseline_variant="lsmt")
    assert not (tmp_path / "bad").exists()


def test_x_key_with_one_value_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = write_variants(tmp_path / "sweep", {"lstm": [0.1, 0.2], "gru": [0.3]})
    with pytest.raises(SystemExit) as exit_info:
        agg.main([str(sweep), "--x-key", "task.length", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "--x-key 'task.length' has one value in every completed run (4)" in err
    assert "leave --x-key out" in err and not (tmp_path / "out").exists()


def test_figures_show_the_task_baseline_and_a_style_per_variant(tmp_path: Path) -> None:
    baselines = {"baseline/mse": 1 / 6}
    values = {"a": [0.1, 0.12], "b": [0.1, 0.12], "c": [0.0001, 0.0002]}  # a, b overlap
    sweep = write_variants(tmp_path / "sweep", values, baselines=baselines)
    runs = agg.load_runs([sweep])
    variants = agg.group_runs(runs, ["model"])
    axes = agg.curve_figure(variants, ["model"], MONITOR).axes[0]
    baseline = [line for line in axes.lines if line.get_label() == "baseline 0.167"]
    assert len(baseline) == 1 and baseline[0].get_linestyle() == ":"
    assert baseline[0].get_ydata()[0] == pytest.approx(1 / 6)
    drawn = [line for line in axes.lines if line.get_label() in values]
    assert len({(line.get_color(), line.get_marker(), line.get_linestyle()) for line in drawn}) == 3
    assert axes.get_yscale() == "log"  # 0.00015 to 0.22: over two decades
    assert axes.get_xlabel() == "step" and axes.get_ylabel() == "valid MSE"
    assert all(float(t).is_integer() for t in axes.get_xticks())
    # Without a baseline for the metric (MAE has none) and over a small span: linear, none.
    for run in (r for v in variants for r in v.runs):
        run.events.append({"step": 3, "test/mae": 0.5})
    axes = agg.curve_figure(variants, ["model"], "test/mae").axes[0]
    assert axes.get_yscale() == "linear"
    assert not [line for line in axes.lines if "baseline" in line.get_label()]


def test_versus_figure_has_the_baseline_and_lines_per_model(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for length in (10, 40):
        for model, value in (("lstm", 0.01), ("rnn", 0.15)):
            for seed in (0, 1):
                path = sweep / f"model={model},task.length={length},seed={seed}"
                v = value * length / 10 + seed / 1000
                write_fake_run(path, length, seed, v, model, baselines={"baseline/mse": 1 / 6})
    runs = agg.load_runs([sweep])
    fig = agg.versus_figure(runs, ["task.length", "model"], "task.length", MONITOR)
    axes = fig.axes[0]
    assert [line.get_label() for line in axes.lines if line.get_linestyle() == ":"] == [
        "baseline 0.167"
    ]
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert legend == ["lstm", "rnn", "baseline 0.167"]
    assert axes.get_xlabel() == "task length" and axes.get_ylabel() == "valid MSE (best)"
    assert [t.get_text() for t in axes.get_xticklabels()] == ["10", "40"]


def test_reading_runs_and_drawing_figures_report_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep = write_variants(tmp_path / "sweep", {"a": [0.1, 0.2], "b": [0.3]})
    shown = []

    def track(items, desc, total=None, unit="item", **kwargs):
        shown.append((desc, total, unit))
        yield from items

    monkeypatch.setattr(agg, "track", track)
    agg.aggregate([sweep], out=tmp_path / "out")
    assert shown == [("reading runs", 3, "run"), ("drawing figures", 1, "figure")]
