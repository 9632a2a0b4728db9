"""Progress where no bar is drawn: a line at a steady wall-clock interval in the run's log."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from rnnlab.errors import ConfigError
from rnnlab.progress import (
    ProgressLine,
    SweepMonitor,
    format_duration,
    job_states,
    sweep_line,
    track,
)
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


def test_track_logs_a_line_per_interval_without_a_terminal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ticks = iter(range(100))
    with caplog.at_level("INFO", logger="rnnlab.progress"):
        items = list(
            track(
                range(6),
                "evaluating valid",
                unit="batch",
                quiet=True,
                every_s=2,
                clock=lambda: next(ticks),
            )
        )
    assert items == list(range(6))
    # Clock 0 at the start, one tick per item: lines at t = 2, 4, 6 (items 2, 4, 6 of 6).
    assert [r.getMessage() for r in caplog.records] == [
        "evaluating valid: batch 2/6 (33%), 1 batches/s, ETA 4 s",
        "evaluating valid: batch 4/6 (67%), 1 batches/s, ETA 2 s",
        "evaluating valid: batch 6/6 (100%), 1 batches/s, ETA 0 s",
    ]


def test_track_without_a_length_counts_without_eta(caplog: pytest.LogCaptureFixture) -> None:
    ticks = iter(range(100))
    with caplog.at_level("INFO", logger="rnnlab.progress"):
        list(
            track(
                (c for c in "abc"),
                "reading",
                unit="run",
                quiet=True,
                every_s=3,
                clock=lambda: next(ticks),
            )
        )
    assert [r.getMessage() for r in caplog.records] == ["reading: run 3, 1 runs/s"]


def _job(sweep: Path, name: str, results: dict | None, attempt: str = "running") -> None:
    run = sweep / name
    run.mkdir(parents=True)
    (run / "provenance.json").write_text(json.dumps({"attempts": [{"status": attempt}]}))
    if results is not None:
        (run / "results.json").write_text(json.dumps(results))


def test_sweep_state_is_read_from_the_run_directories(tmp_path: Path) -> None:
    _job(tmp_path, "model=lstm", {"status": "completed"})
    _job(tmp_path, "model=gru", {"status": "diverged"})
    _job(tmp_path, "model=rnn", None)  # started, no results yet
    _job(tmp_path, "model=bilstm", None, attempt="killed")  # ended without results
    counts = job_states(tmp_path)
    assert counts == {"completed": 1, "running": 1, "failed": 2}
    # 3 of 10 done in 60 s: 20 s a job, 7 to go.
    text = sweep_line(counts, 10, 60.0)
    assert text == "sweep: 3/10 jobs done (2 failed), 1 running, 1 min 00 s elapsed, ETA 2 min 20 s"
    assert (
        sweep_line(counts, None, 5.0) == "sweep: 3/? jobs done (2 failed), 1 running, 5 s elapsed"
    )


def test_a_job_whose_process_is_gone_counts_as_interrupted(tmp_path: Path) -> None:
    """A run killed without a word stays marked "running" in provenance.json; where it recorded
    this host and a process id that no longer exists, it counts as failed, not running."""
    import socket
    import subprocess
    import sys

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    here = socket.gethostname()
    for name, attempt in {
        "gone": {"status": "running", "host": here, "pid": int(ended.stdout)},
        "alive": {"status": "running", "host": here, "pid": os.getpid()},
        "elsewhere": {"status": "running", "host": here + "-other", "pid": int(ended.stdout)},
        "no_pid": {"status": "running", "host": here},
    }.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "provenance.json").write_text(json.dumps({"attempts": [attempt]}))
    assert job_states(tmp_path) == {"completed": 0, "running": 3, "failed": 1}


def test_sweep_monitor_logs_while_running_and_once_at_the_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _job(tmp_path, "seed=0", {"status": "completed"})
    with caplog.at_level("INFO", logger="rnnlab.progress"):
        monitor = SweepMonitor(tmp_path, total=2, every_s=0.01).start()
        time.sleep(0.2)
        _job(tmp_path, "seed=1", {"status": "completed"})
        monitor.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) >= 3 and all(r.job == "[sweep]" for r in caplog.records)
    assert lines[0].startswith("sweep: 1/2 jobs done, 0 running, ") and "ETA" in lines[0]
    assert re.fullmatch(r"sweep: 2/2 jobs done, 0 running, \d+ s elapsed", lines[-1])
