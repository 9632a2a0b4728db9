"""The command line: `experiments/train.py` / `rnnlab-train` as a user runs them (subprocesses).

A 2 x 2 multirun writes four run directories named by their overrides, each with TensorBoard
events and `results.json`; a failing job does not lose the others; a bad override stops at
start-up with Hydra's message; the console-script entry point composes the same config.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest

from tests.subprocess_runs import (
    REPO,
    TINY_MODEL,
    TINY_TASK,
    TRAIN,
    job_dir,
    launch,
    train_killed_after,
)

TINY = [*TINY_MODEL, "trainer.steps=2", *TINY_TASK]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compilation cache shared by this module's subprocesses."""
    return tmp_path_factory.mktemp("jax_cache")


def test_multirun_writes_one_named_directory_per_job(tmp_path: Path, cache: Path) -> None:
    sweep = tmp_path / "sweep"
    every = "logger.progress_every_s=0.05"
    proc = launch(
        [*TRAIN, "-m", "model=lstm,gru", "seed=0,1", *TINY, every, f"hydra.sweep.dir={sweep}"],
        cache,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Every job's lines name it by its number and its swept values only; the sweep reports.
    labels = set(re.findall(r"\]\[INFO\](\[#\d [^\]]*\]) - ", proc.stdout))
    assert labels == {
        f"[#{i} model={m},seed={s}]" for i, (m, s) in enumerate(product(("lstm", "gru"), "01"))
    }
    assert "Sweep of 4 jobs in " in proc.stdout
    assert re.search(r"sweep: [0-3]/4 jobs done, [01] running, .* elapsed, ETA ", proc.stdout)
    assert re.search(r"sweep: 4/4 jobs done, 0 running, [^,\n]* elapsed\n", proc.stdout)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    items = [set(p.name.split(",")) for p in jobs]
    assert len(jobs) == 4 and all("trainer=debug" in i for i in items)
    pairs = sorted(
        (i & {"model=gru", "model=lstm"}).pop() + "," + (i & {"seed=0", "seed=1"}).pop()
        for i in items
    )
    assert pairs == [
        "model=gru,seed=0",
        "model=gru,seed=1",
        "model=lstm,seed=0",
        "model=lstm,seed=1",
    ]
    for job in jobs:
        results = json.loads((job / "results.json").read_text())
        assert results["status"] == "completed", results
        assert list(job.glob("events.out.tfevents.*")) and (job / "metrics.jsonl").exists()
        assert (job / ".hydra" / "config.yaml").exists()
        assert "${" not in (job / ".hydra" / "resolved.yaml").read_text()
        assert results["hparams"]["model"] in ("lstm", "gru") and "seed" in results["hparams"]
        check_provenance(job, results)
    assert (sweep / "multirun.yaml").exists()


def check_provenance(job: Path, results: dict) -> None:
    """provenance.json and results.json say which code, libraries and devices made the run."""
    import jax

    record = json.loads((job / "provenance.json").read_text())
    (attempt,) = record["attempts"]
    assert attempt["status"] == "completed" and attempt["start_step"] == 0
    assert attempt["end_step"] == results["steps"] and attempt["wall_s"] > 0
    assert attempt["packages"]["jax"] == jax.__version__
    assert attempt["devices"]["device_count"] >= 1 and attempt["devices"]["backend"] == "cpu"
    assert attempt["seed"] == results["seed"] and "-m" in attempt["command"]
    assert set(attempt["git"]) == {"commit", "dirty", "describe"}
    if (REPO / ".git").exists():
        assert len(attempt["git"]["commit"]) == 40 and isinstance(attempt["git"]["dirty"], bool)
    assert results["provenance"]["git"] == attempt["git"]
    assert results["perf"]["wall_s"] == pytest.approx(record["wall_s_total"], rel=0.05)
    assert results["config"]["seed"] == results["seed"]
    assert results["config"]["model.cell.hidden_size"] == 8


def test_interrupted_sweep_resumes_and_skips_finished_jobs(tmp_path: Path, cache: Path) -> None:
    """A sweep killed in its second job, re-run with the same hydra.sweep.dir: the finished job
    is skipped, the killed one resumes from its checkpoint, the one never started runs."""
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "trainer.checkpoint_every=2", f"hydra.sweep.dir={sweep}"]
    lengths = "trainer.steps=2,6,4"
    killed = launch([*train_killed_after(5), *args, lengths], cache)
    assert killed.returncode != 0  # SIGKILL at step 5 of the 6-step job ends the whole sweep
    names = {p.name for p in sweep.iterdir() if p.is_dir()}
    assert len(names) == 2 and not (job_dir(sweep, "trainer.steps=6") / "results.json").exists()
    first = json.loads((job_dir(sweep, "trainer.steps=2") / "results.json").read_text())

    again = launch([*TRAIN, *args, lengths], cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("Skipping ") == 1
    skipped = json.loads((job_dir(sweep, "trainer.steps=2") / "results.json").read_text())
    assert skipped == first  # untouched
    assert (
        len(
            json.loads((job_dir(sweep, "trainer.steps=2") / "provenance.json").read_text())[
                "attempts"
            ]
        )
        == 1
    )
    resumed = json.loads((job_dir(sweep, "trainer.steps=6") / "provenance.json").read_text())
    killed, completed = resumed["attempts"]
    assert (killed["status"], completed["status"]) == ("killed", "completed")
    assert killed["end_step"] == 4 and killed["wall_s"] > 0  # as of its last checkpoint
    assert completed["start_step"] == 4  # the last checkpoint before the kill
    assert resumed["wall_s_total"] == pytest.approx(killed["wall_s"] + completed["wall_s"])
    fresh = json.loads((job_dir(sweep, "trainer.steps=4") / "provenance.json").read_text())
    assert [a["start_step"] for a in fresh["attempts"]] == [0]
    for steps in (2, 6, 4):
        results = json.loads(
            (job_dir(sweep, f"trainer.steps={steps}") / "results.json").read_text()
        )
        assert results["status"] == "completed" and results["steps"] == steps


def test_sweep_directory_names_leave_out_the_keys_that_are_not_hparams() -> None:
    from omegaconf import OmegaConf

    from rnnlab.writers import NOT_HPARAMS

    hydra_cfg = OmegaConf.load(REPO / "conf" / "train.yaml").hydra
    excluded = set(hydra_cfg.job.config.override_dirname.exclude_keys)
    assert excluded - {"experiment"} == set(NOT_HPARAMS)


def test_failing_job_keeps_the_others_and_exits_non_zero(tmp_path: Path, cache: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = launch([*TRAIN, "-m", *TINY[:-3], "task.length=1,8", f"hydra.sweep.dir={sweep}"], cache)
    assert proc.returncode != 0
    assert "task.length must be >= 2" in proc.stderr
    bad = json.loads((job_dir(sweep, "task.length=1") / "results.json").read_text())
    good = json.loads((job_dir(sweep, "task.length=8") / "results.json").read_text())
    assert bad["status"] == "failed" and "task.length must be >= 2" in bad["error"]
    assert good["status"] == "completed"


def test_bad_override_stops_at_startup(tmp_path: Path, cache: Path) -> None:
    proc = launch([*TRAIN, "trainer.stpes=3", f"hydra.run.dir={tmp_path / 'run'}"], cache)
    assert proc.returncode != 0
    assert "Key 'stpes' not in 'TrainerConfig'" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_console_script_entry_point_composes_from_anywhere(tmp_path: Path, cache: Path) -> None:
    """`rnnlab-train` is `rnnlab.cli:train_main`; run it from another directory."""
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'rnnlab-train = "rnnlab.cli:train_main"' in pyproject
    assert 'rnnlab-sample = "rnnlab.cli:sample_main"' in pyproject
    code = (
        "import sys; from rnnlab.cli import train_main; sys.argv[0] = 'rnnlab-train'; train_main()"
    )
    env_path = f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    proc = subprocess.run(
        [sys.executable, "-c", code, "--cfg", "job", "model=gru", "task=copy"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": env_path},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rnnlab.cells.gru.GRUCell" in proc.stdout and "CopyTask" in proc.stdout
