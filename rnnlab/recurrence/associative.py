"""The associative-scan backend: a linear recurrence `h_t = a_t * h_{t-1} + b_t` over the whole
sequence in parallel (`jax.lax.associative_scan`, O(log t) depth), for cells that declare
`linear_recurrence` (their coefficients come from the input alone: `rnnlab.cells.minimal`,
`rnnlab.cells.rglru`, `rnnlab.cells.lru`).

Every option of a layer's step (`step.py`) keeps the recurrence linear, so each becomes a change
of `(a_t, b_t)` before the scan (processing order, a reverse direction already reversed):

    zoneout keep k_t:               a_t = k_t + (1 - k_t) a_t,  b_t = (1 - k_t) b_t
    reset at t (packed sequences):  a_t = 0                  (the carry restarts from zeros)
    t >= length (padding):          a_t = 1,  b_t = 0        (the carry holds; y_t = 0)
    initial carry h_0:              b_1 = b_1 + a_1 h_0

A complex recurrence (the LRU: `complex_state`) scans complex `(a, b)` the same way; its real
carry is converted with the cell's `state` / `carry_of`. Zoneout keeps the real and imaginary
parts of a unit with independent masks, which is no complex-diagonal step, so it runs on the
sequential scan.

Composing two steps gives one: `(a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2)`; the scan's
running `b` is `h_t`. Differentiated by JAX (no hand-written reverse pass is needed: the scan
is already a composition of elementwise products and sums). The input projection, the only
matmul here, takes the layer's `matmul_dtype` (`precision.py`).

The log-space scan (`run_log_space`, the layer's `backend="log_space"`) is how Feng et al. (2024)
train minGRU / minLSTM, after Heinsen (2023, "Efficient Parallelization of a Ubiquitous
Sequential Computation"): with `a_t, b_t > 0` (the cells' positive candidate `g`), it scans
`(log a_t, log b_t)` and returns `h_t = exp(log h_t)`. The cells give the logs directly
(`log_coefficients`: `log sigma(k) = -softplus(-k)`, never `log` of a rounded sigmoid). Heinsen's
closed form, `log h_t = a*_t + logcumsumexp(log b - a*)_t` with `a* = cumsum(log a)`, is the
same composition evaluated as two prefix sums; here it is the associative scan of the
log-semiring step

    (la1, lb1) then (la2, lb2) = (la1 + la2, logaddexp(lb1 + la2, lb2))

because the closed form subtracts running sums that grow with `t` (float32 loses `|a*_t|` x 6e-8
of `log h_t` there) and cannot express `a_t = 0` (a packed-sequence reset: `-inf - -inf`).
Every layer option folds in as above, in logs, with `log 0` the finite `LOG_ZERO` (`exp` of it
is 0, and so is every gradient through it, where an infinite one would give NaN); the initial
carry, which may have any sign, is added outside the logs: `h_t = exp(lb_t) + exp(la_t) h_0`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from rnnlab.cells.base import Cell, declared
from rnnlab.recurrence.step import StepAux
from rnnlab.typing import Array

REQUIRES = "linear_recurrence"
LOG_SPACE = "log_space"
LOG_ZERO = -1e20
"""`log 0` in the log-space scan: finite, so that `exp` of it and every gradient through it are
exactly 0 (far below any `log h`, and `t` of them still far from float32's range)."""


def combine(earlier: tuple[Array, Array], later: tuple[Array, Array]) -> tuple[Array, Array]:
    """Two steps `h -> a1 h + b1` then `h -> a2 h + b2` as one: `h -> a1 a2 h + (a2 b1 + b2)`."""
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def coefficients(
    cell: Cell,
    params: dict,
    xs: Array,
    carry0: Array,
    aux: StepAux,
    matmul_dtype: str = "float32",
) -> tuple[Array, Array]:
    """`(a, b)`, time-major `[t, b, h]`, with every step option folded in (module docstring);
    the input projection under `matmul_dtype`."""
    projected = jnp.swapaxes(cell.project_inputs(params, xs, matmul_dtype), 0, 1)  # [t, b, g]
    a, b = cell.coefficients(params, projected)  # type: ignore[attr-defined]
    if aux.zoneout_keep is not None:
        keep = aux.zoneout_keep
        a, b = keep + (1.0 - keep) * a, (1.0 - keep) * b
    if aux.reset is not None:  # after zoneout: a reset step mixes from zeros, not h_(t-1)
        a = a * (1.0 - aux.reset[..., None].astype(a.dtype))
    if aux.valid is not None:
        valid = aux.valid[..., None].astype(a.dtype)
        a, b = valid * a + (1.0 - valid), valid * b
    return a, b.at[0].add(a[0] * cell.state(carry0))  # type: ignore[attr-defined]


def log_combine(earlier: tuple[Array, Array], later: tuple[Array, Array]) -> tuple[Array, Array]:
    """`combine` in logs: `(log a, log b)` of two steps composed."""
    la1, lb1 = earlier
    la2, lb2 = later
    return la1 + la2, jnp.logaddexp(lb1 + la2, lb2)


def _log(x: Array) -> Array:
    """`log x` of a mask or keep probability in [0, 1], with `LOG_ZERO` for 0."""
    return jnp.maximum(jnp.log(x), LOG_ZERO)


def log_coefficients(
    cell: Cell, params: dict, xs: Array, aux: StepAux, matmul_dtype: str = "float32"
) -> tuple[Array, Array]:
    """`(log a, log b)`, time-major `[t, b, h]`, with zoneout, resets and padding folded in
    (`coefficients` in logs; the initial carry is added after the scan)."""
    projected = jnp.swapaxes(cell.project_inputs(params, xs, matmul_dtype), 0, 1)  # [t, b, g]
    log_a, log_b = cell.log_coefficients(params, projected)  # type: ignore[attr-defined]
    if aux.zoneout_keep is not None:
        keep = aux.zoneout_keep.astype(log_a.dtype)
        log_a = jnp.logaddexp(_log(keep), _log(1.0 - keep) + log_a)
        log_b = _log(1.0 - keep) + log_b
    if aux.reset is not None:
        log_a = log_a + _log(1.0 - aux.reset[..., None].astype(log_a.dtype))
    if aux.valid is not None:
        valid = aux.valid[..., None].astype(log_a.dtype)
        log_a = jnp.logaddexp(_log(valid) + log_a, _log(1.0 - valid))
        log_b = _log(valid) + log_b
    return log_a, log_b


def run_log_space(
    cell: Cell,
    params: dict,
    xs: Array,
    carry0: Array,
    aux: StepAux,
    matmul_dtype: str = "float32",
) -> tuple[Array, Array]:
    """`run` in log space (module docstring): `(final carry [b, h], ys [t, b, h])`."""

    def states() -> Array:
        log_a, log_b = log_coefficients(cell, params, xs, aux, matmul_dtype)
        log_prod, log_h = jax.lax.associative_scan(log_combine, (log_a, log_b), axis=0)
        return jnp.exp(log_h) + jnp.exp(log_prod) * carry0[None].astype(log_h.dtype)

    return _outputs(cell, states, xs, carry0, aux)


def run(
    cell: Cell,
    params: dict,
    xs: Array,
    carry0: Array,
    aux: StepAux,
    matmul_dtype: str = "float32",
) -> tuple[Array, Array]:
    """`(final carry [b, h], ys [t, b, h])` of a linear cell over `xs: [b, t, d]`, the input
    projection under `matmul_dtype`."""

    def states() -> Array:
        a, b = coefficients(cell, params, xs, carry0, aux, matmul_dtype)
        return jax.lax.associative_scan(combine, (a, b), axis=0)[1]

    return _outputs(cell, states, xs, carry0, aux)


def _outputs(
    cell: Cell, states: Callable[[], Array], xs: Array, carry0: Array, aux: StepAux
) -> tuple[Array, Array]:
    """`(final carry, ys)` from the scanned `h_t` (`states()`, `[t, b, n]`; not called for an
    empty sequence): carries in the carry's dtype, outputs zero at padded steps."""
    if xs.shape[1] == 0:
        return carry0, jnp.zeros((0, *carry0.shape), carry0.dtype)
    carries = cell.carry_of(states()).astype(carry0.dtype)  # type: ignore[attr-defined]
    ys = carries if aux.valid is None else carries * aux.valid[..., None].astype(carries.dtype)
    return carries[-1], ys


def unsupported(cell: Cell, traced: bool, zoneout: bool = False) -> str | None:
    """Why the associative scan cannot run this request, or None."""
    if not declared(cell, REQUIRES):
        return (
            f"{type(cell).__name__} is not a linear recurrence (its gates read h_(t-1)); the "
            "associative scan runs cells that declare linear_recurrence (mingru, minlstm, "
            "rglru, lru)"
        )
    if traced:
        return "per-step traces and carry perturbations run on the XLA scan"
    if zoneout and getattr(cell, "complex_state", False):
        return (
            f"zoneout on {type(cell).__name__}'s complex state keeps its real and imaginary "
            "parts apart, which is no complex-diagonal step; it runs on the XLA scan"
        )
    return None


def log_space_unsupported(cell: Cell, traced: bool) -> str | None:
    """Why the log-space scan cannot run this request, or None."""
    log_space = declared(cell, LOG_SPACE)
    if log_space is None:
        return (
            f"{type(cell).__name__} has no log-space form (cells declaring log_space: mingru, "
            "minlstm)"
        )
    if not log_space:
        return (
            f"{type(cell).__name__} with positive_candidate=false can have b_t < 0, whose log "
            "does not exist; set positive_candidate=true (the paper's g) or use "
            'backend="associative"'
        )
    if traced:
        return "per-step traces and carry perturbations run on the XLA scan"
    return None
