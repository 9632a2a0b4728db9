"""Step-by-step re-runs of a cell: gate activations, and a scan with additive carry perturbations.

`rnnlab.recurrence.run` is a fused scan that returns only the outputs and the final carry; the
diagnostics need what happens inside each step. Both functions here re-run the cell's own pure
functions (`project_inputs`, `feedback`, `pointwise`, see `rnnlab.cells.base`) one step at a time
with the same per-step semantics as `recurrence.run` in evaluation mode (lengths freeze the carry
and zero the output, resets restart from zeros, zoneout by its expectation), so their outputs equal
the layer's (tested in `tests/test_diagnostics.py`):

    gate_trace(cell, params, xs)           -> {"input": [t, h], "forget": ..., "hidden": [t, h]}
    traced_run(cell, params, xs, deltas)   -> (final carry, ys, carries), with
        carry_t = step(carry_{t-1}, x_t) + delta_t

`traced_run` with zero `deltas` computes the same function as `recurrence.run`, and
`jax.grad` with respect to `deltas` is the total derivative `d loss / d carry_t` (through the
output at t *and* every later step): the quantity of the vanishing-gradient picture (Bengio et al.
1994; Pascanu, Mikolov & Bengio 2013), which the layer's fused scan cannot expose without a hook.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnnlab.attention import lengths_to_mask
from rnnlab.cells.base import Cell
from rnnlab.recurrence import reverse_padded, reverse_resets
from rnnlab.typing import Array, Carry, Params


def carry_leaf_names(carry: Carry) -> list[str]:
    """Names of a carry's leaves: the NamedTuple fields (`["c", "h"]` for `LSTMState`) or `["h"]`
    for a cell whose carry is the hidden state itself."""
    if hasattr(carry, "_fields"):
        return list(carry._fields)
    leaves = jax.tree_util.tree_leaves(carry)
    return ["h"] if len(leaves) == 1 else [f"leaf{i}" for i in range(len(leaves))]


def cell_gates(
    cell: Cell, params: Params, carry_prev: Carry, projected_t: Array, recurrent_t: Array
) -> dict[str, Array]:
    """The gate activations of one step, `[b, h]` each: the cell's own `gates` method (the one
    its `pointwise` is built on), or none for a cell without gates (Elman).

    LSTM: `input`, `forget`, `output` (sigmoids) and `candidate` (tanh `g`); GRU: `reset`,
    `update` (`z`: weight of the old state) and `candidate` (`n`).
    """
    gates = getattr(cell, "gates", None)
    return {} if gates is None else gates(params, carry_prev, projected_t, recurrent_t)


def _row_mask(flag: Array, like: Array) -> Array:
    """`flag: [b]` shaped to broadcast against `like: [b, ...]`."""
    return flag.reshape(flag.shape + (1,) * (like.ndim - 1)) > 0


def _select(flag: Array, on_true: Carry, on_false: Carry) -> Carry:
    return jax.tree_util.tree_map(
        lambda a, b: jnp.where(_row_mask(flag, a), a, b), on_true, on_false
    )


def _time_major(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), tree)


def traced_run(
    cell: Cell,
    params: Params,
    xs: Array,
    deltas: Carry | None = None,
    *,
    lengths: Array | None = None,
    resets: Array | None = None,
    initial_carry: Carry | None = None,
    reverse: bool = False,
    zoneout: float = 0.0,
    with_gates: bool = False,
) -> tuple[Carry, Array, Carry, dict[str, Array]]:
    """`recurrence.run` in evaluation mode, one step at a time, with additive carry perturbations.

    Per step (sequence n, step t; the same order of operations as `recurrence.run`):

        start = zero carry if resets[n, t] else carry_{t-1}
        new, y = cell.pointwise(params, start, P[n, t], feedback(start) @ W_hh^T)
        new = zoneout * start + (1 - zoneout) * new;  y = feedback(new)      (if zoneout > 0)
        new = new + delta[n, t];  y = y + feedback(delta[n, t])
        carry_t, y_t = (new, y) if t < lengths[n] else (carry_{t-1}, 0)

    Args:
        cell: the cell.
        params: `cell.init(key, d)`.
        xs: `[b, t, d]` inputs.
        deltas: carry-shaped pytree of `[b, t, ...]` perturbations (in the original time order
            also when `reverse`), or None for none. Differentiate with respect to zeros here to
            get `d loss / d carry_t`.
        lengths: `[b]` valid steps, or None.
        resets: `[b, t]` 1 where the carry restarts from zero before the step, or None.
        initial_carry: the starting carry; zeros by default.
        reverse: run each sequence back to front within its length (outputs in original order).
        zoneout: the layer's zoneout rate (evaluation uses its expectation).
        with_gates: also return the gate activations (`cell_gates`) of every step.

    Returns:
        `(final carry, ys: [b, t, o], carries, gates)`: `carries` is the carry after every step as
        a pytree of `[b, t, ...]` leaves, `gates` maps a gate name to `[b, t, h]` (empty unless
        `with_gates`). Padded steps hold the frozen carry and zero outputs/gates.
    """
    batch, time = xs.shape[:2]
    flip = (lambda a: reverse_padded(a, lengths)) if reverse else (lambda a: a)
    carry0 = cell.initial_carry(batch, xs.dtype) if initial_carry is None else initial_carry
    zeros = cell.initial_carry(batch, xs.dtype)
    if deltas is None:
        deltas = jax.tree_util.tree_map(
            lambda z: jnp.zeros((batch, time, *z.shape[1:]), z.dtype), zeros
        )
    valid = jnp.ones((batch, time), xs.dtype)
    if lengths is not None:
        valid = lengths_to_mask(lengths, time).astype(xs.dtype)
    restart = jnp.zeros((batch, time), xs.dtype) if resets is None else resets.astype(xs.dtype)
    if reverse and resets is not None:
        restart = reverse_resets(restart, lengths)
    # Reversal within each length keeps the padding in place, so `valid` needs no flip.
    projected = cell.project_inputs(params, flip(xs))
    inputs = _time_major((projected, jax.tree_util.tree_map(flip, deltas), valid, restart))
    w_hh_t = params["w_hh"].T

    def body(carry: Carry, step_inputs: tuple[Any, ...]) -> tuple[Carry, tuple[Any, ...]]:
        projected_t, delta_t, valid_t, restart_t = step_inputs
        start = _select(restart_t, zeros, carry)
        recurrent_t = cell.feedback(start) @ w_hh_t
        new, y = cell.pointwise(params, start, projected_t, recurrent_t)
        if zoneout > 0:
            new = jax.tree_util.tree_map(lambda o, n: zoneout * o + (1 - zoneout) * n, start, new)
            y = cell.feedback(new)
        new = jax.tree_util.tree_map(jnp.add, new, delta_t)
        y = y + cell.feedback(delta_t)
        gates = cell_gates(cell, params, start, projected_t, recurrent_t) if with_gates else {}
        new = _select(valid_t, new, carry)
        keep = lambda a: jnp.where(_row_mask(valid_t, a), a, jnp.zeros_like(a))
        return new, (keep(y), new, {k: keep(v) for k, v in gates.items()})

    final, (ys, carries, gates) = jax.lax.scan(body, carry0, inputs)
    back = lambda tree: jax.tree_util.tree_map(flip, _time_major(tree))
    return final, back(ys), back(carries), back(gates)


def gate_trace(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    lengths: Array | None = None,
    initial_carry: Carry | None = None,
    reverse: bool = False,
) -> dict[str, Array]:
    """Gate activations and states of a cell over a sequence, from the cell's own functions.

    Args:
        cell: an `LSTMCell`, `GRUCell`, `ElmanCell` (or any cell: then only the states).
        params: `cell.init(key, d)`.
        xs: `[t, d]` one sequence, or `[b, t, d]` a batch.
        lengths: `[b]` valid steps (batched input only), or None.
        initial_carry: the starting carry (batched), zeros by default.
        reverse: trace the backward direction of a bidirectional layer.

    Returns:
        Name -> `[t, h]` (or `[b, t, h]`): the gates the cell's `gates()` names (LSTM `input`,
        `forget`, `candidate`, `output`; GRU `reset`, `update`, `candidate`), every carry leaf
        under its name (`c` cell state and `h` for the LSTM, `h` otherwise), and `y`, the
        layer output `y_t` (equal to `recurrence.run(cell, params, xs)[1]`).
    """
    single = xs.ndim == 2
    batch_xs = xs[None] if single else xs
    _, ys, carries, gates = traced_run(
        cell,
        params,
        batch_xs,
        lengths=lengths,
        initial_carry=initial_carry,
        reverse=reverse,
        with_gates=True,
    )
    names = carry_leaf_names(cell.initial_carry(1))
    trace = dict(gates)
    trace.update(zip(names, jax.tree_util.tree_leaves(carries), strict=True))
    trace["y"] = ys
    return {k: v[0] for k, v in trace.items()} if single else trace
