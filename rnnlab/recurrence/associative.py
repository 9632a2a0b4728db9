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
is already a composition of elementwise products and sums).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnlab.cells.base import Cell, declared
from rnnlab.recurrence.step import StepAux
from rnnlab.typing import Array

REQUIRES = "linear_recurrence"


def combine(earlier: tuple[Array, Array], later: tuple[Array, Array]) -> tuple[Array, Array]:
    """Two steps `h -> a1 h + b1` then `h -> a2 h + b2` as one: `h -> a1 a2 h + (a2 b1 + b2)`."""
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def coefficients(
    cell: Cell, params: dict, xs: Array, carry0: Array, aux: StepAux
) -> tuple[Array, Array]:
    """`(a, b)`, time-major `[t, b, h]`, with every step option folded in (module docstring)."""
    projected = jnp.swapaxes(cell.project_inputs(params, xs), 0, 1)  # [t, b, g]
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


def run(cell: Cell, params: dict, xs: Array, carry0: Array, aux: StepAux) -> tuple[Array, Array]:
    """`(final carry [b, h], ys [t, b, h])` of a linear cell over `xs: [b, t, d]`."""
    if xs.shape[1] == 0:
        return carry0, jnp.zeros((0, *carry0.shape), carry0.dtype)
    a, b = coefficients(cell, params, xs, carry0, aux)
    _, hs = jax.lax.associative_scan(combine, (a, b), axis=0)
    carries = cell.carry_of(hs).astype(carry0.dtype)  # type: ignore[attr-defined]
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
