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
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from rnnlab import distributed, transfer
from rnnlab.checkpoint import (
    CheckpointConfig,
    CheckpointDamaged,
    Checkpointer,
    peek_saved_config,
)
from rnnlab.checks import check_choice, check_float, check_int
from rnnlab.errors import ConfigError, RunDirError, UserError
from rnnlab.models import count_params
from rnnlab.optim import Schedule
from rnnlab.progress import ProgressLine, resolve_quiet, track
from rnnlab.progress import bar as progress_bar
from rnnlab.provenance import ProvenanceRecord
from rnnlab.rundir import CHECKPOINT_DIR, METRICS_FILE, PROVENANCE_FILE, RESULTS_FILE, read_json
from rnnlab.tasks.base import Batch, Task
from rnnlab.tasks.language_model import LanguageModelTask, sample_text, save_vocab
from rnnlab.writers import WALL, LoggerConfig, RunWriter, final_score_names, write_results

log = logging.getLogger(__name__)

State = dict[str, Any]
SAMPLE_STREAM = 0x5A3
"""`fold_in` constant of the key stream used for text samples (apart from dropout keys)."""
ConfigCompare = Callable[[Mapping[str, Any], Mapping[str, Any]], tuple[list[str], list[str]]]
"""How a saved config snapshot is compared with this run's: `(saved, current) -> (differences
that make it another experiment, differences it may continue with)`, each `"key: a -> b"`. The
front end defines it (`rnnlab.cli.compare_configs`): it knows what the keys mean."""


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
        score_final: also score the final state on every split (`results.json` "final" then
            holds e.g. the test metrics after the last step, next to the best checkpoint's in
            "best_checkpoint_metrics"; the papers that report the last epoch's test score).
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
        skip_finished: return at once when the run directory already holds the results of a
            completed run with the same config (what makes re-running an interrupted sweep
            skip its finished jobs); False trains/evaluates again from the last checkpoint.
        divergence_factor: stop the run as diverged when a training loss exceeds this many
            times the run's first loss (e.g. a learning rate far too large); None never does.
        init_from: a run directory whose checkpoint starts this run's parameters (a warm
            start: pretrain, then fine-tune): every parameter whose path it shares is copied,
            embedding rows by token (`rnnlab.transfer`); None starts from the seed's
            initialisation. Used only for a fresh start: a resumed run continues from its own
            checkpoint.
        init_checkpoint: that run's checkpoint: "best", "latest" or a step.
        init_params: glob patterns of the parameter paths to copy (`[embed/*, stack/*]`);
            None for every parameter the source run has.
    """

    steps: int = 2000
    epochs: int | None = None
    batch_size: int = 64
    eval_every: int = 250
    checkpoint_every: int = 500
    keep_last: int = 2
    keep_best: bool = True
    score_final: bool = False
    best_metric: str | None = None
    best_mode: str | None = None
    async_checkpointing: bool = False
    unroll: int | None = None
    resume: bool = True
    quiet: bool | None = None
    distributed: str = "auto"
    compilation_cache_dir: str | None = "~/.cache/rnnlab/jax"
    sample_tokens: int = 200
    skip_finished: bool = True
    divergence_factor: float | None = 1000.0
    init_from: str | None = None
    init_checkpoint: str = "best"
    init_params: list[str] | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every", "keep_last"):
            check_int(f"trainer.{name}", getattr(self, name), 1)
        for name in ("epochs", "unroll"):
            check_int(f"trainer.{name}", getattr(self, name), 1, optional=True)
        check_int("trainer.sample_tokens", self.sample_tokens, 0)
        check_choice("trainer.best_mode", self.best_mode, (None, "min", "max"))
        check_choice("trainer.distributed", self.distributed, distributed.MODES)
        check_float(
            "trainer.divergence_factor", self.divergence_factor, 1.0, low_open=True, optional=True
        )
        if self.init_from is not None and not str(self.init_from).strip():
            raise ConfigError("trainer.init_from must be a run directory or null, got ''")
        if not (
            str(self.init_checkpoint) in ("best", "latest") or str(self.init_checkpoint).isdigit()
        ):
            raise ConfigError(
                'trainer.init_checkpoint must be "best", "latest" or a step number, got '
                f"{self.init_checkpoint!r}"
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


Guard = dict[str, jax.Array]
"""On-device stop flag the train step carries from step to step (never saved): `halted`,
`bad_step` (1-based), `reason` (`NON_FINITE` or `EXPLODED`), the bad step's `loss` and
`grad_norm`, and the run's `first_loss` (the divergence reference)."""
NON_FINITE, EXPLODED = 1, 2


def initial_guard(first_loss: float | None) -> Guard:
    """A guard that has not halted; `first_loss` from the checkpoint's meta on resume."""
    nan = jnp.asarray(jnp.nan, jnp.float32)
    return {
        "halted": jnp.asarray(False),
        "bad_step": jnp.asarray(0, jnp.int32),
        "reason": jnp.asarray(0, jnp.int32),
        "loss": nan,
        "grad_norm": nan,
        "first_loss": nan if first_loss is None else jnp.asarray(first_loss, jnp.float32),
    }


def make_train_step(
    task: Task,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    divergence_factor: float | None = None,
) -> Callable[[State, Batch, Guard], tuple[State, dict[str, Any], Guard]]:
    """The pure update `(state, batch, guard) -> (state, metrics, guard)`.

    The dropout key is `fold_in(state["key"], state["step"])`. Stateful tasks read the carry from
    the state and store the new one behind `stop_gradient` (truncated BPTT). An update is
    applied only if the loss and the gradient norm are finite, the loss is at most
    `divergence_factor` times the run's first loss, and no earlier step has failed: otherwise the
    state stays as it was and the guard halts (sticky), recording the first bad step. The host
    reads the guard only at log, evaluation and checkpoint steps, so a diverged state is never
    evaluated or saved, without a device round trip every step.
    """
    factor = jnp.inf if divergence_factor is None else divergence_factor

    def train_step(state: State, batch: Batch, guard: Guard) -> tuple[State, Any, Guard]:
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
        first = jnp.where(jnp.isnan(guard["first_loss"]), loss, guard["first_loss"])
        exploded = jnp.abs(loss) > factor * jnp.maximum(jnp.abs(first), 1e-8)
        ok = finite & ~exploded & ~guard["halted"]
        new = {
            **state,
            "params": optax.apply_updates(state["params"], updates),
            "opt_state": opt_state,
            "step": state["step"] + 1,
        }
        if "carry" in state:
            new["carry"] = jax.lax.stop_gradient(new_carry)
        new = jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, state)
        failed_now = ~ok & ~guard["halted"]
        record = {
            "bad_step": state["step"] + 1,
            "reason": jnp.where(finite, EXPLODED, NON_FINITE).astype(jnp.int32),
            "loss": loss.astype(jnp.float32),
            "grad_norm": grad_norm.astype(jnp.float32),
        }
        guard = {
            **{k: jnp.where(failed_now, v, guard[k]) for k, v in record.items()},
            "halted": guard["halted"] | ~ok,
            "first_loss": first.astype(jnp.float32),
        }
        return new, {"loss": loss, "grad_norm": grad_norm, "sums": sums}, guard

    return train_step


def make_eval_step(task: Task, model: nn.Module) -> Callable[..., Any]:
    """Jitted `(params, batch, carry) -> (sums, carry)` in evaluation mode (no dropout)."""

    def eval_step(params: Any, batch: Batch, carry: Any) -> tuple[Any, Any]:
        _, (sums, carry) = task.loss(model, params, batch, carry, None)
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
    for batch in track(task.eval_batches(split), f"evaluating {split}", unit="batch"):
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


def snapshot_diff(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, str]:
    """`{key: "key: saved -> current"}` for every key whose value differs (or is only in one)."""
    return {
        k: f"{k}: {saved.get(k, '<unset>')!r} -> {current.get(k, '<unset>')!r}"
        for k in sorted(set(saved) | set(current))
        if saved.get(k) != current.get(k)
    }


def any_difference_allowed(
    saved: Mapping[str, Any], current: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """The `ConfigCompare` used without a front end: nothing refuses a resume."""
    return [], list(snapshot_diff(saved, current).values())


def check_resume_config(
    saved: Mapping[str, Any] | None,
    current: Mapping[str, Any] | None,
    run_dir: Path,
    compare: ConfigCompare = any_difference_allowed,
) -> list[str]:
    """Compares a saved config snapshot (a checkpoint's, or a finished run's) with this run's.

    Returns:
        The differences that are allowed (e.g. training length, optimiser), for a warning.

    Raises:
        ConfigMismatchError: `compare` finds differences that make it another experiment.
    """
    if not saved or not current:
        return []
    strict, allowed = compare(saved, current)
    if strict:
        raise ConfigMismatchError(
            f"{run_dir} holds a run of a different experiment ({'; '.join(strict)}). Resume "
            "with the original settings, or start a new run in another run directory; "
            "nothing in it was changed."
        )
    return allowed


def finished_results(
    run_dir: Path,
    config_snapshot: Mapping[str, Any] | None,
    compare: ConfigCompare = any_difference_allowed,
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
    if check_resume_config(saved, config_snapshot or {}, run_dir, compare):
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

    def add(self, metrics: Mapping[str, Any], tokens: int) -> None:
        """Adds one step's metrics (fetched from the device) and its token count."""
        for name, (s, w) in metrics["sums"].items():
            acc = self.sums.setdefault(name, [0.0, 0.0])
            acc[0] += float(s)
            acc[1] += float(w)
        self.grad_norm += float(metrics["grad_norm"])
        self.steps += 1
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
    source: transfer.Source | None = None,
    include: Sequence[str] | None = None,
) -> State:
    """The state at step 0, placed on the mesh. Keys: `split(PRNGKey(seed))` -> (init, train).
    With a `source` run the params are warm-started from it (`rnnlab.transfer.warm_start`, the
    leaves `include` selects)."""
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    params = task.init_params(model, init_key)
    if source is not None:
        params = transfer.warm_start(params, task.vocab, source, include)
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
    config: TrainerConfig,
    config_snapshot: Mapping[str, Any] | None,
    run_dir: Path,
    compare: ConfigCompare = any_difference_allowed,
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
            "false; use another run directory, or trainer.resume=true to continue this run. "
            "Nothing in it was changed."
        )
    changed = check_resume_config(saved, config_snapshot, run_dir, compare)
    if changed:
        log.warning("Resuming with changed settings: %s", "; ".join(changed))


def compile_train_step(
    task: Task,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    state: State,
    example: Any,
    mesh: jax.sharding.Mesh,
    divergence_factor: float | None = None,
) -> tuple[Any, float]:
    """The train step compiled ahead of time for these shardings, and the compile seconds."""
    state_shardings = distributed.shardings_of(state)
    replicated = distributed.replicated(mesh)
    jitted = jax.jit(
        make_train_step(task, model, optimizer, divergence_factor),
        in_shardings=(state_shardings, distributed.shardings_of(example), replicated),
        out_shardings=(state_shardings, replicated, replicated),
        donate_argnums=(0, 2),
    )
    tic = time.perf_counter()
    compiled = jitted.lower(state, example, initial_guard(None)).compile()
    return compiled, time.perf_counter() - tic


def _format(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))


PROVENANCE_SUMMARY = ("rnnlab", "git", "source", "packages", "devices")
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


def itstime(step: int, every: int, last: int) -> bool:
    """Whether `step` (1-based) is one of every `every` steps, or the last one."""
    return step % every == 0 or step == last


@dataclasses.dataclass
class Attempt:
    """What one training attempt works with (built by `train`; the loop's functions take it)."""

    task: Task
    model: nn.Module
    schedule: Schedule
    config: TrainerConfig
    logger: LoggerConfig
    checkpointer: Checkpointer
    writer: RunWriter
    record: ProvenanceRecord
    progress: Progress
    mesh: jax.sharding.Mesh
    steps: int
    best_metric: str
    best_mode: str
    config_snapshot: Mapping[str, Any]
    eval_step: Callable[..., Any]
    sample_key: jax.Array
    step_hook: Callable[[int, Batch], Batch] | None

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files (the first of a multi-host job)."""
        return distributed.is_main_process()

    @property
    def quiet(self) -> bool:
        """No progress bar (see `resolve_quiet`; always on processes other than the first)."""
        return resolve_quiet(self.config.quiet) or not self.main

    def batch(self, step: int) -> Batch:
        """The training batch of (0-based) update `step`, through the test hook if any."""
        batch = self.task.train_batch(step)
        return batch if self.step_hook is None else self.step_hook(step + 1, batch)

    def evaluate(self, step: int, params: Any) -> dict[str, float]:
        """The first split's metrics at `step`, logged (with a text sample for LMs)."""
        tic = time.perf_counter()
        split = self.task.splits[0]
        metrics = evaluate(self.task, self.model, params, split, self.eval_step, self.mesh)
        seconds = time.perf_counter() - tic
        self.progress.eval_seconds += seconds
        self.writer.scalars(step, {**metrics, f"{WALL}/eval_s": seconds})
        self.writer.layout(metrics)
        tokens = self.config.sample_tokens
        if self.logger.text_samples and tokens > 0 and isinstance(self.task, LanguageModelTask):
            key = jax.random.fold_in(self.sample_key, step)  # every process: global arrays
            text = sample_text(self.task, self.model, params, key, tokens)
            self.writer.text(step, "samples/text", text)
        if self.best_metric not in metrics:
            raise ConfigError(
                f"trainer.best_metric={self.best_metric!r} is not a metric of task "
                f"{self.task.name}; choose one of {sorted(metrics)}"
            )
        return metrics

    def meta(self, step: int) -> dict[str, Any]:
        """What a checkpoint at `step` records besides the state."""
        return {
            "step": step,
            "best_step": self.progress.best_step,
            "ranking": {"metric": self.best_metric, "mode": self.best_mode},
            "progress": dataclasses.asdict(self.progress),
            "config": dict(self.config_snapshot),
        }

    def diverged(self, guard: Mapping[str, Any]) -> DivergenceError:
        """The error for a guard that halted (see `make_train_step`)."""
        step, where = int(guard["bad_step"]), self.checkpointer.directory
        last = self.checkpointer.latest_step()
        if int(guard["reason"]) == EXPLODED:
            first, factor = float(guard["first_loss"]), self.config.divergence_factor
            return LossExplodedError(step, float(guard["loss"]), first, factor, last, where)
        bad_data = non_finite_leaves(self.batch(step - 1))
        loss, grad_norm = float(guard["loss"]), float(guard["grad_norm"])
        return NonFiniteLossError(step, loss, grad_norm, last, where, bad_data)


def open_checkpointer(
    run_dir: Path, config: TrainerConfig, best_metric: str, best_mode: str
) -> Checkpointer:
    """The run's checkpoints: the last `keep_last`, and the best by `best_metric` if kept."""
    return Checkpointer(
        run_dir / CHECKPOINT_DIR,
        CheckpointConfig(
            keep_last=config.keep_last,
            best_metric=best_metric if config.keep_best else None,
            best_mode=best_mode,
            async_save=config.async_checkpointing,
        ),
    )


def restore_or_init(
    task: Task,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    seed: int,
    mesh: jax.sharding.Mesh,
    checkpointer: Checkpointer,
    resume: bool,
) -> tuple[int, State, dict[str, Any]]:
    """`(start step, state, meta)`: the newest checkpoint that verifies, or step 0."""
    state = init_state(task, model, optimizer, seed, mesh)
    found = checkpointer.restore_latest(state) if resume else None
    if found is None:
        return 0, state, {}
    log.info("Resumed from step %d of %s", found[0], checkpointer.directory)
    return found


def load_init_source(config: TrainerConfig) -> transfer.Source:
    """The run `config.init_from` names, at `config.init_checkpoint` (`rnnlab.transfer`)."""
    return transfer.load_source(config.init_from, config.init_checkpoint)


def train_loop(run: Attempt, compiled: Any, state: State, start: int, bar: tqdm) -> State:
    """Updates `start + 1 ... run.steps`, with logging, evaluation and checkpoints on cadence.

    The step's metrics and the stop flag stay on the device between events (log, evaluation,
    checkpoint and last steps), where they are fetched together; a halted flag raises there,
    before anything of the diverged state is logged, evaluated or saved.
    """
    task, config, progress = run.task, run.config, run.progress
    zero_carry = task.zero_carry(run.model, task.batch_size) if task.stateful else None
    guard = distributed.shard_tree(initial_guard(progress.first_loss), run.mesh, None)
    pending: list[tuple[Any, int]] = []
    line = ProgressLine(run.steps, start, run.logger.progress_every_s)
    tic = time.perf_counter()
    for step in range(start, run.steps):
        done = step + 1
        batch = run.batch(step)
        if zero_carry is not None and task.resets_carry(step):
            state["carry"] = distributed.shard_tree(zero_carry, run.mesh, task.batch_size)
        device_batch = distributed.shard_tree(batch, run.mesh, task.batch_size)
        state, metrics, guard = compiled(state, device_batch, guard)
        pending.append((metrics, task.tokens(batch)))
        bar.update(1)
        if bar.disable and run.main and line.due(time.perf_counter()):
            log.info("%s", line.text(done, line.last))
        log_now = itstime(done, run.logger.log_every, run.steps)
        eval_now = itstime(done, config.eval_every, run.steps)
        if not (log_now or eval_now or itstime(done, config.checkpoint_every, run.steps)):
            continue
        fetched, host_guard = jax.device_get(([m for m, _ in pending], guard))
        seconds = time.perf_counter() - tic
        if bool(host_guard["halted"]):
            raise run.diverged(host_guard)
        progress.first_loss = float(host_guard["first_loss"])
        for metrics, (_, tokens) in zip(fetched, pending, strict=True):
            progress.window.add(metrics, tokens)
            progress.tokens += tokens
        progress.window.seconds += seconds
        progress.train_seconds += seconds
        pending = []
        if log_now:
            line.loss = (done, log_window(run, done, bar))
        handle_events(run, done, state, eval_now, bar)
        tic = time.perf_counter()
    return state


def log_window(run: Attempt, done: int, bar: tqdm) -> float:
    """Logs the training metrics of the steps since the last log event; returns their loss."""
    window = run.progress.window
    means = run.task.summarize("train", {k: tuple(v) for k, v in window.sums.items()})
    run.writer.scalars(
        done,
        {
            **means,
            "train/grad_norm": window.grad_norm / window.steps,
            "train/learning_rate": float(run.schedule(done - 1)),
            f"{WALL}/step_ms": 1000.0 * window.seconds / window.steps,
            f"{WALL}/tokens_per_s": window.tokens / max(window.seconds, 1e-9),
        },
    )
    bar.set_postfix(loss=f"{means['train/loss']:.4g}", refresh=False)
    run.progress.window = Window()
    return means["train/loss"]


def handle_events(run: Attempt, done: int, state: State, eval_now: bool, bar: tqdm) -> None:
    """Evaluation and checkpoint at step `done` where the cadence (or a new best) asks."""
    progress, config = run.progress, run.config
    evaluated, new_best = None, False
    if eval_now:
        evaluated = run.evaluate(done, state["params"])
        progress.last_eval = evaluated
        value = evaluated[run.best_metric]
        new_best = progress.improves(value, run.best_mode)
        if new_best:
            progress.best, progress.best_step = value, done
        log.info("step %d: %s", done, _format(evaluated))
        bar.set_postfix({run.best_metric: f"{value:.4g}"}, refresh=False)
    if itstime(done, config.checkpoint_every, run.steps) or (new_best and config.keep_best):
        run.checkpointer.save(done, state, run.meta(done), evaluated)
        run.record.heartbeat(done)


def score_best(
    run: Attempt, state: State, final_step: int
) -> tuple[dict[str, float], int, int | None]:
    """`(metrics on every split, scored step, best step)`: the checkpoint Orbax keeps as best
    (the final state where there is none, or it is damaged), evaluated on every split."""
    best_step = run.checkpointer.best_step() if run.config.keep_best else run.progress.best_step
    params, scored_step = state["params"], final_step
    if run.config.keep_best and best_step not in (None, final_step):
        try:
            params = run.checkpointer.restore(best_step, state)[0]["params"]
            scored_step = best_step
        except CheckpointDamaged as damage:
            run.checkpointer.quarantine(damage)
            log.warning("the best checkpoint is damaged; scoring the final state")
    scored: dict[str, float] = {}
    for split in run.task.splits:
        if split == run.task.splits[0] and scored_step == final_step:
            scored.update(run.progress.last_eval)  # the final state, evaluated at the last step
        else:
            scored.update(evaluate(run.task, run.model, params, split, run.eval_step, run.mesh))
    return scored, scored_step, best_step


def score_final(
    run: Attempt, state: State, final_step: int, scored: dict[str, float], scored_step: int
) -> dict[str, float]:
    """The final state's metrics on the splits after the monitored one (`score_best` has them
    when it scored the final state)."""
    final: dict[str, float] = {}
    for split in run.task.splits[1:]:
        if scored_step == final_step:
            final.update({k: v for k, v in scored.items() if k.startswith(f"{split}/")})
        else:
            final.update(
                evaluate(run.task, run.model, state["params"], split, run.eval_step, run.mesh)
            )
    return final


def announce(run: Attempt, state: State, run_dir: Path) -> None:
    """Saves a language model's vocabulary and says what is trained where."""
    task = run.task
    if run.main and isinstance(task, LanguageModelTask):
        save_vocab(task, run_dir)
    log.info(
        "Task %s, model %s (%s params), %d steps, batch %d on %d device(s); run dir %s",
        task.name,
        type(run.model).__name__,
        f"{count_params(state['params']):,}",
        run.steps,
        task.batch_size,
        run.mesh.devices.size,
        run_dir,
    )
    if not run.quiet:
        print(f"Run directory: {run_dir}\n  tensorboard --logdir {run_dir}", file=sys.stderr)


def finish(
    run: Attempt,
    state: State,
    final_step: int,
    compile_seconds: float,
    seed: int,
    hparams: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Scores the best checkpoint, logs and writes `results.json`, completes the provenance."""
    task, progress = run.task, run.progress
    if not progress.last_eval:
        progress.last_eval = run.evaluate(final_step, state["params"])
    scored, scored_step, best_step = score_best(run, state, final_step)
    if run.config.score_final:
        final = score_final(run, state, final_step, scored, scored_step)
        progress.last_eval = {**progress.last_eval, **final}
    final_scalars = final_score_names(scored, run.task.splits[0])
    run.writer.scalars(final_step, final_scalars)
    train_s = max(progress.train_seconds, 1e-9)
    results: dict[str, Any] = {
        "status": "completed",
        "task": task.name,
        "model": type(run.model).__name__,
        "num_params": count_params(state["params"]),
        "seed": seed,
        "steps": final_step,
        "epochs": final_step / task.steps_per_epoch if task.steps_per_epoch else None,
        "final": progress.last_eval,
        "best": {
            "metric": run.best_metric,
            "mode": run.best_mode,
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
            "steps_per_s": final_step / train_s,
            "tokens_per_s": progress.tokens / train_s,
            "devices": int(run.mesh.devices.size),
            "wall_s": run.record.wall_s_total,
        },
        "run_dir": str(run.writer.run_dir),
        "hparams": dict(hparams or {}),
        "config": run.config_snapshot,
        "provenance": {k: run.record.attempt[k] for k in PROVENANCE_SUMMARY},
    }
    started = [
        a["init_from"] for a in (*run.record.attempts, run.record.attempt) if "init_from" in a
    ]
    if started:  # the warm start of the attempt that began at step 0
        results["init_from"] = started[0]
    run.record.finish("completed", final_step)
    if run.main:
        shown = dict(hparams or {"task": task.name, "seed": seed})
        run.writer.hparams(final_step, shown, {**progress.last_eval, **final_scalars})
        write_results(run.writer.run_dir, results)
    return results


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
    compare_configs: ConfigCompare = any_difference_allowed,
    on_accept: Callable[[], None] | None = None,
    step_hook: Callable[[int, Batch], Batch] | None = None,
) -> dict[str, Any]:
    """Trains `model` on `task`, resuming from the newest checkpoint of the run directory that
    verifies (damaged ones are moved aside, see `Checkpointer.restore_latest`).

    Per step: the batch and the jitted update (`make_train_step`); every `logger.log_every`
    steps the training metrics; every `eval_every` an evaluation (the task's first split);
    every `checkpoint_every` (and at every new best, and at the end) a checkpoint. At the end
    the best checkpoint is evaluated on every split of the task (e.g. the test set).

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
        compare_configs: how (see `ConfigCompare`); by default no difference refuses a resume.
        on_accept: called once the run directory has been checked and accepted for this run,
            before anything is written into it (the front end saves the run's config there).
        step_hook: `(1-based step, batch) -> batch` applied to every training batch; tests
            inject faults through it (a NaN batch, a kill), nothing else should need it.

    Returns:
        The results (also written to `results.json`).

    Raises:
        DivergenceError: the loss diverged (the last good checkpoint is kept).
        RunDirError: the run directory belongs to another experiment, holds checkpoints with
            `resume` false, or holds only damaged checkpoints; nothing in it was changed.
    """
    run_dir = Path(run_dir).absolute()
    if config.skip_finished and (
        done := finished_results(run_dir, config_snapshot, compare_configs)
    ):
        log.info(
            "Skipping %s: it already holds the results of this run (status completed, same "
            "config); trainer.skip_finished=false evaluates it again",
            run_dir,
        )
        return done
    steps = total_steps if total_steps is not None else resolve_steps(config, task.steps_per_epoch)
    mesh = distributed.make_mesh()
    distributed.check_batch_size(task.batch_size, mesh)
    check_run_dir(config, config_snapshot, run_dir, compare_configs)  # refusals raise here
    # A warm start's source is read before anything is written: a bad one stops a fresh run here.
    source = None
    if config.init_from is not None and not holds_a_run(run_dir):
        source = load_init_source(config)
    if on_accept is not None:
        on_accept()
    best_metric = config.best_metric or task.monitor
    best_mode = config.best_mode or task.monitor_mode
    with contextlib.ExitStack() as cleanup:
        checkpointer = open_checkpointer(run_dir, config, best_metric, best_mode)
        cleanup.callback(checkpointer.close)
        start, state, meta = restore_or_init(
            task, model, optimizer, seed, mesh, checkpointer, config.resume
        )
        if start == 0 and config.init_from is not None:  # a fresh start: the warm start
            source = source or load_init_source(config)
            state = init_state(task, model, optimizer, seed, mesh, source, config.init_params)
        main = distributed.is_main_process()
        writer = RunWriter(run_dir, logger, purge_step=start + 1, enabled=main)
        cleanup.callback(writer.close)
        record = ProvenanceRecord(run_dir, seed, start, enabled=main)
        if start == 0 and source is not None:
            record.note(
                init_from={"run_dir": str(Path(source.run_dir).absolute()), "step": source.step}
            )
        cleanup.push(_finish_record(record, checkpointer))
        sample_key = jax.random.fold_in(jax.random.PRNGKey(seed), SAMPLE_STREAM)
        run = Attempt(
            task, model, schedule, config, logger, checkpointer, writer, record,
            Progress.from_meta(meta), mesh, steps, best_metric, best_mode,
            dict(config_snapshot or {}), make_eval_step(task, model), sample_key, step_hook,
        )  # fmt: skip
        announce(run, state, run_dir)
        example = distributed.shard_tree(task.train_batch(start), mesh, task.batch_size)
        compiled, compile_seconds = compile_train_step(
            task, model, optimizer, state, example, mesh, config.divergence_factor
        )
        log.info("Compiled the train step in %.2fs", compile_seconds)
        writer.scalars(start, {f"{WALL}/compile_s": compile_seconds})
        bar = progress_bar(steps, task.name, "step", initial=start, disable=run.quiet)
        cleanup.callback(bar.close)
        if not bar.disable:
            cleanup.enter_context(logging_redirect_tqdm())
        state = train_loop(run, compiled, state, start, bar)
        bar.close()
        checkpointer.wait()
        results = finish(run, state, max(start, steps), compile_seconds, seed, hparams)
    log.info("Done: %s; results in %s", _format(results["final"]), run_dir / RESULTS_FILE)
    return results
