"""Faults for tests, injected through `rnnlab.train.train(step_hook=...)`, never through a config.

- `poisoned(step)`: a step hook that turns the float arrays of the training batch of that
  (1-based) step into NaN.
- `killed_after(step)`: a step hook that SIGKILLs the process right after update `step` (when the
  batch of the next one is asked for: a synchronous checkpoint at `step` is complete by then).
- `step_hook(hook)`: runs started through the front end in this process (`rnnlab.cli`) use the
  hook while the context is open.
- `python -m tests.faults [--kill-after-step N] [--kill-after-save-of-step M] -- ARGS`:
  `rnnlab-train ARGS` with those faults, for tests that need a real process to kill. The second
  kills right after `Checkpointer.save` of step M returns: with asynchronous checkpointing the
  step is then still being written.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable, Iterator

import numpy as np

from rnnlab import cli
from rnnlab.tasks.base import Batch

StepHook = Callable[[int, Batch], Batch]


def poisoned(at_step: int) -> StepHook:
    """A hook feeding NaN in every float array of the batch of update `at_step` (1-based)."""

    def hook(step: int, batch: Batch) -> Batch:
        if step != at_step:
            return batch
        floats = [k for k, v in batch.items() if np.issubdtype(np.asarray(v).dtype, np.floating)]
        assert floats, "this task has no float inputs to poison"
        return {k: np.full_like(v, np.nan) if k in floats else v for k, v in batch.items()}

    return hook


def killed_after(after_step: int) -> StepHook:
    """A hook that SIGKILLs the process once update `after_step` (1-based) is done."""

    def hook(step: int, batch: Batch) -> Batch:
        if step == after_step + 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return batch

    return hook


@contextlib.contextmanager
def step_hook(hook: StepHook) -> Iterator[None]:
    """Runs started through `rnnlab.cli` in this process use `hook` while the context is open."""
    train = cli.train
    cli.train = functools.partial(train, step_hook=hook)
    try:
        yield
    finally:
        cli.train = train


def kill_after_save_of(step: int) -> None:
    """SIGKILL right after `Checkpointer.save` of `step` returns (mid-write when it is async)."""
    from rnnlab import checkpoint

    save = checkpoint.Checkpointer.save

    def save_then_die(self: checkpoint.Checkpointer, at: int, *args, **kwargs) -> None:
        save(self, at, *args, **kwargs)
        if at == step:
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.Checkpointer.save = save_then_die


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.faults")
    parser.add_argument("--kill-after-step", type=int)
    parser.add_argument("--kill-after-save-of-step", type=int)
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.kill_after_save_of_step is not None:
        kill_after_save_of(args.kill_after_save_of_step)
    train_args = [a for a in args.train_args if a != "--"]
    sys.argv = ["rnnlab-train", *train_args]
    hook = killed_after(args.kill_after_step) if args.kill_after_step is not None else None
    with step_hook(hook) if hook is not None else contextlib.nullcontext():
        cli.train_main()


if __name__ == "__main__":
    main(sys.argv[1:])
