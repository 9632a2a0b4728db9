"""One step of a recurrent layer: the per-step semantics every backend computes.

For step t of sequence n (all options compose):

    start       = initial (zero) carry if resets[n, t] else carry_prev      (packed sequences)
    h_in        = feedback(start) * recurrent_mask[n]                        (Gal & Ghahramani 2016)
    new, y      = cell.pointwise(params, start, P[n, t], h_in @ W_hh^T)
    new         = keep * start + (1 - keep) * new;  y = feedback(new)        (zoneout, Krueger
                                                                              et al. 2017)
    new         = new + delta[n, t];  y = y + feedback(delta[n, t])          (diagnostics only)
    carry, y    = (new, y) if t < lengths[n] else (carry_prev, 0)            (padding changes
                                                                              nothing)

`feedback` and `transition` below are that definition; the XLA scan (`scan.py`), its hand-written
reverse pass and the gate traces call them, and the native kernel implements the same equations in
C++ (tested bit-for-bit against the scan in `tests/test_native_kernel.py`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.recurrent import flip_sequences

from rnnlab.cells.base import Cell
from rnnlab.typing import Array, Carry, Params, PRNGKey

LAYER_OWNED = ("w_ih", "w_hh", "b")
"""Params used by the layer's matmuls/projection; `cell.pointwise` sees the rest."""


class StepAux(NamedTuple):
    """Per-step, non-differentiable inputs of the scan, time-major. Absent options are None.

    Attributes:
        valid: `[t, b]` 1.0 where t < length.
        reset: `[t, b]` 1.0 where the carry restarts from zero before step t.
        zoneout_keep: carry-shaped pytree of `[t, b, ...]` probabilities/masks of keeping the
            previous value.
        delta: carry-shaped pytree of `[t, b, ...]` additive perturbations of each step's new
            carry (diagnostics: the gradient with respect to zeros here is `d loss / d carry_t`).
    """

    valid: Array | None = None
    reset: Array | None = None
    zoneout_keep: Any = None
    delta: Any = None


# ----------------------------------------------------------------------------- validation


def _concrete(x: Any) -> np.ndarray | None:
    """`x` as numpy if its value is known now (not a tracer under jit), else None."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def validate_inputs(cell: Cell, params: Params, xs: Array, lengths: Array | None) -> None:
    """Raise a ValueError naming the problem for a wrongly shaped input or impossible lengths."""
    if not isinstance(params, dict) or "w_ih" not in params or "w_hh" not in params:
        raise ValueError(
            f"params for {type(cell).__name__} must be the dict returned by cell.init(key, d) "
            f"(with 'w_ih' and 'w_hh'); got {type(params).__name__}"
        )
    if xs.ndim != 3:
        raise ValueError(
            f"xs must be [batch, time, features] (rank 3), got shape {tuple(xs.shape)}; "
            "add a batch axis with xs[None] for a single sequence"
        )
    expected = params["w_ih"].shape[-1]
    if xs.shape[-1] != expected:
        raise ValueError(
            f"xs has {xs.shape[-1]} features but the params were initialised for input_size="
            f"{expected}; re-initialise with cell.init(key, {xs.shape[-1]})"
        )
    if lengths is None:
        return
    if lengths.shape != (xs.shape[0],):
        raise ValueError(
            f"lengths must have shape [batch]=({xs.shape[0]},), got {tuple(lengths.shape)}"
        )
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(f"lengths must be integers, got dtype {lengths.dtype}")
    values = _concrete(lengths)
    if values is not None and values.size:
        if values.min() < 0:
            raise ValueError(f"lengths must be >= 0, got min {values.min()}")
        if values.max() > xs.shape[1]:
            raise ValueError(
                f"lengths must be <= the time axis ({xs.shape[1]}), got max {values.max()}"
            )


# ----------------------------------------------------------------------------- per-sequence order


def reverse_padded(xs: Array, lengths: Array | None, time_axis: int = 1) -> Array:
    """Reverse each sequence of `xs` (`[b, t, ...]`, or `[t, b, ...]` with `time_axis=0`) within
    its own length; the padding stays after it (`flax.linen.recurrent.flip_sequences`).

    An involution: applying it twice gives `xs` back (PyTorch packed-sequence semantics)."""
    return flip_sequences(xs, lengths, num_batch_dims=1, time_major=time_axis == 0)


def reverse_resets(resets: Array, lengths: Array | None) -> Array:
    """Segment starts `[b, t]` for the reversed sequence: a segment that ends at step e in forward
    order starts at e's reversed position."""
    ends = jnp.concatenate([resets[:, 1:], jnp.zeros_like(resets[:, :1])], axis=1)
    if lengths is not None:
        ends = jnp.where(jnp.arange(resets.shape[1])[None, :] + 1 < lengths[:, None], ends, 0)
    return reverse_padded(ends, lengths)


# ----------------------------------------------------------------------------- masks


def recurrent_dropout_mask(key: PRNGKey, rate: float, shape: tuple[int, ...], dtype: Any) -> Array:
    """One inverted-dropout mask per sequence, reused at every step (Gal & Ghahramani 2016)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return keep.astype(dtype) / (1.0 - rate)


def zoneout_keep(key: PRNGKey | None, rate: float, carry: Carry, time: int) -> Carry:
    """Per-step zoneout masks (train: Bernoulli(rate), 1 = keep the old value) or, with `key=None`,
    the constant `rate` (evaluation: the expectation). Leaves are `[t, *leaf.shape]`."""
    leaves, treedef = jax.tree_util.tree_flatten(carry)
    if key is None:
        masks = [jnp.full((time, *x.shape), rate, x.dtype) for x in leaves]
    else:
        keys = jax.random.split(key, len(leaves))
        masks = [
            jax.random.bernoulli(k, rate, (time, *x.shape)).astype(x.dtype)
            for k, x in zip(keys, leaves, strict=True)
        ]
    return jax.tree_util.tree_unflatten(treedef, masks)


# ----------------------------------------------------------------------------- the step


def _where(flag: Array | None, on_true: Carry, on_false: Carry) -> Carry:
    """Per-row select between two carries; `flag: [b]`."""
    if flag is None:
        return on_true

    def pick(a: Array, b: Array) -> Array:
        return jnp.where(flag.reshape(flag.shape + (1,) * (a.ndim - 1)) > 0, a, b)

    return jax.tree_util.tree_map(pick, on_true, on_false)


def start_carry(carry_prev: Carry, reset_t: Array | None) -> Carry:
    """The carry a step starts from: zeros for the rows where a segment starts (`reset_t: [b]`)."""
    if reset_t is None:
        return carry_prev
    zeros = jax.tree_util.tree_map(jnp.zeros_like, carry_prev)
    return _where(reset_t, zeros, carry_prev)


def feedback(cell: Cell, carry_prev: Carry, aux_t: StepAux, recurrent_mask: Array | None) -> Array:
    """The vector that multiplies `W_hh` at this step, `[b, h_fb]`."""
    h_in = cell.feedback(start_carry(carry_prev, aux_t.reset))
    return h_in if recurrent_mask is None else h_in * recurrent_mask


def transition(
    cell: Cell,
    small: Params,
    carry_prev: Carry,
    projected_t: Array,
    recurrent_t: Array,
    aux_t: StepAux,
) -> tuple[Carry, Array]:
    """Everything of a step except the recurrent matmul: gates, zoneout, perturbation, padding.

    Args:
        small: the cell's params other than `LAYER_OWNED` (e.g. GRU's `b_hn`, layer norm).
        carry_prev: the carry after step t - 1.
        projected_t: `[b, g]` the input pre-activation `x_t @ W_ih^T + b`.
        recurrent_t: `[b, g_rec]` the recurrent pre-activation `feedback(...) @ W_hh^T`.
        aux_t: this step's slice of `StepAux` (each field `[b, ...]` or None).

    Returns:
        (carry after step t, `y_t: [b, o]`).
    """
    start = start_carry(carry_prev, aux_t.reset)
    new, y = cell.pointwise(small, start, projected_t, recurrent_t)
    if aux_t.zoneout_keep is not None:
        new = jax.tree_util.tree_map(
            lambda k, old, n: k * old + (1.0 - k) * n, aux_t.zoneout_keep, start, new
        )
        # Zoneout's output is the zoned-out state (Krueger et al. 2017, eq. 3).
        y = cell.feedback(new)
    if aux_t.delta is not None:
        new = jax.tree_util.tree_map(jnp.add, new, aux_t.delta)
        y = y + cell.feedback(aux_t.delta)
    if aux_t.valid is not None:
        new = _where(aux_t.valid, new, carry_prev)
        y = jnp.where(aux_t.valid[:, None] > 0, y, jnp.zeros_like(y))
    return new, y


def step_gates(
    cell: Cell,
    small: Params,
    carry_prev: Carry,
    projected_t: Array,
    recurrent_t: Array,
    aux_t: StepAux,
) -> dict[str, Array]:
    """The gate activations of a step, `[b, h]` each, zero on padded rows: the cell's own `gates`
    method (the one its `pointwise` is built on), or none for a cell without gates (Elman).

    LSTM: `input`, `forget`, `output` (sigmoids) and `candidate` (tanh `g`); GRU: `reset`,
    `update` (`z`: weight of the old state) and `candidate` (`n`).
    """
    gates = getattr(cell, "gates", None)
    if gates is None:
        return {}
    values = gates(small, start_carry(carry_prev, aux_t.reset), projected_t, recurrent_t)
    if aux_t.valid is None:
        return values
    return {k: jnp.where(aux_t.valid[:, None] > 0, v, jnp.zeros_like(v)) for k, v in values.items()}
