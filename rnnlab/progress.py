"""Progress for every long piece of work: a tqdm bar with ETA on a terminal; elsewhere (a file,
a scheduler's log, CI) a compact line at a steady wall-clock interval through `logging`.

    for batch in track(batches, total=len(batches), desc="valid", unit="batch"):
        ...

Training keeps its own bar (it adds the loss), but shares `ProgressLine` and `format_duration`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
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
        total: the last item (step) of the work.
        start: the item this attempt started from (a resumed run's restored step).
        every_s: seconds between lines.
        unit: what is counted (`step`, `batch`, `run`).
        loss: the last logged training loss and its step, or None before the first log event.
    """

    total: int
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
        """`step 1200/2000 (60%), 41.3 steps/s, ETA 19 s, train/loss 0.0123 (step 1150)`."""
        elapsed = max(now - self.started, 1e-9)
        rate = (done - self.start) / elapsed
        percent = 100 * done / max(self.total, 1)
        line = f"{self.unit} {done}/{self.total} ({percent:.0f}%), {rate:.3g} {self.unit}s/s"
        line += f", ETA {eta(done - self.start, self.total - self.start, elapsed)}"
        if self.loss is not None:
            line += f", train/loss {self.loss[1]:.4g} (step {self.loss[0]})"
        return line


def bar(
    total: int,
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
        initial=min(initial, total),
        disable=disable,
        unit=unit,
        desc=desc,
        dynamic_ncols=True,
        file=sys.stderr,
        leave=leave,
    )


def track(
    items: Iterable[Item],
    total: int,
    desc: str,
    unit: str = "item",
    quiet: bool | None = None,
    every_s: float = DEFAULT_EVERY_S,
    logger: logging.Logger | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[Item]:
    """Yields `items`, showing progress: a bar on a terminal (`resolve_quiet(quiet)` false),
    otherwise `<desc>: <unit> 3/10 (30%), 0.5 <unit>s/s, ETA 14 s` on `logger` every `every_s`
    seconds (nothing at all for work that ends sooner)."""
    logger = logger or log
    quiet = resolve_quiet(quiet)
    line = ProgressLine(total, 0, every_s, started=clock(), unit=unit)
    with bar(total, desc, unit, disable=quiet, leave=False) as shown:
        for done, item in enumerate(items, 1):
            yield item
            shown.update(1)
            if quiet and line.due(clock()):
                logger.info("%s: %s", desc, line.text(done, line.last))
