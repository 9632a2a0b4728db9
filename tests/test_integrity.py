"""Saved state is verified before it is trusted, and a damaged or killed run never stops for good.

Every file kind of an Orbax step is deleted, truncated, zeroed or has a bit flipped (and the
step's `state/` is deleted, the step emptied, or another step's state put in its place); the run
is then continued from that directory. It must end bit-identical to an uninterrupted run, having
moved every step that does not verify aside (with a warning naming it) and resumed from the
newest one that does. A torn `metrics.jsonl` line is cut off on resume; a directory whose every
checkpoint is damaged refuses to start until the user asks for a fresh start; sampling reports
a damaged checkpoint without moving anything. A run SIGKILLed at random moments, and once in
the middle of an asynchronous save, resumes to the same bits.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pytest

from rnnlab.checkpoint import restore_params
from rnnlab.errors import RunDirError
from rnnlab.rundir import DAMAGED_DIR, METRICS_FILE, read_jsonl
from tests.subprocess_runs import REPO
from tests.test_train import run, saved_state

# A failed read of a damaged step leaves TensorStore futures whose errors surface later.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

SAVE_EVERY = ["trainer.checkpoint_every=3", "trainer.eval_every=3"]
"""Checkpoints at steps 3 and 6 of the damaged run (both kept: keep_last is 2)."""


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "delete": lambda p: p.unlink(),
    "truncate": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "zero": lambda p: p.write_bytes(bytes(p.stat().st_size)),
    "flip": _flip,
}
FILE_KINDS = {
    "array data": "state/d/*",
    "ocdbt manifest": "state/manifest.ocdbt",
    "tree metadata": "state/_METADATA",
    "shardings": "state/_sharding",
    "array metadata": "state/array_metadatas/process_0",
    "meta": "meta/metadata",
    "metrics": "metrics/metrics",
    "step metadata": "_CHECKPOINT_METADATA",
}
HARMLESS = (
    {("shardings", op) for op in DAMAGE}
    | {  # Orbax reads these files only for information it also has elsewhere
        ("step metadata", op) for op in DAMAGE
    }
    | {("array metadata", "delete"), ("array metadata", "flip")}
)
"""Damage that leaves what the step restores intact: resuming from it is right too."""


def _step_file(step_dir: Path, pattern: str) -> Path:
    (path,) = sorted(step_dir.glob(pattern))[:1]
    return path


def _swap_in_another_state(step_dir: Path) -> None:
    """A readable, well-formed state with wrong values: step 3's, copied into step 6."""
    shutil.rmtree(step_dir / "state")
    shutil.copytree(step_dir.parent / "3" / "state", step_dir / "state")


TREE_DAMAGE: dict[str, Callable[[Path], None]] = {
    "state deleted": lambda d: shutil.rmtree(d / "state"),
    "step emptied": lambda d: [shutil.rmtree(p) if p.is_dir() else p.unlink() for p in d.iterdir()],
    "another step's state": _swap_in_another_state,
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 9-step run and the first 6 steps of the same run (to damage)."""
    root = tmp_path_factory.mktemp("integrity")
    run(root / "straight", ["trainer.steps=9", *SAVE_EVERY])
    run(root / "six", ["trainer.steps=6", *SAVE_EVERY])
    return root


def _continue(reference: Path, tmp_path: Path, damage: Callable[[Path], None]) -> Path:
    """Damages step 6 of a copy of the 6-step run, then trains it on to step 9."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference / "six", run_dir)
    damage(run_dir / "checkpoints" / "6")
    results = run(run_dir, ["trainer.steps=9", *SAVE_EVERY])
    assert results["status"] == "completed" and results["steps"] == 9
    return run_dir


def _assert_bit_identical(run_dir: Path, reference: Path) -> None:
    a, b = saved_state(reference / "straight"), saved_state(run_dir)
    assert int(b["step"]) == 9
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _moved_aside(run_dir: Path) -> list[Path]:
    damaged = run_dir / DAMAGED_DIR
    return sorted(p for p in damaged.iterdir() if p.is_dir()) if damaged.is_dir() else []


@pytest.mark.parametrize("op", sorted(DAMAGE))
@pytest.mark.parametrize("kind", sorted(FILE_KINDS))
def test_damaged_file_of_newest_step_falls_back_bit_identical(
    reference: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str, op: str
) -> None:
    caplog.set_level(logging.WARNING)
    run_dir = _continue(reference, tmp_path, lambda d: DAMAGE[op](_step_file(d, FILE_KINDS[kind])))
    _assert_bit_identical(run_dir, reference)
    moved = _moved_aside(run_dir)
    if (kind, op) not in HARMLESS:
        assert [p.name.split("-")[0] for p in moved] == ["6"], "the damaged step was trusted"
    for path in moved:
        reason = path.with_name(path.name + ".reason").read_text()
        assert reason.strip() and str(path) in caplog.text and "damaged" in caplog.text


@pytest.mark.parametrize("damage", sorted(TREE_DAMAGE))
def test_damaged_step_directory_falls_back_bit_identical(
    reference: Path, tmp_path: Path, damage: str
) -> None:
    run_dir = _continue(reference, tmp_path, TREE_DAMAGE[damage])
    _assert_bit_identical(run_dir, reference)
    assert [p.name.split("-")[0] for p in _moved_aside(run_dir)] == ["6"]


def test_state_of_another_step_is_caught_by_its_digest(reference: Path, tmp_path: Path) -> None:
    """Orbax reads a swapped-in state without complaint; only the recorded digest sees it."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference / "six", run_dir)
    _swap_in_another_state(run_dir / "checkpoints" / "6")
    raw = saved_state(run_dir, 6)  # what an unverified restore would have trained on
    assert int(raw["step"]) == 3
    with pytest.raises(RunDirError, match="step 6 is damaged.*digest"):
        restore_params(run_dir, raw["params"], 6)
    assert not _moved_aside(run_dir)  # sampling and diagnostics move nothing


def test_every_checkpoint_damaged_needs_an_explicit_fresh_start(
    reference: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference / "six", run_dir)
    for step in ("3", "6"):
        shutil.rmtree(run_dir / "checkpoints" / step / "state")
    with pytest.raises(RunDirError, match="no checkpoint .* verifies.*trainer.resume=false"):
        run(run_dir, ["trainer.steps=9", *SAVE_EVERY])
    assert len(_moved_aside(run_dir)) == 2
    results = run(run_dir, ["trainer.steps=9", "trainer.resume=false", *SAVE_EVERY])
    assert results["status"] == "completed"
    _assert_bit_identical(run_dir, reference)
    steps = [e["step"] for e in read_jsonl(run_dir / METRICS_FILE) if "train/loss" in e]
    assert steps == sorted(set(steps)), "the fresh start logged its steps once"


def test_torn_metrics_line_is_cut_off_on_resume(
    reference: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference / "six", run_dir)
    with (run_dir / METRICS_FILE).open("a") as handle:
        handle.write('{"step": 7, "train/lo')
    caplog.set_level(logging.WARNING)
    run(run_dir, ["trainer.steps=9", *SAVE_EVERY])
    assert "metrics.jsonl" in caplog.text and "torn" in caplog.text
    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    _assert_bit_identical(run_dir, reference)


KILL_RUN = ["trainer.steps=24", "trainer.checkpoint_every=4", "trainer.eval_every=8"]


def _launch(run_dir: Path, cache: Path, faults: list[str], extra: list[str]) -> subprocess.Popen:
    """`rnnlab-train` with the tiny adding run in `run_dir`, through `tests/faults.py`."""
    from tests.test_train import FAST, TASK_OVERRIDES

    argv = [*FAST, *TASK_OVERRIDES["adding"], *KILL_RUN, *extra, f"hydra.run.dir={run_dir}"]
    argv = [a for a in argv if not a.startswith("trainer.compilation_cache_dir")]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faults", *faults, "--", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={**os.environ, "CI": "true", "RNNLAB_JAX_CACHE": str(cache)},
    )


def test_kill_nine_at_random_moments_resumes_bit_identical(tmp_path: Path) -> None:
    """SIGKILL at random moments of a run (start-up, compilation, training, evaluation,
    saving) and once while an asynchronous save is being written; re-running the same
    command ends bit-identical to an uninterrupted run, and provenance marks the killed
    attempts as such."""
    cache = tmp_path / "cache"
    tic = time.perf_counter()
    straight = _launch(tmp_path / "straight", cache, [], [])
    assert straight.wait(timeout=300) == 0, straight.stdout.read()[-3000:]
    duration = time.perf_counter() - tic
    rng = random.Random(11)
    moments = {f"random{i}": {"delay": rng.uniform(0.2, 1.0) * duration} for i in range(3)}
    moments["mid-save"] = {"faults": ["--kill-after-save-of-step", "12"]}
    for name, how in moments.items():
        run_dir = tmp_path / name
        async_save = ["trainer.async_checkpointing=true"] if "faults" in how else []
        proc = _launch(run_dir, cache, how.get("faults", []), async_save)
        if "delay" in how:
            try:
                proc.wait(timeout=how["delay"])
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=300)
        killed = proc.returncode == -signal.SIGKILL
        results = run(run_dir, [*KILL_RUN, *async_save])  # the same run, continued
        assert results["status"] == "completed" and results["steps"] == 24
        a, b = saved_state(tmp_path / "straight"), saved_state(run_dir)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
        record = json.loads((run_dir / "provenance.json").read_text())
        statuses = [attempt["status"] for attempt in record["attempts"]]
        assert statuses[-1] == "completed" and "running" not in statuses, (name, statuses)
        if killed and len(statuses) > 1:
            assert statuses[-2] == "killed"
            assert record["wall_s_total"] == pytest.approx(
                sum(a.get("wall_s", 0.0) for a in record["attempts"]), rel=1e-6
            )
