"""Progress for every long piece of work: a tqdm bar with ETA on a terminal; elsewhere (a file,
a scheduler's log, CI) a compact line at a steady wall-clock interval through `logging`.

    for batch in track(batches, "valid", unit="batch"):
        ...

Training keeps its own bar (it adds the loss), but shares `ProgressLine` and `format_duration`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import operator
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

DEFAULT_EVERY_S = 30.0
"""Seconds between progress lines without a terminal (`logger.progress_every_s` for training)."""
Item = TypeVar("Item")
log = logging.getLogger("rnnlab.progress")


def resolve_quiet(quiet: bool | None) -> bool:
    """`quiet`, or when None: quiet (no bar) under CI (`CI` set) or when stderr is not a
    terminal."""
    if quiet is not None:
        return quiet
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or not sys.stderr.isatty()


def format_duration(seconds: float) -> str:
    """A duration for a person: `19 s`, `3 min 05 s`, `2 h 07 min`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


def plural(unit: str) -> str:
    """`steps`, `batches`, `runs`."""
    return unit + ("es" if unit.endswith(("ch", "sh", "s", "x")) else "s")


def eta(done: float, total: float, elapsed_s: float) -> str:
    """The remaining time at the rate so far (`unknown` before anything is done)."""
    rate = done / max(elapsed_s, 1e-9)
    return format_duration((total - done) / rate) if rate > 0 else "unknown"


@dataclasses.dataclass
class ProgressLine:
    """Progress where no bar is drawn: at most every `every_s` seconds of wall clock, one line
    with the count, the rate since this attempt started, the ETA and the last loss. Checked at
    every item (a clock read), so the interval holds however slow the items are; the loss is the
    last one fetched at a log event, never a device sync of its own.

    Attributes:
        total: the last item (step) of the work; None where it is not known in advance.
        start: the item this attempt started from (a resumed run's restored step).
        every_s: seconds between lines.
        unit: what is counted (`step`, `batch`, `run`).
        loss: the last logged training loss and its step, or None before the first log event.
    """

    total: int | None
    start: int
    every_s: float
    started: float = dataclasses.field(default_factory=time.perf_counter)
    loss: tuple[int, float] | None = None
    unit: str = "step"

    def __post_init__(self) -> None:
        self.last = self.started

    def due(self, now: float) -> bool:
        """Whether a line is due at wall-clock time `now` (and if so, starts the next interval)."""
        if now - self.last < self.every_s:
            return False
        self.last = now
        return True

    def text(self, done: int, now: float) -> str:
        """`step 1200/2000 (60%), 41.3 steps/s, ETA 19 s, train/loss 0.0123 (step 1150)`;
        `batch 12, 3.1 batches/s` where the total is not known."""
        elapsed = max(now - self.started, 1e-9)
        rate = (done - self.start) / elapsed
        if self.total is None:
            return f"{self.unit} {done}, {rate:.3g} {plural(self.unit)}/s"
        percent = 100 * done / max(self.total, 1)
        line = f"{self.unit} {done}/{self.total} ({percent:.0f}%), {rate:.3g} {plural(self.unit)}/s"
        line += f", ETA {eta(done - self.start, self.total - self.start, elapsed)}"
        if self.loss is not None:
            line += f", train/loss {self.loss[1]:.4g} (step {self.loss[0]})"
        return line


def bar(
    total: int | None,
    desc: str,
    unit: str = "step",
    initial: int = 0,
    disable: bool = False,
    leave: bool = True,
) -> tqdm:
    """The terminal bar: on stderr, resized with the terminal; `leave=False` erases it when done
    (a step inside longer work, e.g. an evaluation between training steps)."""
    return tqdm(
        total=total,
        initial=initial if total is None else min(initial, total),
        disable=disable,
        unit=unit,
        desc=desc,
        dynamic_ncols=True,
        file=sys.stderr,
        leave=leave,
    )


def track(
    items: Iterable[Item],
    desc: str,
    total: int | None = None,
    unit: str = "item",
    quiet: bool | None = None,
    every_s: float = DEFAULT_EVERY_S,
    logger: logging.Logger | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[Item]:
    """Yields `items`, showing progress: a bar on a terminal (`resolve_quiet(quiet)` false),
    otherwise `<desc>: <unit> 3/10 (30%), 0.5 <unit>s/s, ETA 14 s` on `logger` every `every_s`
    seconds (nothing at all for work that ends sooner). `total` defaults to `len(items)` where
    it has one (`operator.length_hint`); without one there is no percentage or ETA."""
    logger = logger or log
    quiet = resolve_quiet(quiet)
    total = total if total is not None else (operator.length_hint(items) or None)
    line = ProgressLine(total, 0, every_s, started=clock(), unit=unit)
    with bar(total, desc, unit, disable=quiet, leave=False) as shown:
        for done, item in enumerate(items, 1):
            yield item
            shown.update(1)
            if quiet and line.due(clock()):
                logger.info("%s: %s", desc, line.text(done, line.last))


SWEEP_STATES = ("completed", "running", "failed")


def job_states(sweep_dir: str | os.PathLike[str]) -> dict[str, int]:
    """How many jobs below `sweep_dir` have completed, are running, or failed (diverged and
    interrupted runs count as failed): read from each run's `results.json` (written at the end,
    whatever the outcome) or, before it exists, `provenance.json` (written at the start; an
    attempt still marked running whose process is gone from this host was interrupted)."""
    from rnnlab.provenance import process_gone
    from rnnlab.rundir import PROVENANCE_FILE, RESULTS_FILE, read_json

    counts = dict.fromkeys(SWEEP_STATES, 0)
    for started in Path(sweep_dir).glob(f"**/{PROVENANCE_FILE}"):
        results = read_json(started.with_name(RESULTS_FILE))
        if results is None:
            attempts = (read_json(started) or {}).get("attempts") or [{}]
            last = attempts[-1]
            running = last.get("status", "running") == "running" and not process_gone(last)
            counts["running" if running else "failed"] += 1
        else:
            counts["completed" if results.get("status") == "completed" else "failed"] += 1
    return counts


def sweep_line(
    counts: dict[str, int], total: int | None, elapsed_s: float, with_eta: bool = True
) -> str:
    """`sweep: 7/30 jobs done (1 failed), 2 running, 8 min 06 s elapsed, ETA 26 min 40 s` (no ETA
    without a total, or with `with_eta=False`: the line at the end)."""
    finished = counts["completed"] + counts["failed"]
    line = f"sweep: {finished}/{total if total else '?'} jobs done"
    if counts["failed"]:
        line += f" ({counts['failed']} failed)"
    line += f", {counts['running']} running, {format_duration(elapsed_s)} elapsed"
    if total and with_eta:
        line += f", ETA {eta(finished, total, elapsed_s)}"
    return line


class SweepMonitor:
    """A daemon thread that logs `sweep_line` every `every_s` seconds while a sweep runs, from
    the sweep directory alone, so it works alike for jobs run in this process (Hydra's basic
    launcher), in worker processes (joblib) or on a cluster (submitit): a sweep's progress is
    what its run directories say.

    Args:
        sweep_dir: the sweep's root directory.
        total: the number of jobs, or None where the sweeper decides as it goes.
        every_s: seconds between lines.
        logger: where the lines go.
    """

    def __init__(
        self,
        sweep_dir: str | os.PathLike[str],
        total: int | None,
        every_s: float = DEFAULT_EVERY_S,
        logger: logging.Logger | None = None,
    ):
        self.sweep_dir, self.total, self.every_s = Path(sweep_dir), total, every_s
        self.logger = logger or log
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweep-progress", daemon=True)

    def line(self, with_eta: bool = True) -> str:
        elapsed = time.perf_counter() - self.started
        return sweep_line(job_states(self.sweep_dir), self.total, elapsed, with_eta)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.logger.info("%s", self.line(), extra={"job": "[sweep]"})
            except OSError as error:  # a sweep dir on a flaky file system: skip this line
                self.logger.debug("sweep progress: %s", error)

    def start(self) -> SweepMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops the thread and logs the final line."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.logger.info("%s", self.line(with_eta=False), extra={"job": "[sweep]"})


QUIET_LOGGERS = (
    "absl",
    "orbax",
    "jax._src.xla_bridge",
    "asyncio",
    "fontTools",
    "matplotlib",
    "PIL",
)
"""Libraries whose INFO messages are noise to a person at a command line (fontTools logs every
font it subsets into a PDF; a failed read of a damaged checkpoint leaves asyncio futures whose
errors it would log again at garbage collection, after rnnlab.checkpoint reported the damage)."""


class ConsoleFormatter(logging.Formatter):
    """`<prog>: message`, and `<prog>: warning: message` from WARNING up."""

    def __init__(self, prog: str):
        super().__init__("%(message)s")
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"{self.prog}: {level}{super().format(record)}"


@contextlib.contextmanager
def console_logging(prog: str) -> Iterator[None]:
    """rnnlab's INFO messages (progress lines among them) on stderr as `<prog>: ...` lines while
    a command-line tool runs; the logging state is restored after it, for callers in the same
    process such as tests.

    `logging.basicConfig` alone would do nothing after importing orbax: absl calls it first,
    leaving a root handler at WARNING with `LEVEL:name:` prefixes. That handler is reused.
    """
    root = logging.getLogger()
    level = root.level
    plain = [h for h in root.handlers if type(h) is logging.StreamHandler]
    formats = [h.formatter for h in plain]
    added = None
    if not plain:
        added = logging.StreamHandler()
        root.addHandler(added)
        plain = [added]
    for handler in plain:
        handler.setFormatter(ConsoleFormatter(prog))
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    quieted = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        for name, old in quieted.items():
            logging.getLogger(name).setLevel(old)
        if added is not None:
            root.removeHandler(added)
        else:
            for handler, formatter in zip(plain, formats, strict=True):
                handler.setFormatter(formatter)
