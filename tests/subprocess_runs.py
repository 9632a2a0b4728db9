"""What the tests that run `experiments/train.py` as a user would (subprocesses) share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(REPO / "experiments" / "train.py")]


def train_killed_after(step: int) -> list[str]:
    """`rnnlab-train` that SIGKILLs itself once update `step` is done (`tests/faults.py`; run
    with cwd=REPO); append the training arguments."""
    return [sys.executable, "-m", "tests.faults", "--kill-after-step", str(step), "--"]


TINY_MODEL = ["trainer=debug", "trainer.quiet=true", "model.cell.hidden_size=8"]
"""A tiny model and a quiet debug trainer (add `trainer.steps=...`)."""
TINY_TASK = ["task.length=8", "task.eval_batches=1", "task.eval_batch_size=8"]
"""The default adding task, tiny."""


def launch(
    args: list[str], cache: Path | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """Run a command as CI would (no progress bars); `cache`: a JAX compilation cache folder
    shared by one module's runs (None: the default cache)."""
    env = {**os.environ, "CI": "true"}
    if cache is not None:
        env["RNNLAB_JAX_CACHE"] = str(cache)
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def job_dir(sweep: Path, *items: str) -> Path:
    """The job directory of a sweep whose name (its overrides) contains every item."""
    (match,) = [p for p in sweep.iterdir() if p.is_dir() and set(items) <= set(p.name.split(","))]
    return match
