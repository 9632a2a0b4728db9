"""Gate traces: what a layer's gates and states do at every step, from the layer itself.

`rnnlab.recurrence.run(..., trace=True)` returns every step's carry and gate activations next to
the outputs (the cell's own `gates` method, the one its `pointwise` is built on), computed by the
same step (`rnnlab.recurrence.step`) as every other run; this module names them:

    gate_trace(cell, params, xs)   -> {"input": [t, h], "forget": ..., "c": ..., "h": ..., "y": ...}
"""

from __future__ import annotations

import jax

from rnnlab import recurrence
from rnnlab.cells.base import Cell
from rnnlab.typing import Array, Carry, Params


def carry_leaf_names(carry: Carry) -> list[str]:
    """Names of a carry's leaves: the NamedTuple fields (`["c", "h"]` for `LSTMState`) or `["h"]`
    for a cell whose carry is the hidden state itself."""
    if hasattr(carry, "_fields"):
        return list(carry._fields)
    leaves = jax.tree_util.tree_leaves(carry)
    return ["h"] if len(leaves) == 1 else [f"leaf{i}" for i in range(len(leaves))]


def named_trace(cell: Cell, trace: recurrence.Trace) -> dict[str, Array]:
    """A direction's `Trace` as name -> `[b, t, ...]`: the gates, every carry leaf under its name
    (`c` and `h` for the LSTM, `h` otherwise) and `y`, the direction's output."""
    named = dict(trace.gates)
    names = carry_leaf_names(cell.initial_carry(1))
    named.update(zip(names, jax.tree_util.tree_leaves(trace.carries), strict=True))
    named["y"] = trace.ys
    return named


def gate_trace(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    lengths: Array | None = None,
    initial_carry: Carry | None = None,
    reverse: bool = False,
) -> dict[str, Array]:
    """Gate activations and states of a cell over a sequence (evaluation mode).

    Args:
        cell: any cell (one without gates, such as Elman, gives only the states).
        params: `cell.init(key, d)`.
        xs: `[t, d]` one sequence, or `[b, t, d]` a batch.
        lengths: `[b]` valid steps (batched input only), or None.
        initial_carry: the starting carry (batched), zeros by default.
        reverse: trace the backward direction of a bidirectional layer.

    Returns:
        Name -> `[t, h]` (or `[b, t, h]`): the gates the cell's `gates()` names (LSTM `input`,
        `forget`, `candidate`, `output`; GRU `reset`, `update`, `candidate`), every carry leaf
        under its name and `y`, the layer output (see `named_trace`). Padded steps hold the
        frozen carry and zero gates and outputs.
    """
    single = xs.ndim == 2
    batch_xs = xs[None] if single else xs
    _, _, trace = recurrence.run(
        cell,
        params,
        batch_xs,
        lengths=lengths,
        initial_carry=initial_carry,
        reverse=reverse,
        trace=True,
    )
    named = named_trace(cell, trace)
    return {k: v[0] for k, v in named.items()} if single else named
