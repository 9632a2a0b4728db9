"""Orbax checkpoints of the whole training state: keep the last k and the best.

Each checkpoint is one step directory `<run_dir>/checkpoints/<step>/` with two items:

- `state`: the training-state pytree (params, optimiser state, step, PRNG key and, for stateful
  tasks, the truncated-BPTT carry), saved with `StandardSave` and restored onto a target of the
  same structure (shapes, dtypes and shardings come from the target);
- `meta`: JSON (data position, best-so-far, elapsed time, the configuration the run was started
  with), so a resumed run continues exactly where the checkpoint left off.

Retention: one `CheckpointManager` with a preservation policy that keeps a step if *any* of
`LatestN(keep_last)` and `BestN(n=1)` keeps it, the best ranked by a validation metric passed
with each save. Steps saved without metrics (between evaluations) are never "best", so they go
once they are older than the last `keep_last`. (The older `max_to_keep` + `best_fn` options keep
the best k *instead of* the latest ones, which loses the newest state to resume from.)

Orbax writes every step into a temporary directory and renames it when complete, so a run killed
while saving leaves no half-written step behind: `latest_step` only sees finished ones.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

CHECKPOINT_DIR = "checkpoints"


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """What to keep and how to save.

    Attributes:
        keep_last: number of most recent checkpoints to keep (>= 1).
        best_metric: metric ranking checkpoints (e.g. "valid/loss"); None keeps no best.
        best_mode: "min" or "max".
        async_save: write in a background thread (training continues meanwhile).
    """

    keep_last: int = 2
    best_metric: str | None = None
    best_mode: str = "min"
    async_save: bool = False

    def __post_init__(self) -> None:
        if self.keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {self.keep_last}")
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {self.best_mode!r}")


def _finite_metrics(metrics: Mapping[str, Any] | None, key: str | None) -> dict[str, float] | None:
    """Metrics fit to rank a checkpoint: the ranking metric present and finite, else None."""
    if metrics is None or key is None or key not in metrics:
        return None
    values = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    return values if math.isfinite(values.get(key, math.nan)) else None


class Checkpointer:
    """Saves and restores training states in `directory` (see the module docstring).

    Args:
        directory: where the step directories go (created if missing).
        config: retention and saving options.
    """

    def __init__(self, directory: str | os.PathLike[str], config: CheckpointConfig):
        self.directory = Path(directory).absolute()
        self.config = config
        keep: list[Any] = [policies.LatestN(n=config.keep_last)]
        best_fn = None
        if config.best_metric is not None:
            metric = config.best_metric
            best_fn = lambda m: m[metric]
            keep.append(
                policies.BestN(
                    get_metric_fn=best_fn,
                    reverse=config.best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep),
            best_fn=best_fn,
            best_mode=config.best_mode,
            enable_async_checkpointing=config.async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of every kept checkpoint, ascending."""
        return sorted(self.manager.all_steps())

    def best_step(self) -> int | None:
        """The kept step with the best ranking metric, or None when none has metrics."""
        if self.config.best_metric is None:
            return None
        ranked = [(s, v) for s in self.all_steps() if (v := self.ranking_metric(s)) is not None]
        if not ranked:
            return None
        pick = min if self.config.best_mode == "min" else max
        return pick(ranked, key=lambda item: item[1])[0]

    def ranking_metric(self, step: int) -> float | None:
        """The ranking metric `step` was saved with, or None."""
        metrics = _finite_metrics(self.manager.metrics(step), self.config.best_metric)
        return None if metrics is None else metrics[self.config.best_metric]

    def save(
        self,
        step: int,
        state: Any,
        meta: Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        """Saves `state` and `meta` as step `step`; `metrics` (if finite) rank it as best."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta))
        )
        self.manager.save(
            step, args=args, metrics=_finite_metrics(metrics, self.config.best_metric), force=True
        )

    def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
        """The state and meta of `step`, the state laid out like `target` (shardings included).

        Args:
            step: a kept step.
            target: a state pytree (arrays or `jax.ShapeDtypeStruct`s) of the saved structure.
        """
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], dict(restored["meta"])

    def restore_meta(self, step: int) -> dict[str, Any]:
        """Only the JSON meta of `step`."""
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def wait(self) -> None:
        """Blocks until a background save has finished."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def restore_params(
    run_dir: str | os.PathLike[str], target_params: Any, step: int | str | None = None
) -> tuple[Any, int]:
    """The model parameters saved in a run directory (e.g. for sampling or evaluation).

    Args:
        run_dir: a run directory holding `checkpoints/`.
        target_params: params of the same structure (e.g. from `model.init`), for shapes/dtypes.
        step: a step, "best" (needs a best metric in the saved meta) or None for the latest.

    Returns:
        `(params, step)`.

    Raises:
        FileNotFoundError: no checkpoint in `run_dir`.
    """
    directory = Path(run_dir) / CHECKPOINT_DIR
    if not directory.is_dir():
        raise FileNotFoundError(f"no checkpoints in {directory}")
    manager = ocp.CheckpointManager(
        directory.absolute(),
        options=ocp.CheckpointManagerOptions(read_only=True, create=False),
        item_names=("state", "meta"),
    )
    try:
        steps = sorted(manager.all_steps())
        if not steps:
            raise FileNotFoundError(f"no complete checkpoint in {directory}")
        if step is None:
            step = steps[-1]
        elif step == "best":
            meta = manager.restore(steps[-1], args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            best = meta["meta"].get("best_step")
            if best is None or best not in steps:
                raise FileNotFoundError(f"no best checkpoint recorded in {directory}")
            step = best
        step = int(step)
        if step not in steps:
            raise FileNotFoundError(f"step {step} not in {directory} (kept: {steps})")
        abstract = {
            "params": jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target_params)
        }
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=abstract,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                    partial_restore=True,
                )
            ),
        )
    finally:
        manager.close()
    return restored["state"]["params"], step
