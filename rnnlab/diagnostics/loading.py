"""Rebuild a run's parameters from its directory (checkpoints), given its task and model.

A run directory written by `rnnlab-train` holds `.hydra/config.yaml` (the composed config) and
`checkpoints/<step>/`. The front end builds the task and model from the config exactly as
`rnnlab.cli.build` did for the run (`rnnlab.cli.saved_run`: same cell, backbone fields,
`trainer.unroll` override, task settings and seed); `restore_run` then restores the parameters of
a checkpoint, or returns the run's own initial parameters (`init=True`: the `PRNGKey(seed)` split
that `rnnlab.train` initialises from), so "at initialisation" diagnostics see the very parameters
the run started from. `rnnlab.cli.restore_run_dir` does both from a directory alone (the front
end builds the task and model from the saved config).

A directory that is not a run, a run without the checkpoint asked for, or a damaged config is a
user error (`RunNotFoundError`, `ConfigError`) whose message names the file and the fix.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax

from rnnlab.checkpoint import parse_checkpoint, restore_params, saved_steps
from rnnlab.errors import RunNotFoundError
from rnnlab.rundir import CHECKPOINT_DIR
from rnnlab.tasks.base import Batch, Task
from rnnlab.typing import Params

log = logging.getLogger(__name__)


def check_checkpoint(run_dir: str | os.PathLike[str], checkpoint: str | int | None) -> None:
    """Checks, without opening a checkpoint, that `run_dir` has one to restore for `checkpoint`
    (see `parse_checkpoint`).

    Raises:
        RunNotFoundError: the run has no checkpoint, or not the step asked for.
    """
    step = parse_checkpoint(checkpoint)
    steps = saved_steps(Path(run_dir) / CHECKPOINT_DIR)
    if not steps:
        raise RunNotFoundError(
            f"{run_dir} has no checkpoints ({Path(run_dir) / CHECKPOINT_DIR} is missing or "
            "empty: the run saved none yet); use --init for its initial parameters"
        )
    if isinstance(step, int) and step not in steps:
        raise RunNotFoundError(
            f"--checkpoint {step}: {run_dir} keeps checkpoints at steps {steps}; choose one of "
            'those, "best" or "latest"'
        )


class LoadedRun(NamedTuple):
    """What `restore_run` (and `rnnlab.cli.restore_run_dir`) return.

    Attributes:
        cfg: the run's composed config as plain dicts and lists (`${...}` unresolved).
        task: the task, built with the run's seed and training batch size.
        model: the Flax model (`task.build_model(cell, backbone)`).
        params: `variables["params"]` of the checkpoint (or the initial ones).
        step: the checkpoint's step, or None for initial parameters.
    """

    cfg: Mapping[str, Any]
    task: Task
    model: nn.Module
    params: Params
    step: int | None


def initial_params(task: Task, model: nn.Module, seed: int) -> Params:
    """The parameters the run started from (`rnnlab.train`'s init key of `PRNGKey(seed)`)."""
    init_key, _ = jax.random.split(jax.random.PRNGKey(seed))
    return task.init_params(model, init_key)


def restore_run(
    run_dir: str | os.PathLike[str],
    cfg: Mapping[str, Any],
    task: Task,
    model: nn.Module,
    seed: int,
    checkpoint: str | int | None = "best",
    *,
    init: bool = False,
) -> LoadedRun:
    """The parameters of a run directory's checkpoint for its built `task` and `model`.

    Args:
        run_dir: a run directory of `rnnlab-train` (`checkpoints/`).
        cfg, task, model, seed: the run's, as `rnnlab.cli.saved_run` builds them.
        checkpoint: "best" (falls back to the latest, with a warning, when the run recorded no
            best), "latest"/None, or a step.
        init: return the run's initial parameters instead (no checkpoint needed).

    Raises:
        RunNotFoundError (a FileNotFoundError): no (matching) checkpoint.
        ConfigError: a bad `checkpoint` value.
        RunDirError: the checkpoint is damaged.
    """
    params = initial_params(task, model, seed)
    if init:
        return LoadedRun(cfg, task, model, params, None)
    step = parse_checkpoint(checkpoint)
    try:
        params, used = restore_params(run_dir, params, step)
    except RunNotFoundError as err:
        if step != "best" or "no best checkpoint" not in str(err):
            raise
        log.warning("%s: no best checkpoint recorded; using the latest", run_dir)
        params, used = restore_params(run_dir, params, None)
    return LoadedRun(cfg, task, model, params, int(used))


def first_batch(task: Task, split: str | None = None, batch_size: int | None = None) -> Batch:
    """The first evaluation batch of `split` (the task's first split by default), cut to
    `batch_size` examples (every leaf's leading axis is the batch)."""
    split = task.splits[0] if split is None else split
    batch = next(iter(task.eval_batches(split)))
    if batch_size is None:
        return batch
    return {k: v[:batch_size] if getattr(v, "ndim", 0) else v for k, v in batch.items()}
