"""The task contract: what a task supplies, in three parts.

A task is built from its `conf/task/*.yaml` (plain settings, the constructor's keyword arguments)
plus the run's `seed` and `batch_size`. It is the only place that knows what a batch looks like.

**Data.** `train_batch(step)` is a pure function of `(seed, step)`; `eval_batches(split)` are
the fixed batches of each of `splits` (the first is evaluated during training, all at the end);
`steps_per_epoch` (None for generated data) and `tokens(batch)` for throughput.

**Model construction.** `model_class` (a class attribute: a model of `rnnlab.models`) built with
the backbone fields of `conf/model/*.yaml` plus the task-owned fields `model_fields()`
(`num_outputs`, `vocab_size`, ...), so any backbone composes with any task; `model_args(batch,
carry)` are the model's positional inputs for a batch.

**Objective.** `objective(outputs, batch) -> (sums, loss)`: metric sums and the scalar training
loss from the model's outputs; `summarize` turns summed metrics into `split/metric` means plus
`derived` ones; `monitor` names the metric that ranks checkpoints; `baselines` gives reference
numbers for the results.

The trainer (`rnnlab.train`) calls:

    model = task.build_model(cell, backbone)            # model_class(cell, **backbone, **fields)
    params = task.init_params(model, key)
    batch = task.train_batch(step)                      # pure function of (seed, step)
    loss, (sums, carry) = task.loss(model, params, batch, carry, key)   # key None: evaluation
    metrics = task.summarize("valid", summed)           # {"valid/loss": ..., "valid/bpc": ...}

`sums` maps a metric name to `(sum, weight)` so that evaluation over many batches is a weighted
mean (`sum_i s_i / sum_i w_i`), the same whatever the batch sizes.

Stateful tasks (language models with truncated BPTT, Zaremba et al. 2014) set `stateful = True`:
their model returns `(outputs, carry)`, the trainer keeps the carry (behind `stop_gradient`) and
feeds it to the next window; `resets_carry(step)` says when a new pass over the stream starts
from zeros; the carry is part of the checkpointed state. A task whose model returns a carry it
does not keep (language models with random windows) says so in `split_outputs`.

What only language models have (text samples, `vocab.json`) lives with them, in
`rnnlab.tasks.language_model`. A task config's keys are checked against the constructor
(`check_config_keys`): an unknown key stops the run at start-up naming it.
"""

from __future__ import annotations

import abc
import difflib
import importlib
import inspect
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnlab.cells.base import Cell
from rnnlab.checks import check_int
from rnnlab.data.text import Vocabulary
from rnnlab.errors import ConfigError
from rnnlab.typing import Array, Carry, Params, PRNGKey

Batch = dict[str, np.ndarray]
"""Host arrays of one batch; the leading axis of every non-scalar leaf is the batch."""
Sums = dict[str, tuple[Array, Array]]
"""Metric name -> (sum, weight) over a batch."""


def make_model(cls: type[nn.Module], cell: Cell, backbone: Mapping[str, Any], **fields: Any):
    """`cls(cell=cell, **backbone, **fields)` with a clear error for a bad backbone key.

    Args:
        cls: a model class from `rnnlab.models`.
        cell: the recurrent cell.
        backbone: the `model/*.yaml` fields (num_layers, bidirectional, dropout, attention, ...).
        **fields: the task's fields (num_outputs, vocab_size, ...).
    """
    clash = set(backbone) & set(fields)
    if clash:
        raise ValueError(f"model config sets task-owned fields {sorted(clash)}; remove them")
    try:
        return cls(cell=cell, **backbone, **fields)
    except TypeError as err:
        raise ValueError(
            f"cannot build {cls.__name__} from the model config: {err}. Backbone keys given: "
            f"{sorted(backbone)}"
        ) from err


def weighted_cross_entropy(
    logits: Array, labels: Array, weights: Array | None = None
) -> tuple[Sums, Array]:
    """Cross-entropy and accuracy sums for integer labels.

    Args:
        logits: `[..., c]`.
        labels: `[...]` ints.
        weights: `[...]` (1 scored, 0 ignored), or None for all.

    Returns:
        (`{"loss": (sum, weight), "accuracy": (sum, weight)}`, mean loss).
    """
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    w = jnp.ones_like(losses) if weights is None else weights.astype(jnp.float32)
    total = jnp.sum(w)
    sums = {
        "loss": (jnp.sum(losses * w), total),
        "accuracy": (jnp.sum(correct * w), total),
    }
    return sums, sums["loss"][0] / jnp.maximum(total, 1.0)


def regression_sums(predictions: Array, targets: Array) -> tuple[Sums, Array]:
    """MSE (also the loss) and MAE sums; returns (sums, mean squared error)."""
    error = predictions.astype(jnp.float32) - targets.astype(jnp.float32)
    count = jnp.asarray(error.size, jnp.float32)
    sums = {
        "loss": (jnp.sum(jnp.square(error)), count),
        "mse": (jnp.sum(jnp.square(error)), count),
        "mae": (jnp.sum(jnp.abs(error)), count),
    }
    return sums, sums["mse"][0] / count


def dropout_rngs(key: PRNGKey | None) -> dict[str, PRNGKey] | None:
    """Flax RNGs for a training apply (`key`), or None for evaluation."""
    return None if key is None else {"dropout": key}


class Task(abc.ABC):
    """Base class of every task (see the module docstring).

    A subclass writes: `model_class` (and `model_fields`, `model_args` when the defaults do not
    fit), `train_batch`, `eval_batches` and `objective`; its constructor takes `seed`,
    `batch_size` and its config keys, checking each (`ConfigError` naming `task.<key>`).

    Args:
        seed: the run seed; training batches are a pure function of `(seed, step)`.
        batch_size: training batch size (global, over all devices).

    Class attributes:
        name: short name used in logs.
        model_class: the model the task trains (from `rnnlab.models`).
        monitor: the validation metric that ranks checkpoints, and `monitor_mode` min or max.
        stateful: the carry is threaded across training steps (truncated BPTT).
    """

    name: ClassVar[str] = "task"
    model_class: ClassVar[type[nn.Module]]
    monitor: ClassVar[str] = "valid/loss"
    monitor_mode: ClassVar[str] = "min"
    stateful: ClassVar[bool] = False

    def __init__(self, seed: int, batch_size: int):
        # Subclasses check their own settings at construction (`ConfigError` naming
        # `task.<key>` and the range); data-backed tasks check that the data fits them (every
        # split has a batch) when it is first read, which the trainer does at start-up
        # (`steps_per_epoch`, `build_model`), so a bad setting never stops a run mid-training.
        self.seed = check_int("seed", seed, 0)
        self.batch_size = check_int("trainer.batch_size", batch_size, 1)

    # ------------------------------------------------------------------ data

    @property
    def splits(self) -> tuple[str, ...]:
        """Evaluation splits this task has."""
        return ("valid",)

    @property
    def vocab(self) -> Vocabulary | None:
        """The token vocabulary of a task whose inputs are token ids (None otherwise): what a
        warm start (`rnnlab.transfer`) remaps embedding rows by."""
        return None

    @property
    def steps_per_epoch(self) -> int | None:
        """Training steps per pass over the data, or None for generated data."""
        return None

    @abc.abstractmethod
    def train_batch(self, step: int) -> Batch:
        """Training batch `step` (0-based): a pure function of `(seed, step)`."""

    @abc.abstractmethod
    def eval_batches(self, split: str) -> Iterable[Batch]:
        """The fixed batches of an evaluation split, in order."""

    def tokens(self, batch: Batch) -> int:
        """Input time steps in a batch (`b * t`), for `wall/tokens_per_s`."""
        inputs = batch["inputs"]
        return int(inputs.shape[0] * inputs.shape[1])

    def resets_carry(self, step: int) -> bool:
        """Whether training step `step` starts from a zero carry (stateful tasks)."""
        return False

    def describe(self) -> dict[str, Any]:
        """Facts about the data for the run log (sizes, vocabulary)."""
        return {}

    # ------------------------------------------------------------------ model construction

    def model_fields(self) -> dict[str, Any]:
        """The task-owned fields of `model_class` (e.g. `num_outputs`); none by default."""
        return {}

    def build_model(self, cell: Cell, backbone: Mapping[str, Any]) -> nn.Module:
        """`model_class` built from the cell, the backbone fields and `model_fields()`."""
        return make_model(self.model_class, cell, backbone, **self.model_fields())

    def model_args(self, batch: Batch, carry: Carry) -> tuple[Any, ...]:
        """The model's positional inputs for a batch (`model.apply(params, *args, train=...)`)."""
        return (batch["inputs"],)

    def init_params(self, model: nn.Module, key: PRNGKey) -> Params:
        """Fresh parameters, shaped by one example of training batch 0.

        Runs eagerly: the parameter shapes do not depend on the batch, and op-by-op execution
        reuses the small compiled initialisers (orthogonal, Glorot) across runs of a process
        instead of compiling the whole initialisation anew for every model.
        """
        batch = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[:1], self.train_batch(0))
        carry = self.zero_carry(model, 1)
        return model.init(key, *self.model_args(batch, carry))["params"]

    def zero_carry(self, model: nn.Module, batch_size: int) -> Carry:
        """The carry at the start of a stream (None for stateless tasks)."""
        return None

    # ------------------------------------------------------------------ objective

    @abc.abstractmethod
    def objective(self, outputs: Any, batch: Batch) -> tuple[Sums, Array]:
        """`(metric sums, scalar training loss)` from the model's outputs on `batch`."""

    def loss(
        self, model: nn.Module, params: Params, batch: Batch, carry: Carry, key: PRNGKey | None
    ) -> tuple[Array, tuple[Sums, Carry]]:
        """`(loss, (sums, carry))`, the shape `jax.value_and_grad(..., has_aux=True)` needs.

        `key` is the dropout key during training and None during evaluation; the returned
        carry is the model's new one (stateful tasks) or None.
        """
        outputs = model.apply(
            {"params": params},
            *self.model_args(batch, carry),
            train=key is not None,
            rngs=dropout_rngs(key),
        )
        outputs, carry = self.split_outputs(outputs)
        sums, loss = self.objective(outputs, batch)
        return loss, (sums, carry)

    def split_outputs(self, outputs: Any) -> tuple[Any, Carry]:
        """`(what objective reads, the carry to keep)` from the model's outputs: the model's
        `(outputs, carry)` for stateful tasks, else `(outputs, None)`."""
        return outputs if self.stateful else (outputs, None)

    def summarize(self, split: str, sums: Mapping[str, tuple[float, float]]) -> dict[str, float]:
        """Weighted means as `split/metric`, plus the task's derived metrics."""
        means = {name: float(s) / max(float(w), 1e-12) for name, (s, w) in sums.items()}
        means.update(self.derived(means))
        return {f"{split}/{name}": value for name, value in means.items()}

    def derived(self, means: Mapping[str, float]) -> dict[str, float]:
        """Metrics computed from the means (e.g. bits per character); none by default."""
        return {}

    def baselines(self) -> dict[str, float]:
        """Reference numbers logged with the results (e.g. the adding problem's 1/6)."""
        return {}


RUN_ARGUMENTS = {"seed": "seed", "batch_size": "trainer.batch_size"}
"""Constructor arguments the run gives every task, and the config keys that set them."""


def config_keys(cls: type[Task]) -> list[str]:
    """The keys a task config of `cls` may set: its constructor's keyword arguments, and those
    of the parent constructors its `**kwargs` forwards to, less the `RUN_ARGUMENTS`."""
    keys: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        for param in params:
            named = param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
            if named and param.name not in ("self", *RUN_ARGUMENTS, *keys):
                keys.append(param.name)
        if not any(param.kind is param.VAR_KEYWORD for param in params):
            break
    return keys


def check_config_keys(target: str | None, keys: Iterable[str]) -> None:
    """Checks the keys of a task config (`conf/task/*.yaml` with its overrides) against the
    constructor of its `_target_` (see `config_keys`); Hydra's own keys (`_target_`, ...) pass.
    A target that is not an importable `Task` subclass is left for Hydra to report.

    Raises:
        ConfigError: naming the first unknown key (`task.<key>`), the allowed keys and the fix.
    """
    module, _, name = (target or "").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        return
    allowed = config_keys(cls)
    for key in keys:
        if key.startswith("_") and key.endswith("_"):
            continue
        if key in RUN_ARGUMENTS:
            raise ConfigError(
                f"task.{key} cannot be set in a task config: the run gives it; remove "
                f"task.{key} and set {RUN_ARGUMENTS[key]} instead"
            )
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean task.{close[0]}?" if close else ""
            raise ConfigError(
                f"task.{key} is not a setting of task {cls.name} ({cls.__name__}); allowed keys: "
                f"{', '.join(allowed)}.{hint} Remove or rename it where it is set (conf/task/"
                f"*.yaml, an experiment YAML or a +task.{key}= override)"
            )
