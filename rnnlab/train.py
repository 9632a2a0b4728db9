"""The training loop: one jitted, data-parallel step; evaluation; checkpoints; logs; resume.

The whole training state is one pytree (a dict):

    {"params": ..., "opt_state": ..., "step": int32, "key": PRNG key[, "carry": TBPTT carry]}

Update `s` (0-based) reads `task.train_batch(s)` (a pure function of `(seed, s)`) and the dropout
key `fold_in(key, s)`, so the state after `s` updates determines the rest of the run. A run
resumed from the checkpoint of step `s` therefore ends with bit-identical parameters to an
uninterrupted run (on CPU, where XLA is deterministic).

The step keeps the previous state when the loss or the gradient is not finite (selected on
device), and the loop stops with `NonFiniteLossError`: nothing non-finite is ever saved, and the
last good checkpoint stays on disk. A finite loss that grows past `divergence_factor` times the
run's first loss stops it the same way (`LossExplodedError`), before that state is saved.

A re-run in an existing run directory is checked against what the directory holds before
anything is written (`check_run_dir`): a refused run (another experiment, `resume=false` over
checkpoints) raises `RunDirError` and leaves every file byte-identical. Resuming restores the
newest checkpoint that verifies against its digests; damaged ones are moved aside
(`rnnlab.checkpoint`).

The batch is split over every device along a "data" mesh axis and the state is replicated
(`rnnlab.distributed`); `jax.jit` inserts the gradient all-reduce.

This module never imports Hydra: it takes built objects (task, model, optimiser) and plain
config dataclasses. `rnnlab.cli` is the Hydra front end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from rnnlab import distributed
from rnnlab.checkpoint import CheckpointConfig, CheckpointDamaged, Checkpointer, peek_saved_config
from rnnlab.checks import check_choice, check_float, check_int
from rnnlab.errors import ConfigError, RunDirError, UserError
from rnnlab.models import count_params
from rnnlab.optim import Schedule
from rnnlab.provenance import ProvenanceRecord
from rnnlab.rundir import CHECKPOINT_DIR, METRICS_FILE, PROVENANCE_FILE, RESULTS_FILE, read_json
from rnnlab.tasks.base import Batch, Task
from rnnlab.writers import LoggerConfig, RunWriter, write_results

log = logging.getLogger(__name__)

State = dict[str, Any]
SAMPLE_STREAM = 0x5A3
"""`fold_in` constant of the key stream used for text samples (apart from dropout keys)."""
STRICT_PREFIXES = ("model.", "task.", "seed", "trainer.batch_size")
"""Config keys a resumed run must share with its checkpoint (else the run would mix two
experiments or a different data stream)..."""
LOOSE_SUFFIXES = ("path", "eval_batch_size", "eval_batches", "eval_max_windows", "eval_max_batches")
"""...except where the data lives and how much of it evaluation reads."""


@dataclasses.dataclass
class TrainerConfig:
    """How long and how to train (schema of `conf/trainer/`).

    Attributes:
        steps: training updates (ignored when `epochs` is set).
        epochs: passes over the training data (tasks with a dataset); None to use `steps`.
        batch_size: global batch size, split over all devices.
        eval_every: steps between evaluations (also at the last step).
        checkpoint_every: steps between checkpoints (also at the last step, and at every new
            best evaluation so the best state is always on disk).
        keep_last: most recent checkpoints kept.
        keep_best: also keep the best checkpoint by `best_metric`.
        best_metric: validation metric ranking checkpoints; None uses the task's (e.g.
            `valid/mse`, `valid/accuracy`).
        best_mode: "min" or "max"; None uses the task's.
        async_checkpointing: save in the background while training continues.
        unroll: `lax.scan` unroll factor, overriding the model's (a speed knob).
        resume: continue from the latest checkpoint in the run directory; with False, a run
            directory that holds checkpoints is an error (nothing is overwritten).
        quiet: no progress bar; None means quiet when `CI` is set or stderr is not a terminal.
        distributed: "auto" joins a multi-process job when the environment names one (SLURM,
            MPI, `JAX_COORDINATOR_ADDRESS`); "off" never does.
        compilation_cache_dir: JAX's persistent compilation cache; None or "" disables it.
        sample_tokens: length of the text sample logged at each evaluation (language models).
        fault_nan_at_step: testing aid: feed NaN inputs at this step (1-based).
        fault_kill_at_step: testing aid: SIGKILL the process right after this step (1-based).
        skip_finished: return at once when the run directory already holds the results of a
            completed run with the same config (what makes re-running an interrupted sweep
            skip its finished jobs); False trains/evaluates again from the last checkpoint.
        divergence_factor: stop the run as diverged when a training loss exceeds this many
            times the run's first loss (e.g. a learning rate far too large); None never does.
    """

    steps: int = 2000
    epochs: int | None = None
    batch_size: int = 64
    eval_every: int = 250
    checkpoint_every: int = 500
    keep_last: int = 2
    keep_best: bool = True
    best_metric: str | None = None
    best_mode: str | None = None
    async_checkpointing: bool = False
    unroll: int | None = None
    resume: bool = True
    quiet: bool | None = None
    distributed: str = "auto"
    compilation_cache_dir: str | None = "~/.cache/rnnlab/jax"
    sample_tokens: int = 200
    fault_nan_at_step: int | None = None
    fault_kill_at_step: int | None = None
    skip_finished: bool = True
    divergence_factor: float | None = 1000.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every", "keep_last"):
            check_int(f"trainer.{name}", getattr(self, name), 1)
        for name in ("epochs", "unroll", "fault_nan_at_step", "fault_kill_at_step"):
            check_int(f"trainer.{name}", getattr(self, name), 1, optional=True)
        check_int("trainer.sample_tokens", self.sample_tokens, 0)
        check_choice("trainer.best_mode", self.best_mode, (None, "min", "max"))
        check_choice("trainer.distributed", self.distributed, distributed.MODES)
        check_float(
            "trainer.divergence_factor", self.divergence_factor, 1.0, low_open=True, optional=True
        )


class DivergenceError(UserError, RuntimeError):
    """Training diverged; it stopped without saving the diverged state (the last good
    checkpoint is kept, and re-running the same command resumes from it).

    Attributes:
        step: the (1-based) step whose loss diverged.
        last_checkpoint: the newest checkpoint on disk (the last good state), or None.
    """

    def __init__(
        self,
        step: int,
        what: str,
        detail: str,
        fix: str,
        last_checkpoint: int | None,
        where: Path,
    ):
        self.step = step
        self.last_checkpoint = last_checkpoint
        kept = (
            f"the last good checkpoint, step {last_checkpoint} in {where}, is kept"
            if last_checkpoint is not None
            else "no checkpoint had been saved yet"
        )
        super().__init__(
            f"{what} at step {step} ({detail}); training stopped without saving this state and "
            f"{kept}. {fix}, then re-run in the same directory to resume."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its message, so that it survives pickling (Hydra's joblib launcher sends
        # a failed job's exception back to the parent process).
        return _rebuild_divergence, (type(self), str(self), self.step, self.last_checkpoint)


def _rebuild_divergence(
    cls: type[DivergenceError], message: str, step: int, last_checkpoint: int | None
) -> DivergenceError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.step, err.last_checkpoint = step, last_checkpoint
    return err


class NonFiniteLossError(DivergenceError):
    """The loss or gradient became NaN/inf (the update was not applied)."""

    def __init__(
        self,
        step: int,
        loss: float,
        grad_norm: float,
        last_checkpoint: int | None,
        where: Path,
        bad_data: str | None = None,
    ):
        detail = f"loss={loss}, grad_norm={grad_norm}"
        if bad_data is not None:
            detail += f"; the training batch holds non-finite values in {bad_data!r}"
            fix = "The data is at fault, not the learning rate: check the task's data files"
        else:
            fix = "Lower optim.learning_rate or set optim.grad_clip_norm"
        super().__init__(step, "non-finite loss", detail, fix, last_checkpoint, where)


class LossExplodedError(DivergenceError):
    """A finite training loss grew beyond `divergence_factor` times the run's first loss."""

    def __init__(
        self,
        step: int,
        loss: float,
        first: float,
        factor: float,
        last_checkpoint: int | None,
        where: Path,
    ):
        detail = f"loss {loss:.4g} > {factor:g} x the first loss, {first:.4g}"
        fix = (
            "Lower optim.learning_rate or set optim.grad_clip_norm (or raise "
            "trainer.divergence_factor, null to never stop)"
        )
        super().__init__(step, "the training loss diverged", detail, fix, last_checkpoint, where)


class ConfigMismatchError(RunDirError, ValueError):
    """The run directory holds a run of a different experiment."""


class RunExistsError(RunDirError, FileExistsError):
    """The run directory holds checkpoints and `trainer.resume` is false."""


def non_finite_leaves(batch: Batch) -> str | None:
    """The name of the first floating-point entry of `batch` with a NaN/inf, or None."""
    for name, value in batch.items():
        array = np.asarray(value)
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            return name
    return None


def resolve_steps(config: TrainerConfig, steps_per_epoch: int | None) -> int:
    """Total training updates: `epochs * steps_per_epoch` when epochs are set, else `steps`."""
    if config.epochs is None:
        return config.steps
    if steps_per_epoch is None:
        raise ConfigError(
            "trainer.epochs is set but this task generates its data (no epochs): use "
            "trainer.steps and trainer.epochs=null"
        )
    return config.epochs * steps_per_epoch


def resolve_quiet(quiet: bool | None) -> bool:
    """`quiet`, or when None: quiet under CI (`CI` set) or when stderr is not a terminal."""
    if quiet is not None:
        return quiet
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or not sys.stderr.isatty()


def configure_compilation_cache(directory: str | None) -> Path | None:
    """Turns on JAX's persistent compilation cache in `directory` (None or "" turns nothing on).

    Every compiled program is cached (no minimum compile time), so re-runs, resumed runs and the
    jobs of a sweep skip XLA compilation for programs they have compiled before.
    """
    if not directory:
        return None
    path = Path(directory).expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"trainer.compilation_cache_dir={directory}: cannot create it ({err.strerror}); "
            "choose another directory, or null to turn the cache off"
        ) from err
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def make_train_step(
    task: Task, model: nn.Module, optimizer: optax.GradientTransformation
) -> Callable[[State, Batch], tuple[State, dict[str, Any]]]:
    """The pure update `(state, batch) -> (state, metrics)`.

    The dropout key is `fold_in(state["key"], state["step"])`. Stateful tasks read the carry from
    the state and store the new one behind `stop_gradient` (truncated BPTT). If the loss or the
    gradient norm is not finite, the returned state is the input state (`metrics["finite"]` is
    False).
    """

    def train_step(state: State, batch: Batch) -> tuple[State, dict[str, Any]]:
        key = jax.random.fold_in(state["key"], state["step"])
        carry = state.get("carry")

        def loss_fn(params: Any) -> tuple[jax.Array, Any]:
            return task.loss(model, params, batch, carry, key)

        (loss, (sums, new_carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"]
        )
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new = {
            **state,
            "params": optax.apply_updates(state["params"], updates),
            "opt_state": opt_state,
            "step": state["step"] + 1,
        }
        if "carry" in state:
            new["carry"] = jax.lax.stop_gradient(new_carry)
        new = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, state)
        return new, {"loss": loss, "grad_norm": grad_norm, "finite": finite, "sums": sums}

    return train_step


def make_eval_step(task: Task, model: nn.Module) -> Callable[..., Any]:
    """Jitted `(params, batch, carry) -> (sums, carry)` in evaluation mode (no dropout)."""

    def eval_step(params: Any, batch: Batch, carry: Any) -> tuple[Any, Any]:
        sums, _, carry = task.apply(model, params, batch, carry, None)
        return sums, carry

    return jax.jit(eval_step)


def evaluate(
    task: Task,
    model: nn.Module,
    params: Any,
    split: str,
    eval_step: Callable[..., Any],
    mesh: jax.sharding.Mesh,
) -> dict[str, float]:
    """The task's metrics on one split (`split/metric` names), carry threaded for LMs."""
    totals: dict[str, list[float]] = {}
    carry = None
    for batch in task.eval_batches(split):
        size = int(np.shape(batch["inputs"])[0])
        if task.stateful and carry is None:
            carry = distributed.shard_tree(task.zero_carry(model, size), mesh, size)
        sums, carry = eval_step(params, distributed.shard_tree(batch, mesh, size), carry)
        for name, (s, w) in jax.device_get(sums).items():
            acc = totals.setdefault(name, [0.0, 0.0])
            acc[0] += float(s)
            acc[1] += float(w)
    if not totals:
        raise ValueError(f"the {split} split of task {task.name} has no batches")
    return task.summarize(split, {k: (v[0], v[1]) for k, v in totals.items()})


def _snapshot_diff(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(current))
    return [
        f"{k}: {saved.get(k, '<unset>')!r} -> {current.get(k, '<unset>')!r}"
        for k in keys
        if saved.get(k) != current.get(k)
    ]


def check_resume_config(
    saved: Mapping[str, Any] | None, current: Mapping[str, Any] | None, run_dir: Path
) -> list[str]:
    """Compares a checkpoint's config snapshot with this run's.

    Returns:
        The differences that are allowed (training length, optimiser, logging), for a warning.

    Raises:
        ConfigMismatchError: the model, task, seed or batch size differ.
    """
    if not saved or not current:
        return []
    diff = _snapshot_diff(saved, current)
    strict = [
        d
        for d in diff
        if d.startswith(STRICT_PREFIXES)
        and not d.split(":", 1)[0].endswith(LOOSE_SUFFIXES)
        and ".sample_" not in d.split(":", 1)[0]
    ]
    if strict:
        raise ConfigMismatchError(
            f"{run_dir} holds checkpoints of a different experiment ("
            + "; ".join(strict)
            + "). Resume with the original settings, or start a new run in another directory "
            "(a different hydra.run.dir); nothing in it was changed."
        )
    return diff


NOT_COMPARED = ("trainer.quiet", "trainer.compilation_cache_dir", "trainer.fault_", "trainer.skip_")
"""Snapshot keys that say how a run is watched or tested, not what it computes."""


def finished_results(
    run_dir: Path, config_snapshot: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """`results.json` of a completed run in `run_dir` with the same config, else None.

    Raises:
        ConfigMismatchError: `run_dir` holds a completed run of another experiment.
    """
    results = read_json(run_dir / RESULTS_FILE)
    if results is None:
        return None
    saved = results.get("config")
    if results.get("status") != "completed" or saved is None:
        return None

    def compared(snapshot: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in snapshot.items() if not k.startswith(NOT_COMPARED)}

    current = compared(config_snapshot or {})
    if check_resume_config(compared(saved), current, run_dir):
        return None  # e.g. more steps: train on from the last checkpoint
    return results


def _place_state(state: State, mesh: jax.sharding.Mesh, batch_size: int) -> State:
    """Replicates everything but the carry, which is split along its batch rows."""
    placed = distributed.shard_tree({k: v for k, v in state.items() if k != "carry"}, mesh, None)
    if "carry" in state:
        placed["carry"] = distributed.shard_tree(state["carry"], mesh, batch_size)
    return placed


@dataclasses.dataclass
class Window:
    """Running sums of training metrics since the last log event."""

    sums: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    grad_norm: float = 0.0
    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0

    def add(self, metrics: Mapping[str, Any], seconds: float, tokens: int) -> None:
        for name, (s, w) in metrics["sums"].items():
            acc = self.sums.setdefault(name, [0.0, 0.0])
            acc[0] += float(s)
            acc[1] += float(w)
        self.grad_norm += float(metrics["grad_norm"])
        self.steps += 1
        self.seconds += seconds
        self.tokens += tokens


@dataclasses.dataclass
class Progress:
    """Host-side bookkeeping saved in every checkpoint's meta, so a resumed run continues the
    best-so-far, the timers and the current log window (and logs what an uninterrupted run
    would)."""

    best: float | None = None
    best_step: int | None = None
    first_loss: float | None = None
    last_eval: dict[str, float] = dataclasses.field(default_factory=dict)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    tokens: int = 0
    window: Window = dataclasses.field(default_factory=Window)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Progress:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in meta.get("progress", {}).items() if k in fields}
        values["window"] = Window(**values.get("window", {}))
        return cls(**values)

    def improves(self, value: float, mode: str) -> bool:
        """Whether `value` beats the best so far (NaN never does)."""
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best if mode == "min" else value > self.best


def init_state(
    task: Task,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    seed: int,
    mesh: jax.sharding.Mesh,
) -> State:
    """The state at step 0, placed on the mesh. Keys: `split(PRNGKey(seed))` -> (init, train)."""
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    params = task.init_params(model, init_key)
    state: State = {
        "params": params,
        "opt_state": optimizer.init(params),
        "step": jnp.asarray(0, jnp.int32),
        "key": train_key,
    }
    if task.stateful:
        state["carry"] = task.zero_carry(model, task.batch_size)
    return _place_state(state, mesh, task.batch_size)


def holds_a_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds anything of an earlier run (results, provenance, checkpoints)."""
    checkpoints = run_dir / CHECKPOINT_DIR
    return (
        any((run_dir / name).exists() for name in (RESULTS_FILE, PROVENANCE_FILE, METRICS_FILE))
        or checkpoints.is_dir()
        and any(checkpoints.iterdir())
    )


def check_run_dir(
    config: TrainerConfig, config_snapshot: Mapping[str, Any] | None, run_dir: Path
) -> None:
    """Checks, reading only, that this run may start or resume in `run_dir`.

    Raises:
        RunExistsError: checkpoints exist but `config.resume` is False.
        ConfigMismatchError: they belong to another experiment (compared with the newest
            checkpoint whose meta verifies).
    """
    latest, saved = peek_saved_config(run_dir / CHECKPOINT_DIR)
    if latest is None:
        return
    if not config.resume:
        raise RunExistsError(
            f"{run_dir} already holds checkpoints (latest step {latest}) and trainer.resume="
            "false; use another hydra.run.dir, or trainer.resume=true to continue this run. "
            "Nothing in it was changed."
        )
    changed = check_resume_config(saved, config_snapshot, run_dir)
    if changed:
        log.warning("Resuming with changed settings: %s", "; ".join(changed))


def compile_train_step(
    task: Task,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    state: State,
    example: Any,
    mesh: jax.sharding.Mesh,
) -> tuple[Any, float]:
    """The train step compiled ahead of time for these shardings, and the compile seconds."""
    state_shardings = distributed.shardings_of(state)
    jitted = jax.jit(
        make_train_step(task, model, optimizer),
        in_shardings=(state_shardings, distributed.shardings_of(example)),
        out_shardings=(state_shardings, distributed.replicated(mesh)),
        donate_argnums=(0,),
    )
    tic = time.perf_counter()
    compiled = jitted.lower(state, example).compile()
    return compiled, time.perf_counter() - tic


def _progress_bar(total: int, initial: int, disable: bool, desc: str) -> tqdm:
    return tqdm(
        total=total,
        initial=min(initial, total),
        disable=disable,
        unit="step",
        desc=desc,
        dynamic_ncols=True,
        file=sys.stderr,
    )


def _format(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))


PROVENANCE_SUMMARY = ("rnnlab", "git", "packages", "devices")
"""Provenance keys repeated in `results.json` (the full record is `provenance.json`)."""


def _finish_record(record: ProvenanceRecord, checkpointer: Checkpointer) -> Callable[..., bool]:
    """An exit callback that marks the attempt failed, diverged or interrupted on an exception."""

    def on_exit(exc_type: type[BaseException] | None, *_: Any) -> bool:
        if exc_type is not None and record.attempt["status"] == "running":
            if issubclass(exc_type, DivergenceError):
                status = "diverged"
            elif issubclass(exc_type, KeyboardInterrupt):
                status = "interrupted"
            else:
                status = "failed"
            record.finish(status, checkpointer.latest_step())
        return False

    return on_exit


def _tied_best_step(checkpointer: Checkpointer, best_step: int, best: float | None) -> int | None:
    """The kept checkpoint equal to the best value when the trainer's own best step is gone.

    Checkpoint retention keeps one best; on a tie (common for accuracy on a small validation
    set) it may keep a later step than the first one the trainer recorded. That step scores the
    same, so it stands in for it; None when no kept step has the best value."""
    kept = checkpointer.best_step()
    if kept is None or best is None:
        return None
    value = checkpointer.ranking_metric(kept)
    if value is None or not math.isclose(value, float(best), rel_tol=1e-12, abs_tol=0.0):
        return None
    log.info("best step %d was a tie; scoring the kept equal step %d", best_step, kept)
    return kept


def train(
    task: Task,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    schedule: Schedule,
    config: TrainerConfig,
    logger: LoggerConfig,
    *,
    seed: int,
    run_dir: str | os.PathLike[str],
    total_steps: int | None = None,
    hparams: Mapping[str, Any] | None = None,
    config_snapshot: Mapping[str, Any] | None = None,
    on_accept: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Trains `model` on `task`, resuming from the newest checkpoint of the run directory that
    verifies (damaged ones are moved aside, see `Checkpointer.restore_latest`).

    Per step: the batch, the jitted update, a finiteness check; every `logger.log_every` steps
    the training metrics; every `eval_every` an evaluation (the task's first split); every
    `checkpoint_every` (and at every new best, and at the end) a checkpoint. At the end the best
    checkpoint is evaluated on every split of the task (e.g. the test set).

    Args:
        task: the task (data, loss, metrics).
        model: the model built by `task.build_model`.
        optimizer: an optax transformation (`rnnlab.optim.build_optimizer`).
        schedule: its learning-rate schedule (logged as `train/learning_rate`).
        config: trainer settings.
        logger: logging settings.
        seed: the run seed; every key derives from it.
        run_dir: the run directory (events, `metrics.jsonl`, `checkpoints/`, `results.json`).
        total_steps: training updates; default `resolve_steps(config, task.steps_per_epoch)`.
        hparams: values shown in TensorBoard's hparams tab (e.g. the swept overrides).
        config_snapshot: flat `{key: value}` of the run's config, stored in checkpoints and
            compared on resume (see `check_resume_config`).
        on_accept: called once the run directory has been checked and accepted for this run,
            before anything is written into it (the front end saves the run's config there).

    Returns:
        The results (also written to `results.json`).

    Raises:
        DivergenceError: the loss diverged (the last good checkpoint is kept).
        RunDirError: the run directory belongs to another experiment, holds checkpoints with
            `resume` false, or holds only damaged checkpoints; nothing in it was changed.
    """
    run_dir = Path(run_dir).absolute()
    if config.skip_finished:
        done = finished_results(run_dir, config_snapshot)
        if done is not None:
            log.info(
                "Skipping %s: it already holds the results of this run (status completed, same "
                "config); trainer.skip_finished=false evaluates it again",
                run_dir,
            )
            return done
    main = distributed.is_main_process()
    steps = total_steps if total_steps is not None else resolve_steps(config, task.steps_per_epoch)
    mesh = distributed.make_mesh()
    distributed.check_batch_size(task.batch_size, mesh)
    best_metric = config.best_metric or task.monitor
    best_mode = config.best_mode or task.monitor_mode
    check_run_dir(config, config_snapshot, run_dir)  # refusals raise here, before any write
    if on_accept is not None:
        on_accept()

    with contextlib.ExitStack() as cleanup:
        checkpointer = Checkpointer(
            run_dir / CHECKPOINT_DIR,
            CheckpointConfig(
                keep_last=config.keep_last,
                best_metric=best_metric if config.keep_best else None,
                best_mode=best_mode,
                async_save=config.async_checkpointing,
            ),
        )
        cleanup.callback(checkpointer.close)
        state = init_state(task, model, optimizer, seed, mesh)
        zero_carry = task.zero_carry(model, task.batch_size) if task.stateful else None
        meta: dict[str, Any] = {}
        start = 0
        found = checkpointer.restore_latest(state) if config.resume else None
        if found is not None:
            start, state, meta = found
            log.info("Resumed from step %d of %s", start, checkpointer.directory)
        progress = Progress.from_meta(meta)
        writer = RunWriter(run_dir, logger, purge_step=start + 1, enabled=main)
        cleanup.callback(writer.close)
        record = ProvenanceRecord(run_dir, seed, start, enabled=main)
        cleanup.push(_finish_record(record, checkpointer))
        if main:
            task.save_assets(run_dir)
        num_params = count_params(state["params"])
        log.info(
            "Task %s, model %s (%s params), %d steps, batch %d on %d device(s); run dir %s",
            task.name,
            type(model).__name__,
            f"{num_params:,}",
            steps,
            task.batch_size,
            mesh.devices.size,
            run_dir,
        )
        quiet = resolve_quiet(config.quiet) or not main
        if not quiet:
            print(f"Run directory: {run_dir}\n  tensorboard --logdir {run_dir}", file=sys.stderr)

        example = distributed.shard_tree(task.train_batch(start), mesh, task.batch_size)
        compiled, compile_seconds = compile_train_step(task, model, optimizer, state, example, mesh)
        log.info("Compiled the train step in %.2fs", compile_seconds)
        writer.scalars(start, {"perf/compile_s": compile_seconds})
        eval_step = make_eval_step(task, model)
        sample_key = jax.random.fold_in(jax.random.PRNGKey(seed), SAMPLE_STREAM)

        def run_eval(step: int, params: Any) -> dict[str, float]:
            tic = time.perf_counter()
            metrics = evaluate(task, model, params, task.splits[0], eval_step, mesh)
            seconds = time.perf_counter() - tic
            progress.eval_seconds += seconds
            writer.scalars(step, {**metrics, "perf/eval_s": seconds})
            if logger.text_samples and config.sample_tokens > 0:  # every process: global arrays
                key = jax.random.fold_in(sample_key, step)
                text = task.sample_text(model, params, key, config.sample_tokens)
                if text is not None:
                    writer.text(step, "samples/text", text)
            if best_metric not in metrics:
                raise ConfigError(
                    f"trainer.best_metric={best_metric!r} is not a metric of task {task.name}; "
                    f"choose one of {sorted(metrics)}"
                )
            return metrics

        def meta_at(step: int) -> dict[str, Any]:
            return {
                "step": step,
                "best_step": progress.best_step,
                "progress": dataclasses.asdict(progress),
                "config": dict(config_snapshot or {}),
            }

        bar = _progress_bar(steps, start, quiet, task.name)
        cleanup.callback(bar.close)
        if not bar.disable:
            cleanup.enter_context(logging_redirect_tqdm())
        for step in range(start, steps):
            done = step + 1
            batch = task.train_batch(step)
            if config.fault_nan_at_step == done:
                batch = task.poison(batch)
            if zero_carry is not None and task.resets_carry(step):
                state["carry"] = distributed.shard_tree(zero_carry, mesh, task.batch_size)
            device_batch = distributed.shard_tree(batch, mesh, task.batch_size)
            tic = time.perf_counter()
            state, metrics = compiled(state, device_batch)
            metrics = jax.device_get(metrics)
            seconds = time.perf_counter() - tic
            if not bool(metrics["finite"]):
                raise NonFiniteLossError(
                    done,
                    float(metrics["loss"]),
                    float(metrics["grad_norm"]),
                    checkpointer.latest_step(),
                    checkpointer.directory,
                    bad_data=non_finite_leaves(batch),
                )
            loss = float(metrics["loss"])
            if progress.first_loss is None:
                progress.first_loss = loss
            factor = config.divergence_factor
            if factor is not None and abs(loss) > factor * max(abs(progress.first_loss), 1e-8):
                raise LossExplodedError(
                    done,
                    loss,
                    progress.first_loss,
                    factor,
                    checkpointer.latest_step(),
                    checkpointer.directory,
                )
            tokens = task.tokens(batch)
            progress.window.add(metrics, seconds, tokens)
            progress.train_seconds += seconds
            progress.tokens += tokens
            bar.update(1)

            if done % logger.log_every == 0 or done == steps:
                window = progress.window
                means = task.summarize("train", {k: tuple(v) for k, v in window.sums.items()})
                writer.scalars(
                    done,
                    {
                        **means,
                        "train/grad_norm": window.grad_norm / window.steps,
                        "train/learning_rate": float(schedule(step)),
                        "perf/step_ms": 1000.0 * window.seconds / window.steps,
                        "perf/tokens_per_s": window.tokens / max(window.seconds, 1e-9),
                    },
                )
                bar.set_postfix(loss=f"{means['train/loss']:.4g}", refresh=False)
                progress.window = Window()

            evaluated, new_best = None, False
            if done % config.eval_every == 0 or done == steps:
                evaluated = run_eval(done, state["params"])
                progress.last_eval = evaluated
                value = evaluated[best_metric]
                new_best = progress.improves(value, best_mode)
                if new_best:
                    progress.best, progress.best_step = value, done
                log.info("step %d: %s", done, _format(evaluated))
                bar.set_postfix({best_metric: f"{value:.4g}"}, refresh=False)

            if (
                done % config.checkpoint_every == 0
                or done == steps
                or (new_best and config.keep_best)
            ):
                checkpointer.save(done, state, meta_at(done), evaluated)
                record.heartbeat(done)
            if config.fault_kill_at_step == done:
                checkpointer.wait()
                os.kill(os.getpid(), signal.SIGKILL)
        bar.close()
        checkpointer.wait()

        final_step = max(start, steps)
        if not progress.last_eval:
            progress.last_eval = run_eval(final_step, state["params"])
        params, scored_step = state["params"], final_step
        best_step = progress.best_step
        if config.keep_best and best_step not in (None, final_step):
            if best_step not in checkpointer.all_steps():
                best_step = _tied_best_step(checkpointer, best_step, progress.best)
            if best_step is None:
                log.warning("the best checkpoint is gone; scoring the final state")
            elif best_step != final_step:
                try:
                    params = checkpointer.restore(best_step, state)[0]["params"]
                    scored_step = best_step
                except CheckpointDamaged as damage:
                    checkpointer.quarantine(damage)
                    log.warning("the best checkpoint is damaged; scoring the final state")
        scored: dict[str, float] = {}
        for split in task.splits:
            if split == task.splits[0] and scored_step == final_step:
                scored.update(progress.last_eval)  # the final state, evaluated at the last step
            else:
                scored.update(evaluate(task, model, params, split, eval_step, mesh))
        final_scalars = {f"best/{k}": v for k, v in scored.items()}
        final_scalars.update({k: v for k, v in scored.items() if not k.startswith("valid/")})
        writer.scalars(final_step, final_scalars)

        results: dict[str, Any] = {
            "status": "completed",
            "task": task.name,
            "model": type(model).__name__,
            "num_params": num_params,
            "seed": seed,
            "steps": final_step,
            "epochs": final_step / task.steps_per_epoch if task.steps_per_epoch else None,
            "final": progress.last_eval,
            "best": {
                "metric": best_metric,
                "mode": best_mode,
                "step": best_step,
                "value": progress.best,
            },
            "best_checkpoint_step": scored_step,
            "best_checkpoint_metrics": scored,
            "baselines": task.baselines(),
            "data": task.describe(),
            "perf": {
                "compile_s": compile_seconds,
                "train_s": progress.train_seconds,
                "eval_s": progress.eval_seconds,
                "steps_per_s": final_step / max(progress.train_seconds, 1e-9),
                "tokens_per_s": progress.tokens / max(progress.train_seconds, 1e-9),
                "devices": int(mesh.devices.size),
            },
            "run_dir": str(run_dir),
            "hparams": dict(hparams or {}),
            "config": dict(config_snapshot or {}),
            "provenance": {k: record.attempt[k] for k in PROVENANCE_SUMMARY},
        }
        results["perf"]["wall_s"] = record.wall_s_total
        record.finish("completed", final_step)
        if main:
            shown = dict(hparams or {"task": task.name, "seed": seed})
            writer.hparams(final_step, shown, {**progress.last_eval, **final_scalars})
            write_results(run_dir, results)
    log.info("Done: %s; results in %s", _format(progress.last_eval), run_dir / "results.json")
    return results
