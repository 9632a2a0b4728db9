"""scripts/carry_runs.py: a study's completed runs carried between machines through git (no
checkpoints, no unfinished runs), and restored only where this machine has nothing."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sqlite3
import tarfile
from pathlib import Path

import pytest

from tests.subprocess_runs import REPO

spec = importlib.util.spec_from_file_location("carry_runs", REPO / "scripts" / "carry_runs.py")
carry_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(carry_runs)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """multirun/search/fold_0: an Optuna study with one completed and one interrupted trial."""
    monkeypatch.chdir(tmp_path)
    fold = Path("multirun", "search", "fold_0")
    fold.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(fold / "optuna.db")) as study_db, study_db:
        study_db.execute("create table trials (number integer, state text)")
        study_db.execute("insert into trials values (0, 'COMPLETE'), (1, 'RUNNING')")
    done, cut = fold / "trial_0", fold / "trial_1"
    _write(done / "results.json", json.dumps({"status": "completed", "best": {"value": 0.8}}))
    _write(done / "metrics.jsonl", '{"step": 1, "valid/accuracy": 0.8}\n')
    _write(done / ".hydra" / "config.yaml", "seed: 0\n")
    _write(done / "checkpoints" / "10" / "params", "weights")
    _write(cut / ".hydra" / "config.yaml", "seed: 1\n")
    _write(cut / "metrics.jsonl", '{"step": 1}\n')
    _write(cut / "checkpoints" / "5" / "params", "weights")
    return fold


def test_save_packs_completed_runs_and_the_study_without_checkpoints(study: Path) -> None:
    carry_runs.save([study])
    archive = Path("results", "runs", "search", "fold_0.tar.gz")
    with tarfile.open(archive) as packed:
        names = sorted(packed.getnames())
    assert names == [
        "multirun/search/fold_0/optuna.db",
        "multirun/search/fold_0/trial_0/.hydra/config.yaml",
        "multirun/search/fold_0/trial_0/metrics.jsonl",
        "multirun/search/fold_0/trial_0/results.json",
    ]
    assert carry_runs.directory_of(archive) == study


def test_restore_unpacks_only_where_the_directory_is_absent(study: Path) -> None:
    carry_runs.save([study])
    saved = (study / "trial_0" / "results.json").read_text()
    (study / "trial_0" / "results.json").write_text("changed here")
    carry_runs.restore()  # the directory is here: nothing is overwritten
    assert (study / "trial_0" / "results.json").read_text() == "changed here"

    moved = Path("elsewhere")
    study.parent.rename(moved)
    carry_runs.restore()
    assert (study / "trial_0" / "results.json").read_text() == saved
    with contextlib.closing(sqlite3.connect(study / "optuna.db")) as study_db:
        rows = study_db.execute("select number, state from trials order by number").fetchall()
    assert rows == [(0, "COMPLETE"), (1, "RUNNING")]  # a working copy of the study
    assert not (study / "trial_1").exists() and not (study / "trial_0" / "checkpoints").exists()


def test_restore_refuses_an_archive_that_writes_outside_its_directory(study: Path) -> None:
    archive = Path("results", "runs", "search", "fold_1.tar.gz")
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as packed:
        packed.add(study / "optuna.db")  # multirun/search/fold_0/..., not fold_1
    with pytest.raises(SystemExit, match="outside multirun/search/fold_1"):
        carry_runs.restore()
    assert not Path("multirun", "search", "fold_1").exists()


def test_save_names_a_directory_outside_multirun(study: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="relative to the repository root"):
        carry_runs.save([tmp_path / study])
    with pytest.raises(SystemExit, match="not a directory"):
        carry_runs.save([Path("multirun", "nothing")])
