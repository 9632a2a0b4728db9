"""Progress where no bar is drawn: a line at a steady wall-clock interval in the run's log."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rnnlab.errors import ConfigError
from rnnlab.progress import ProgressLine, format_duration
from rnnlab.writers import LoggerConfig
from tests.subprocess_runs import TINY_MODEL, TINY_TASK, TRAIN, launch


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0 s"), (19.2, "19 s"), (185, "3 min 05 s"), (7620, "2 h 07 min"), (-3, "0 s")],
)
def test_durations_read_like_a_person_writes_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_line_is_due_once_per_interval_and_says_rate_eta_and_loss() -> None:
    line = ProgressLine(total=2000, start=1000, every_s=30.0, started=100.0)
    assert not line.due(129.9)
    assert line.due(130.0) and not line.due(159.0) and line.due(160.5)
    # 200 steps in 20 s since this attempt started at step 1000: 10 steps/s, 800 to go.
    assert line.text(1200, 120.0) == "step 1200/2000 (60%), 10 steps/s, ETA 1 min 20 s"
    line.loss = (1150, 0.012345)
    assert line.text(1200, 120.0).endswith(", train/loss 0.01235 (step 1150)")


def test_interval_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"logger\.progress_every_s must be > 0"):
        LoggerConfig(progress_every_s=0)


def test_quiet_run_writes_progress_lines_to_its_log(tmp_path: Path) -> None:
    """Output to a file (no terminal, no bar): the attempt's train.log gets the lines."""
    overrides = ["trainer.steps=12", "logger.log_every=4", "logger.progress_every_s=0.001"]
    done = launch([*TRAIN, *TINY_MODEL, *TINY_TASK, *overrides, f"hydra.run.dir={tmp_path}"])
    assert done.returncode == 0, done.stderr[-3000:]
    (log,) = tmp_path.glob("attempts/*/train.log")
    lines = re.findall(r"step (\d+)/12 \(\d+%\), [\d.]+ steps/s, ETA [^,\n]+(.*)", log.read_text())
    assert len(lines) >= 5
    assert lines[-1][1].startswith(", train/loss ")  # once a log event has fetched a loss
