"""`rnnlab-results`: the README's results table regenerated from run directories (rnnlab.results).

Run directories are made here (results.json + provenance.json, as the trainer writes them), so
every number in a rendered row is known in advance."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from rnnlab import results, rundir

REPO = Path(__file__).resolve().parents[1]


def make_run(path: Path, hparams: dict, best: dict, final: dict, status: str = "completed",
             wall_s: float = 60.0, monitor: str = "valid/loss") -> Path:  # fmt: skip
    """A run directory holding what the trainer writes at the end of a run."""
    path.mkdir(parents=True)
    mode = "max" if "accuracy" in monitor else "min"
    rundir.write_json(path / "results.json", {
        "status": status, "hparams": hparams, "seed": hparams.get("seed", 0),
        "best": {"metric": monitor, "mode": mode, "value": best[monitor], "step": 10},
        "best_checkpoint_metrics": best, "final": final, "perf": {"wall_s": wall_s},
    })  # fmt: skip
    rundir.write_json(path / "provenance.json", {"attempts": [{
        "cpu_count": 2, "cpu": "Test CPU", "cpu_isa": "AVX2", "devices": {"backend": "cpu"},
        "git": {"describe": "abc1234"}}], "wall_s_total": wall_s})  # fmt: skip
    return path


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text(yaml.safe_dump(rows, sort_keys=False))
    return path


ROW = {
    "study": "a study", "metric": "a metric", "published": "1.0", "command": "`cmd`",
}  # fmt: skip


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    """Three completed seeds of a loss sweep and one failed one."""
    root = tmp_path / "multirun" / "sweep"
    for seed, (best, last) in enumerate([(1.25, 1.5), (1.5, 1.75), (2.0, 2.25)]):
        make_run(root / f"seed={seed}", {"seed": seed, "model": "lstm"},
                 {"valid/loss": best, "valid/accuracy": 0.5 + seed / 10},
                 {"valid/loss": last}, wall_s=60.0 + seed)  # fmt: skip
    make_run(root / "seed=3", {"seed": 3, "model": "lstm"}, {"valid/loss": 0.1}, {}, "failed")
    return tmp_path


def test_a_row_is_mean_and_sample_std_over_completed_seeds(seeds: Path) -> None:
    manifest = write_manifest(seeds / "studies.yaml", [{
        **ROW, "id": "loss", "runs": "multirun/sweep", "expect": 3,
        "values": {"best": {"metric": "valid/loss", "digits": 3},
                   "last": {"metric": "valid/loss", "kind": "final", "digits": 2},
                   "acc": {"metric": "valid/accuracy", "scale": 100, "digits": 1}},
        "text": "best {best}, last {last} ({last.values}; min {best.min}), acc {acc}, {runs} runs",
    }])  # fmt: skip
    table, done, _ = results.run(manifest, seeds / "snap", None, seeds)
    std = statistics.stdev([1.25, 1.5, 2.0])
    assert f"best 1.583 ± {std:.3f}, last 1.83 ± {std:.2f} (1.50, 1.75, 2.25; min 1.250)" in table
    assert "acc 60.0 ± 10.0, 3 runs" in table  # the failed seed counts nowhere
    assert "1 min 00 s – 1 min 02 s per run, 2-core CPU (Test CPU, AVX2)" in table
    assert "so far" not in table
    snapshot = json.loads((seeds / "snap" / "loss.json").read_text())
    assert snapshot["runs"]["other"] == {"multirun/sweep/seed=3": "failed"}
    entries = snapshot["values"]["best"]["entries"]
    assert [(e["run"], e["seed"], e["value"]) for e in entries] == [
        (f"multirun/sweep/seed={s}", s, v) for s, v in enumerate([1.25, 1.5, 2.0])
    ]
    assert done == [f"loss: 3 completed runs -> {seeds / 'snap' / 'loss.json'}"]


def test_nested_selection_picks_by_validation_never_by_test(tmp_path: Path) -> None:
    """Per fold the trial with the best inner-validation accuracy gives the fold's test
    accuracy, even where another trial of the fold scored higher on test."""
    trials = {0: [(0.70, 0.90), (0.80, 0.75)], 1: [(0.78, 0.74), (0.76, 0.95), (0.60, 0.99)]}
    for fold, pairs in trials.items():
        for i, (valid, test) in enumerate(pairs):
            make_run(tmp_path / f"fold_{fold}" / f"trial_{i}", {"task.fold": fold, "seed": 0},
                     {"valid/accuracy": valid, "test/accuracy": test}, {"valid/accuracy": valid},
                     monitor="valid/accuracy")  # fmt: skip
    select = {"per": "task.fold", "by": "valid/accuracy"}
    manifest = write_manifest(tmp_path / "studies.yaml", [{
        **ROW, "id": "nested", "runs": ["fold_*"], "expect": 10,
        "values": {"test": {"metric": "test/accuracy", "scale": 100, "digits": 1, "select": select},
                   "gap": {"metric": "valid/accuracy", "minus": "test/accuracy", "scale": 100,
                           "digits": 1, "select": select}},
        "text": "test {test.values}, gap {gap.values}",
    }])  # fmt: skip
    table, _, _ = results.run(manifest, tmp_path, None, tmp_path, write=False)
    assert "test 75.0, 74.0, gap 5.0, 4.0 (**2 of 10 so far**" in table
    assert not (tmp_path / "nested.json").exists()  # write=False writes nothing


def test_a_group_still_searching_is_left_out_until_its_budget_finished(tmp_path: Path) -> None:
    """With `complete: 3`, fold 1 (two trials finished, one running) is not scored yet: its
    best trial so far is not the search's choice. A failed trial spends the budget."""
    trials = {0: [(0.70, 0.90, "completed"), (0.80, 0.75, "completed"), (0.9, 0.9, "failed")],
              1: [(0.78, 0.74, "completed"), (0.76, 0.95, "completed")]}  # fmt: skip
    for fold, triples in trials.items():
        for i, (valid, test, status) in enumerate(triples):
            make_run(tmp_path / f"fold_{fold}" / f"trial_{i}", {"task.fold": fold, "seed": 0},
                     {"valid/accuracy": valid, "test/accuracy": test}, {"valid/accuracy": valid},
                     status=status, monitor="valid/accuracy")  # fmt: skip
    (tmp_path / "fold_1" / "trial_2" / ".hydra").mkdir(parents=True)  # running: no results yet
    (tmp_path / "fold_1" / "trial_2" / ".hydra" / "config.yaml").write_text("task:\n  fold: 1\n")
    select = {"per": "task.fold", "by": "valid/accuracy", "complete": 3}
    manifest = write_manifest(tmp_path / "studies.yaml", [{
        **ROW, "id": "nested", "runs": ["fold_*"], "expect": 2,
        "values": {"test": {"metric": "test/accuracy", "scale": 100, "digits": 1,
                            "select": select}},
        "text": "test {test.values}",
    }])  # fmt: skip
    table, _, _ = results.run(manifest, tmp_path / "snap", None, tmp_path)
    assert (
        "test 75.0 (**1 of 2 so far**; the study is still running; task.fold 1 at 2 of 3 runs)"
        in table
    )
    snapshot = json.loads((tmp_path / "snap" / "nested.json").read_text())
    assert snapshot["values"]["test"]["searching"] == {"1": 2}
    bad = write_manifest(tmp_path / "bad.yaml", [{
        **ROW, "id": "bad", "runs": ["fold_*"], "text": "{test}",
        "values": {"test": {"metric": "test/accuracy", "select": {**select, "complete": 0}}},
    }])  # fmt: skip
    with pytest.raises(results.ConfigError, match="select.complete must be a positive integer"):
        results.run(bad, tmp_path / "snap", None, tmp_path, write=False)


def test_where_filters_runs_and_an_unfinished_study_says_so(seeds: Path) -> None:
    make_run(seeds / "multirun" / "sweep" / "gru", {"seed": 0, "model": "gru"},
             {"valid/loss": 0.5}, {"valid/loss": 0.5})  # fmt: skip
    manifest = write_manifest(seeds / "studies.yaml", [
        {**ROW, "id": "by_model", "runs": "multirun/sweep", "expect": 6,
         "values": {"gru": {"metric": "valid/loss", "where": {"model": "gru"}, "digits": 2}},
         "text": "GRU {gru}"},
        {**ROW, "id": "later", "runs": "multirun/not_yet", "expect": 3,
         "values": {"x": {"metric": "valid/loss"}}, "text": "{x}"},
    ])  # fmt: skip
    table, _, _ = results.run(manifest, seeds, None, seeds)
    assert "| GRU 0.50 (**4 of 6 so far**; the study is still running) |" in table
    assert "| not run yet (0 of 3) | 1.0 | — |" in table


def test_the_readme_block_is_written_checked_and_kept_when_runs_move(seeds: Path) -> None:
    manifest = write_manifest(seeds / "studies.yaml", [
        {**ROW, "id": "loss", "runs": "multirun/sweep",
         "values": {"best": {"metric": "valid/loss", "digits": 2}}, "text": "best {best}"},
        {**ROW, "id": "old", "recorded": {"rnnlab": "**7.0**", "wall": "1 h"}},
    ])  # fmt: skip
    readme = seeds / "README.md"
    readme.write_text(f"# Paper\n\n{results.BEGIN}\nstale\n{results.END}\n\nThe end.\n")
    args = ["--manifest", str(manifest), "--readme", str(readme), "--root", str(seeds)]
    assert results.main([*args, "--check"]) == 1  # stale
    assert results.main(args) == 0
    text = readme.read_text()
    assert text.startswith("# Paper\n\n") and text.endswith(f"{results.END}\n\nThe end.\n")
    assert "| best 1.58 ± 0.38 |" in text
    assert "| **7.0** (recorded; its run directories were not collected) | 1.0 | 1 h |" in text
    assert results.main([*args, "--check"]) == 0
    # On a machine without the runs the snapshot still renders the same table.
    (seeds / "multirun").rename(seeds / "elsewhere")
    assert results.main(args) == 0 and readme.read_text() == text
    # A hand edit of the table is caught.
    readme.write_text(text.replace("1.58", "1.48"))
    assert results.main([*args, "--check"]) == 1


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {
                "id": "x",
                "runs": "r",
                "values": {"v": {"metric": "m", "kinds": "best"}},
                "text": "{v}",
            },
            "values.v has unknown key(s) kinds",
        ),
        (
            {"id": "x", "runs": "r", "values": {"v": {"metric": "m"}}, "text": "{w}"},
            "`text` uses {w}, which is not a value of the row",
        ),
        (
            {
                "id": "x",
                "runs": "r",
                "values": {"v": {"metric": "m", "kind": "last"}},
                "text": "{v}",
            },
            "values.v.kind must be one of best, final",
        ),
        ({"id": "x", "runs": "r", "text": "{v}"}, "`runs` needs `values`"),
        ({"id": "x"}, "give `runs` (with `values`, `text`) or `recorded`"),
        ({"id": "a/b", "recorded": {}}, "`id` must be a unique name"),
    ],
)
def test_a_bad_manifest_names_the_row_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], row: dict, message: str
) -> None:
    manifest = write_manifest(tmp_path / "studies.yaml", [{**ROW, **row}])
    with pytest.raises(SystemExit) as exit_info:
        results.main(["--manifest", str(manifest), "--no-write"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and str(manifest) in err and "Traceback" not in err


def test_the_readme_table_is_what_the_committed_snapshots_render() -> None:
    """README.md's Results table comes from results/studies.yaml and results/*.json; editing the
    table by hand (or a manifest without re-rendering) fails here."""
    _, _, current = results.run(
        REPO / "results" / "studies.yaml", REPO / "results", REPO / "README.md", REPO,
        collect=False, check=True,
    )  # fmt: skip
    assert current, "run `rnnlab-results --no-collect` and commit README.md"
