"""Optax optimisers and learning-rate schedules from plain config dataclasses.

The dataclasses are the schema of `conf/optim/` (the runner registers them in Hydra's ConfigStore,
so a misspelt key or a wrong type fails at start-up); this module itself never imports Hydra.

The update rule built by `build_optimizer` is, in order:

    g <- clip(g, -grad_clip_value, grad_clip_value)  (element-wise, as Theano-era code did)
    g <- clip_by_global_norm(g, grad_clip_norm)                  (Pascanu et al. 2013)
    g <- g + weight_decay * w          (coupled L2; sgd, rmsprop and adam only)
    u <- optimiser(g) * schedule(step)  (adamw applies its decoupled decay here, Loshchilov &
                                         Hutter 2019)

Schedules, as a function of the update count `s` (0 for the first update). With `warmup > 0`
units, the rate first rises linearly, `lr * s / warmup` (optax's `linear_schedule`, so the first
update has rate 0 and update `warmup` the full rate), and the schedule below follows with `s`
counted from the end of the warm-up (`optax.join_schedules`), for every schedule alike:

    constant:  lr
    cosine:    lr * (min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * s / S)) / 2),
               S = total_steps - warmup (Loshchilov & Hutter 2017)
    step:      lr * decay_factor ** max(0, floor((s - decay_start) / decay_every) + 1)
               for s >= decay_start, else lr: Zaremba, Sutskever & Vinyals (2014) keep the rate
               for 4 (small) / 6 (medium) / 14 (large) epochs, then divide it by 2 / 1.2 / 1.15
               every epoch.

`unit: epoch` counts `warmup`, `decay_start` and `decay_every` in epochs of the task
(`steps_per_epoch` must then be known).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from rnnlab.checks import check_choice, check_float
from rnnlab.errors import ConfigError

Schedule = Callable[[jax.Array | int], jax.Array]

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "step")
UNITS = ("step", "epoch")


@dataclasses.dataclass
class ScheduleConfig:
    """Learning-rate schedule (schema of `conf/optim/schedule/`).

    Attributes:
        name: "constant", "cosine" or "step".
        warmup: linear warm-up length (in `unit`s); 0 for none.
        min_lr_ratio: cosine only: the final rate as a fraction of the peak.
        decay_start: step only: units at the initial rate before the first decay.
        decay_every: step only: units between decays.
        decay_factor: step only: multiplier applied at each decay.
        unit: "step" or "epoch" for `warmup`, `decay_start`, `decay_every`.
    """

    name: str = "constant"
    warmup: int = 0
    min_lr_ratio: float = 0.0
    decay_start: int = 0
    decay_every: int = 1
    decay_factor: float = 0.5
    unit: str = "step"

    def __post_init__(self) -> None:
        check_choice("optim.schedule.name", self.name, SCHEDULES)
        check_choice("optim.schedule.unit", self.unit, UNITS)
        if self.warmup < 0 or self.decay_start < 0 or self.decay_every < 1:
            raise ConfigError(
                "optim.schedule needs warmup >= 0, decay_start >= 0 and decay_every >= 1; got "
                f"{self.warmup}, {self.decay_start}, {self.decay_every}"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(
                f"optim.schedule.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"
            )
        check_float("optim.schedule.decay_factor", self.decay_factor, 0.0, low_open=True)


@dataclasses.dataclass
class OptimConfig:
    """Optimiser settings (schema of `conf/optim/`).

    Attributes:
        name: "adam", "adamw", "sgd" (with `momentum`, optionally Nesterov) or "rmsprop".
        learning_rate: peak learning rate.
        b1, b2, eps: Adam/AdamW moments and epsilon (`eps` also for RMSProp).
        momentum: SGD and RMSProp momentum (0 for none).
        nesterov: Nesterov momentum (SGD, RMSProp).
        decay: RMSProp's squared-gradient decay.
        initial_scale: RMSProp's starting mean square (optax's `initial_scale`; 0 by default, so
            the first update is `lr * g / sqrt((1 - decay) g^2)`, about 3x lr per parameter; e.g.
            Arjovsky et al.'s code starts it at 1e-3, which damps the first steps).
        centered: centred RMSProp (Graves 2013).
        weight_decay: AdamW's decoupled decay, or an L2 term added to the gradient otherwise.
        decay_all: also decay vectors (biases, norms, peepholes); by default only matrices.
        grad_clip_norm: clip the gradient to this global norm (> 0); None for no clipping.
        grad_clip_value: clip each gradient element to [-value, value] (> 0) before the norm
            clipping; None (default) for none.
        schedule: the learning-rate schedule.
    """

    name: str = "adam"
    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.0
    nesterov: bool = False
    decay: float = 0.9
    initial_scale: float = 0.0
    centered: bool = False
    weight_decay: float = 0.0
    decay_all: bool = False
    grad_clip_norm: float | None = None
    grad_clip_value: float | None = None
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        check_choice("optim.name", self.name, OPTIMIZERS)
        check_float("optim.learning_rate", self.learning_rate, 0.0, low_open=True)
        check_float("optim.eps", self.eps, 0.0, low_open=True)
        check_float("optim.weight_decay", self.weight_decay, 0.0)
        for key in ("b1", "b2", "momentum", "decay"):
            check_float(f"optim.{key}", getattr(self, key), 0.0, 1.0, high_open=True)
        # null turns clipping off; 0 or a negative norm would not clip but corrupt the update
        for key in ("grad_clip_norm", "grad_clip_value"):
            check_float(f"optim.{key}", getattr(self, key), 0.0, low_open=True, optional=True)
        check_float("optim.initial_scale", self.initial_scale, 0.0)
        if isinstance(self.schedule, dict):
            self.schedule = ScheduleConfig(**self.schedule)


def _units_to_steps(units: int, config: ScheduleConfig, steps_per_epoch: int | None) -> int:
    if config.unit == "step":
        return units
    if steps_per_epoch is None:
        raise ConfigError(
            "optim.schedule.unit=epoch needs a task with epochs (a dataset); this task has "
            "none: use optim.schedule.unit=step"
        )
    return units * steps_per_epoch


def build_schedule(
    learning_rate: float,
    config: ScheduleConfig,
    total_steps: int,
    steps_per_epoch: int | None = None,
) -> Schedule:
    """The learning rate as a function of the update count (see the module docstring).

    Args:
        learning_rate: peak rate.
        config: schedule settings.
        total_steps: length of training in updates (the cosine horizon).
        steps_per_epoch: updates per epoch; required when `config.unit == "epoch"`.

    Returns:
        `schedule(count) -> lr`, jit-able; `count` is the number of updates applied so far.
    """
    warmup = _units_to_steps(config.warmup, config, steps_per_epoch)
    if config.name == "cosine":
        after = optax.cosine_decay_schedule(
            init_value=learning_rate,
            decay_steps=max(total_steps - warmup, 1),
            alpha=config.min_lr_ratio,
        )
    else:
        after = _constant_or_step(learning_rate, config, steps_per_epoch)
    if warmup == 0:
        return after
    rise = optax.linear_schedule(init_value=0.0, end_value=learning_rate, transition_steps=warmup)
    return optax.join_schedules([rise, after], boundaries=[warmup])


def _constant_or_step(
    learning_rate: float, config: ScheduleConfig, steps_per_epoch: int | None
) -> Schedule:
    """The constant or step-decay rate (see the module docstring)."""
    start = _units_to_steps(config.decay_start, config, steps_per_epoch)
    every = _units_to_steps(config.decay_every, config, steps_per_epoch)
    step_decay = config.name == "step"

    def schedule(count: jax.Array | int) -> jax.Array:
        count = jnp.asarray(count, jnp.float32)
        lr = jnp.asarray(learning_rate, jnp.float32)
        if step_decay:
            exponent = jnp.where(count >= start, jnp.floor((count - start) / every) + 1.0, 0.0)
            lr = lr * jnp.asarray(config.decay_factor, jnp.float32) ** exponent
        return lr

    return schedule


def decay_mask(params: optax.Params) -> optax.Params:
    """True for the leaves weight decay applies to by default: matrices (ndim >= 2)."""
    return jax.tree_util.tree_map(lambda x: jnp.ndim(x) >= 2, params)


def build_optimizer(
    config: OptimConfig, total_steps: int, steps_per_epoch: int | None = None
) -> tuple[optax.GradientTransformation, Schedule]:
    """The optax transformation described by `config`, and its schedule (for logging).

    Args:
        config: optimiser settings.
        total_steps: training length in updates.
        steps_per_epoch: updates per epoch, for epoch-based schedules.

    Returns:
        `(optimizer, schedule)`; `schedule(step)` is the rate used by update `step` (0-based).
    """
    schedule = build_schedule(config.learning_rate, config.schedule, total_steps, steps_per_epoch)
    mask = None if config.decay_all else decay_mask
    parts: list[optax.GradientTransformation] = []
    if config.grad_clip_value:
        parts.append(optax.clip(config.grad_clip_value))
    if config.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if config.weight_decay > 0 and config.name != "adamw":
        parts.append(optax.add_decayed_weights(config.weight_decay, mask))
    momentum = config.momentum or None
    if config.name == "adam":
        parts.append(optax.adam(schedule, b1=config.b1, b2=config.b2, eps=config.eps))
    elif config.name == "adamw":
        parts.append(
            optax.adamw(
                schedule,
                b1=config.b1,
                b2=config.b2,
                eps=config.eps,
                weight_decay=config.weight_decay,
                mask=mask,
            )
        )
    elif config.name == "sgd":
        parts.append(optax.sgd(schedule, momentum=momentum, nesterov=config.nesterov))
    else:
        parts.append(
            optax.rmsprop(
                schedule,
                decay=config.decay,
                eps=config.eps,
                initial_scale=config.initial_scale,
                centered=config.centered,
                momentum=momentum,
                nesterov=config.nesterov,
            )
        )
    return optax.chain(*parts), schedule
