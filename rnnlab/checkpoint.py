"""Orbax checkpoints of the whole training state: keep the last k and the best; verify them.

Each checkpoint is one step directory `<run_dir>/checkpoints/<step>/` with Orbax's items:

- `state`: the training-state pytree (params, optimiser state, step, PRNG key and, for stateful
  tasks, the truncated-BPTT carry), saved with `StandardSave` and restored onto a target of the
  same structure (shapes, dtypes and shardings come from the target);
- `meta`: JSON (data position, best-so-far, elapsed time, the configuration the run was started
  with), so a resumed run continues exactly where the checkpoint left off;
- `metrics`: the validation metrics that rank it (Orbax's own, for "best" retention).

Integrity. Orbax checks neither the bytes it reads back nor its JSON items, so a damaged file can
restore silently wrong numbers. Every save therefore records in the meta, under `integrity`, a
SHA-256 digest of every state leaf (its path, dtype, shape and bytes, hashed on the host from the
state being saved), the ranking metrics, and a digest of the meta itself. `restore` recomputes
them from what it read: a step that fails to restore or to verify raises `CheckpointDamaged`.
`restore_latest` walks from the newest step back, moves each damaged step aside to
`<run_dir>/damaged/<step>-<time>/` (renamed, never deleted, with a `.reason` file beside it),
warns naming it and why, and returns the newest step that verifies. A state whose saved leaves
differ from the target's (another model) is `CheckpointMismatch`, a user error, not damage.

Retention: one `CheckpointManager` with a preservation policy that keeps a step if *any* of
`LatestN(keep_last)` and `BestN(n=1)` keeps it, the best ranked by a validation metric passed
with each save. Steps saved without metrics (between evaluations) are never "best", so they go
once they are older than the last `keep_last`. (The older `max_to_keep` + `best_fn` options keep
the best k *instead of* the latest ones, which loses the newest state to resume from.)

Orbax writes every step into a temporary directory and renames it when complete, so a run killed
while saving leaves no half-written step behind: `latest_step` only sees finished ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from rnnlab.errors import ConfigError, RunDirError, RunNotFoundError, UserError
from rnnlab.rundir import CHECKPOINT_DIR, DAMAGED_DIR, timestamp

log = logging.getLogger(__name__)

INTEGRITY_KEY = "integrity"
"""Meta key of the digests (stripped from the meta that `restore` returns)."""
META_FILE = "meta/metadata"
"""Where Orbax's `JsonSave` puts the `meta` item inside a step directory."""
ORBAX_JSON_FILES = ("metrics/metrics",)
"""Per-step JSON files that `CheckpointManager` parses when it opens a directory: one damaged
file there would stop it from opening at all, so they are checked first."""


class CheckpointDamaged(Exception):
    """A checkpoint failed to restore or to verify against its recorded digests."""

    def __init__(self, step: int, reason: str):
        self.step = step
        self.reason = reason
        super().__init__(f"checkpoint step {step} is damaged: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.step, self.reason)


class CheckpointMismatch(UserError):
    """A checkpoint holds a state of another structure than the run's (another model)."""


_CLOSED_LOOP_NOISE = re.compile(
    r"Traceback \(most recent call last\):\n(?:[ \t].*\n)*RuntimeError: Event loop is closed\n"
)


@contextlib.contextmanager
def _quiet_failed_reads(settle_s: float = 0.3) -> Iterator[None]:
    """Keeps the noise of a failed Orbax read off the terminal.

    When one array of a damaged step fails to read, Orbax's event loop closes while TensorStore
    still has other reads in flight; as each finishes, TensorStore prints a "RuntimeError: Event
    loop is closed" traceback straight to file descriptor 2, from its own threads. This sends
    fd 2 to a temporary file while a restore runs (and, after a failure, for `settle_s` more,
    while those reads finish), then writes back everything but those tracebacks.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            if failed:
                time.sleep(settle_s)
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = _CLOSED_LOOP_NOISE.sub("", sink.read().decode("utf-8", "replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def _host_value(leaf: Any) -> np.ndarray:
    """The whole value of a (possibly sharded, possibly multi-process) array on this host."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(jax.device_get(leaf))


def leaf_digests(tree: Any) -> dict[str, str]:
    """`{leaf path: "dtype[shape]:sha256"}` of every array in `tree` (hashed on the host)."""
    digests = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        value = np.asarray(_host_value(leaf), order="C")
        digest = hashlib.sha256(value.tobytes()).hexdigest()
        digests[jax.tree_util.keystr(path)] = f"{value.dtype}{list(value.shape)}:{digest}"
    return digests


def _json_digest(data: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of `data` (sorted keys), as stored and as read back."""
    canonical = json.dumps(json.loads(json.dumps(data)), sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def sealed_meta(
    meta: Mapping[str, Any], state: Any, metrics: Mapping[str, float] | None
) -> dict[str, Any]:
    """`meta` with its `integrity` record: state leaf digests, ranking metrics, meta digest."""
    record = {"algorithm": "sha256", "state": leaf_digests(state), "metrics": metrics}
    record["meta"] = _json_digest({"meta": dict(meta), "record": record})
    return {**meta, INTEGRITY_KEY: record}


def open_meta(step: int, stored: Mapping[str, Any]) -> tuple[dict[str, Any], dict | None]:
    """`(meta, integrity record)` of a stored meta; the record is None for a checkpoint saved
    before digests were recorded.

    Raises:
        CheckpointDamaged: the meta does not match its own digest.
    """
    meta = {k: v for k, v in stored.items() if k != INTEGRITY_KEY}
    record = stored.get(INTEGRITY_KEY)
    if record is None:
        return meta, None
    body = {k: v for k, v in record.items() if k != "meta"} if isinstance(record, dict) else {}
    if not isinstance(record, dict) or record.get("meta") != _json_digest(
        {"meta": meta, "record": body}
    ):
        raise CheckpointDamaged(step, "its meta does not match the digest recorded with it")
    return meta, record


def verify_state(step: int, restored: Any, record: Mapping[str, Any]) -> None:
    """Raises `CheckpointDamaged` unless every restored leaf matches its recorded digest."""
    saved = record["state"]
    for path, digest in leaf_digests(restored).items():
        if saved.get(path) != digest:
            raise CheckpointDamaged(
                step, f"leaf {path} does not match the digest recorded when it was saved"
            )


def check_structure(step: int, record: Mapping[str, Any] | None, target: Any, where: Path) -> None:
    """Raises `CheckpointMismatch` when the saved leaves (paths, dtypes, shapes) are not the
    target's: the checkpoint belongs to another model, it is not damaged."""
    if record is None:
        return
    wanted = {
        jax.tree_util.keystr(path): f"{np.dtype(leaf.dtype)}{list(np.shape(leaf))}"
        for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]
    }
    saved = {path: digest.split(":", 1)[0] for path, digest in record["state"].items()}
    if any(saved.get(path) != layout for path, layout in wanted.items()):
        differ = sorted(p for p, layout in wanted.items() if saved.get(p) != layout)[:3]
        raise CheckpointMismatch(
            f"checkpoint step {step} in {where} holds a state of another structure "
            f"(e.g. {', '.join(differ)}): it was saved by another model or rnnlab version. "
            "Use the run's original settings, or another run directory."
        )


def saved_steps(directory: Path) -> list[int]:
    """The step directories in `directory` (finished saves: Orbax renames a step directory to
    its number only when it is complete), ascending."""
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def peek_saved_config(directory: Path) -> tuple[int | None, dict[str, Any] | None]:
    """`(newest step, config saved with it)`, reading files only: no manager is opened, so
    nothing is created or cleaned up (what a refused run needs). The config is that of the
    newest step whose meta verifies, None if none does; the step is None without checkpoints."""
    steps = saved_steps(directory)
    for step in reversed(steps):
        try:
            stored = json.loads((directory / str(step) / META_FILE).read_bytes().decode("utf-8"))
            meta, _ = open_meta(step, stored)
        except (OSError, ValueError, CheckpointDamaged):
            continue
        return steps[-1], meta.get("config")
    return (steps[-1] if steps else None), None


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
    """Saves, verifies and restores training states in `directory` (see the module docstring).

    Args:
        directory: where the step directories go (`<run_dir>/checkpoints`; created if missing
            unless `read_only`). Damaged steps are moved to its sibling `damaged/`.
        config: retention and saving options.
        read_only: open for restoring only (sampling, diagnostics): nothing is created, saved
            or moved.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        config: CheckpointConfig,
        read_only: bool = False,
    ):
        self.directory = Path(directory).absolute()
        self.damaged_dir = self.directory.parent / DAMAGED_DIR
        self.config = config
        self.read_only = read_only
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
        unopenable = self._unopenable_steps()
        if read_only:
            if unopenable:
                step, reason = unopenable[0]
                raise RunDirError(
                    f"checkpoint step {step} in {self.directory} is damaged: {reason}; resume "
                    "training in that run directory, which moves damaged steps aside"
                )
            options = ocp.CheckpointManagerOptions(read_only=True, create=False)
        else:
            for step, reason in unopenable:
                self._move_aside(step, reason)
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

    def _unopenable_steps(self) -> list[tuple[int, str]]:
        """`(step, reason)` of the steps whose Orbax JSON files (`ORBAX_JSON_FILES`) do not
        parse, which would stop `CheckpointManager` from opening the directory at all."""
        found = []
        for step in saved_steps(self.directory):
            for name in ORBAX_JSON_FILES:
                path = self.directory / str(step) / name
                try:
                    if path.exists():
                        json.loads(path.read_bytes().decode("utf-8"))
                except (OSError, ValueError) as err:
                    found.append((step, f"{name} is unreadable ({err})"))
                    break
        return found

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of every kept checkpoint, ascending."""
        return sorted(self.manager.all_steps())

    def best_step(self, metric: str | None = None, mode: str | None = None) -> int | None:
        """The kept step with the best ranking metric (the config's, or `metric` and `mode`, e.g.
        what a saved run ranked by), or None when none has metrics."""
        metric = self.config.best_metric if metric is None else metric
        mode = self.config.best_mode if mode is None else mode
        if metric is None:
            return None
        values = [(s, self.ranking_metric(s, metric)) for s in self.all_steps()]
        ranked = [(s, v) for s, v in values if v is not None]
        if not ranked:
            return None
        pick = min if mode == "min" else max
        return pick(ranked, key=lambda item: item[1])[0]

    def ranking_metric(self, step: int, metric: str | None = None) -> float | None:
        """The ranking metric (the config's, or `metric`) `step` was saved with, or None."""
        metric = self.config.best_metric if metric is None else metric
        metrics = _finite_metrics(self.manager.metrics(step), metric)
        return None if metrics is None else metrics[metric]

    def save(
        self,
        step: int,
        state: Any,
        meta: Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        """Saves `state` and `meta` as step `step`; `metrics` (if finite) rank it as best.

        The digests of `sealed_meta` are computed here, synchronously, from `state` itself.
        """
        ranking = _finite_metrics(metrics, self.config.best_metric)
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            meta=ocp.args.JsonSave(sealed_meta(meta, state, ranking)),
        )
        self.manager.save(step, args=args, metrics=ranking, force=True)

    def _stored_meta(self, step: int) -> tuple[dict[str, Any], dict | None]:
        """The verified meta of `step` and its integrity record (see `open_meta`)."""
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
            stored = restored["meta"]
            if not isinstance(stored, Mapping):
                raise ValueError(f"meta holds a {type(stored).__name__}")
        except Exception as err:  # any failure to read it is damage: Orbax raises many kinds
            raise CheckpointDamaged(step, f"its meta cannot be read ({_short(err)})") from err
        meta, record = open_meta(step, stored)
        if record is not None:
            try:
                ranking = self.manager.metrics(step) or None
            except Exception as err:
                raise CheckpointDamaged(
                    step, f"its metrics cannot be read ({_short(err)})"
                ) from err
            if ranking != (record["metrics"] or None):
                raise CheckpointDamaged(step, "its metrics differ from those saved with it")
        return meta, record

    def restore_meta(self, step: int) -> dict[str, Any]:
        """Only the JSON meta of `step`, verified against its digest.

        Raises:
            CheckpointDamaged: the meta cannot be read or does not verify.
        """
        return self._stored_meta(step)[0]

    def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
        """The verified state and meta of `step`, the state laid out like `target`.

        Args:
            step: a kept step.
            target: a state pytree (arrays or `jax.ShapeDtypeStruct`s) of the saved structure;
                with `read_only`, a subtree of it may be given (e.g. `{"params": ...}`: only
                those leaves are read).

        Raises:
            CheckpointDamaged: the step cannot be read or does not match its digests.
            CheckpointMismatch: it holds a state of another structure than `target`.
        """
        meta, record = self._stored_meta(step)
        check_structure(step, record, target, self.directory)
        if record is None:
            log.warning(
                "checkpoint step %d in %s has no digests (saved by an older rnnlab): restored "
                "without verification",
                step,
                self.directory,
            )
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        try:
            with _quiet_failed_reads():
                restored = self.manager.restore(
                    step, args=ocp.args.Composite(state=self._restore_args(abstract))
                )["state"]
        except Exception as err:  # TensorStore, JSON, pytree errors: all mean a damaged step
            raise CheckpointDamaged(step, f"its state cannot be read ({_short(err)})") from err
        if record is not None:
            verify_state(step, restored, record)
        return restored, meta

    def _restore_args(self, abstract: Any) -> Any:
        """How to read the state item: a writable manager must keep `StandardSave`'s handler for
        it (so the full state, `StandardRestore`); a read-only one may read a subtree."""
        if not self.read_only:
            return ocp.args.StandardRestore(abstract)
        return ocp.args.PyTreeRestore(
            item=abstract,
            restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
            partial_restore=True,
        )

    def restore_latest(self, target: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """`(step, state, meta)` of the newest step that restores and verifies, or None when
        the directory holds no checkpoint. Damaged steps on the way are moved aside.

        Raises:
            RunDirError: there were checkpoints but none verifies (all moved aside).
            CheckpointMismatch: a step holds a state of another structure.
        """
        moved = []
        for step in reversed(self.all_steps()):
            try:
                state, meta = self.restore(step, target)
            except CheckpointDamaged as err:
                moved.append(self.quarantine(err))
                continue
            if moved:
                log.warning("Resuming from step %d, the newest checkpoint that verifies", step)
            return step, state, meta
        if moved:
            raise RunDirError(
                f"no checkpoint in {self.directory} verifies: all were damaged and have been "
                f"moved to {self.damaged_dir}. To start this run again from step 0 in the same "
                "directory, re-run with trainer.resume=false."
            )
        return None

    def quarantine(self, damage: CheckpointDamaged) -> Path:
        """Moves the damaged step aside (see `_move_aside`) and returns where it went."""
        return self._move_aside(damage.step, damage.reason)

    def _move_aside(self, step: int, reason: str) -> Path:
        """Renames `<directory>/<step>` to `<run_dir>/damaged/<step>-<time>` with a `.reason`
        file beside it, warns naming both, and lets the manager forget the step."""
        if self.read_only:
            raise RuntimeError("a read-only Checkpointer moves nothing")
        self.damaged_dir.mkdir(parents=True, exist_ok=True)
        target = self.damaged_dir / f"{step}-{timestamp()}"
        os.replace(self.directory / str(step), target)
        target.with_name(target.name + ".reason").write_text(reason + "\n")
        log.warning(
            "Checkpoint step %d is damaged (%s); moved it aside to %s", step, reason, target
        )
        if hasattr(self, "manager"):
            self.manager.reload()
        return target

    def wait(self) -> None:
        """Blocks until a background save has finished."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def _short(err: BaseException, limit: int = 160) -> str:
    """`Type: first line of the message`, cut to `limit` characters (Orbax's are long)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


CHECKPOINT_HELP = '"best", "latest" or a step (an integer >= 0)'
"""The checkpoints `restore_params` can be asked for (the `--checkpoint` of the tools)."""


def parse_checkpoint(checkpoint: str | int | None) -> str | int | None:
    """`"best"`, `"latest"`/None (-> None) or a step (`"1500"` -> 1500).

    Raises:
        ConfigError (a ValueError): anything else, e.g. a negative step or "last".
    """
    if checkpoint is None or checkpoint == "latest":
        return None
    if isinstance(checkpoint, int) and not isinstance(checkpoint, bool) and checkpoint >= 0:
        return checkpoint
    if isinstance(checkpoint, str) and checkpoint.isdigit():
        return int(checkpoint)
    if checkpoint != "best":
        raise ConfigError(f"--checkpoint must be {CHECKPOINT_HELP}, got {checkpoint!r}")
    return checkpoint


def restore_params(
    run_dir: str | os.PathLike[str], target_params: Any, step: int | str | None = None
) -> tuple[Any, int]:
    """The verified model parameters saved in a run directory (e.g. for sampling).

    Nothing in the run directory is changed: a damaged checkpoint is reported, not moved.

    Args:
        run_dir: a run directory holding `checkpoints/`.
        target_params: params of the same structure (e.g. from `model.init`), for shapes/dtypes.
        step: a step, "best" (needs a best metric in the saved meta) or None for the latest.

    Returns:
        `(params, step)`.

    Raises:
        RunNotFoundError (a FileNotFoundError): no checkpoint in `run_dir`, or not the one
            asked for.
        RunDirError: the checkpoint is damaged.
        CheckpointMismatch: it holds another model's parameters.
    """
    directory = Path(run_dir) / CHECKPOINT_DIR
    if not directory.is_dir():
        raise RunNotFoundError(f"no checkpoints in {directory}: the run saved none yet")
    checkpointer = Checkpointer(directory, CheckpointConfig(), read_only=True)
    try:
        steps = checkpointer.all_steps()
        if not steps:
            raise RunNotFoundError(f"no complete checkpoint in {directory}")
        if step is None:
            step = steps[-1]
        elif step == "best":
            best = _kept_best(checkpointer, _readable_meta(checkpointer, steps[-1]))
            if best is None or best not in steps:
                raise RunNotFoundError(
                    f"no best checkpoint recorded in {directory}; ask for the latest instead"
                )
            step = best
        step = int(step)
        if step not in steps:
            raise RunNotFoundError(
                f"checkpoint step {step} is not in {directory}: it keeps steps {steps}"
            )
        try:
            restored, _ = checkpointer.restore(step, {"params": target_params})
        except CheckpointDamaged as err:
            raise RunDirError(
                f"{err} (in {directory}); choose another checkpoint (kept: {steps}), or resume "
                "training in that run directory, which moves damaged steps aside"
            ) from err
    finally:
        checkpointer.close()
    return restored["params"], step


def _kept_best(checkpointer: Checkpointer, meta: Mapping[str, Any]) -> int | None:
    """The kept step ranked best by the metric the run ranked by (in the meta's `ranking`):
    the same step the trainer scores; `best_step` for runs saved without a ranking."""
    ranking = meta.get("ranking")
    if not ranking:
        return meta.get("best_step")
    return checkpointer.best_step(ranking["metric"], ranking["mode"])


def _readable_meta(checkpointer: Checkpointer, step: int) -> dict[str, Any]:
    """The verified meta of `step`, or a `RunDirError` naming the damaged step."""
    try:
        return checkpointer.restore_meta(step)
    except CheckpointDamaged as err:
        raise RunDirError(f"{err} (in {checkpointer.directory})") from err
