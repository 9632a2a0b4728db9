"""The one place that scans cells over time: layers, directions, stacks, masks, resets, dropout.

Every function here takes a cell (see `rnnlab.cells.base`) and its params and returns
`(final_carry, ys)`. Shapes are batch-major at the API (`xs: [b, t, d]`); inside, the scan runs
time-major (`[t, b, ...]`) so each step reads one contiguous slice.

Per-step semantics, for step t of sequence n (all options compose):

    carry_prev <- initial (zero) carry      if resets[n, t]          (packed sequences)
    h_in        = feedback(carry_prev) * recurrent_mask[n]            (Gal & Ghahramani 2016)
    new, y      = cell.pointwise(params, carry_prev, P[n, t], h_in @ W_hh^T)
    new         = keep * carry_prev + (1 - keep) * new                (zoneout, Krueger et al. 2017)
    carry, y    = (new, y) if t < lengths[n] else (carry_prev, 0)     (padding changes nothing)

The `backward="custom"` path is a hand-written reverse pass (`jax.custom_vjp`) that keeps only
`d_recurrent @ W_hh` inside the backward scan and computes the `W_hh` gradient for all steps as one
matmul afterwards (what cuDNN does); `backward="autodiff"` differentiates the scan with JAX and is
the reference the custom pass is tested against. Forward-mode AD (`jax.jvp`) needs "autodiff".
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab import kernels
from rnnlab.attention import lengths_to_mask
from rnnlab.cells.base import Cell, project_inputs_linear
from rnnlab.cells.lstm import LSTMState
from rnnlab.errors import ConfigError
from rnnlab.kernels import cudnn
from rnnlab.typing import Array, Carry, Params, PRNGKey

log = logging.getLogger(__name__)

LAYER_OWNED = ("w_ih", "w_hh", "b")
"""Params used by the layer's matmuls/projection; `cell.pointwise` sees the rest."""

BACKWARDS = ("custom", "autodiff")
MERGES = ("concat", "sum")


class StepAux(NamedTuple):
    """Per-step, non-differentiable inputs of the scan, time-major. Absent options are None.

    Attributes:
        valid: `[t, b]` 1.0 where t < length.
        reset: `[t, b]` 1.0 where the carry restarts from zero before step t.
        zoneout_keep: carry-shaped pytree of `[t, b, ...]` probabilities/masks of keeping the
            previous value.
    """

    valid: Array | None = None
    reset: Array | None = None
    zoneout_keep: Any = None


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


# ----------------------------------------------------------------------------- helpers


def reverse_padded(xs: Array, lengths: Array | None) -> Array:
    """Reverse each sequence of `xs: [b, t, ...]` within its own length; padding stays in place.

    An involution: applying it twice gives `xs` back (PyTorch packed-sequence semantics)."""
    if lengths is None:
        return jnp.flip(xs, axis=1)
    t = xs.shape[1]
    steps = jnp.arange(t)[None, :]
    index = jnp.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
    index = index.reshape(index.shape + (1,) * (xs.ndim - 2))
    return jnp.take_along_axis(xs, index, axis=1)


def reverse_resets(resets: Array, lengths: Array | None) -> Array:
    """Segment starts `[b, t]` for the reversed sequence: a segment that ends at step e in forward
    order starts at e's reversed position."""
    ends = jnp.concatenate([resets[:, 1:], jnp.zeros_like(resets[:, :1])], axis=1)
    if lengths is not None:
        ends = jnp.where(jnp.arange(resets.shape[1])[None, :] + 1 < lengths[:, None], ends, 0)
    return reverse_padded(ends, lengths)


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


def _where(flag: Array | None, on_true: Carry, on_false: Carry) -> Carry:
    """Per-row select between two carries; `flag: [b]`."""
    if flag is None:
        return on_true

    def pick(a: Array, b: Array) -> Array:
        return jnp.where(flag.reshape(flag.shape + (1,) * (a.ndim - 1)) > 0, a, b)

    return jax.tree_util.tree_map(pick, on_true, on_false)


def _reset(carry: Carry, reset_t: Array | None) -> Carry:
    if reset_t is None:
        return carry
    zeros = jax.tree_util.tree_map(jnp.zeros_like, carry)
    return _where(reset_t, zeros, carry)


def _feedback(cell: Cell, carry_prev: Carry, aux_t: StepAux, recurrent_mask: Array | None) -> Array:
    """The vector that multiplies `W_hh` at this step, `[b, h_fb]`."""
    h_in = cell.feedback(_reset(carry_prev, aux_t.reset))
    return h_in if recurrent_mask is None else h_in * recurrent_mask


def _transition(
    cell: Cell,
    small: Params,
    carry_prev: Carry,
    projected_t: Array,
    recurrent_t: Array,
    aux_t: StepAux,
) -> tuple[Carry, Array]:
    """Everything of a step except the recurrent matmul: gates, zoneout, padding."""
    start = _reset(carry_prev, aux_t.reset)
    new, y = cell.pointwise(small, start, projected_t, recurrent_t)
    if aux_t.zoneout_keep is not None:
        new = jax.tree_util.tree_map(
            lambda k, old, n: k * old + (1.0 - k) * n, aux_t.zoneout_keep, start, new
        )
        # Zoneout's output is the zoned-out state (Krueger et al. 2017, eq. 3).
        y = cell.feedback(new)
    if aux_t.valid is not None:
        new = _where(aux_t.valid, new, carry_prev)
        y = jnp.where(aux_t.valid[:, None] > 0, y, jnp.zeros_like(y))
    return new, y


# ----------------------------------------------------------------------------- the scans


def _gate_chunks(cell: Cell, projected: Array) -> tuple[Array, ...]:
    """`[t, b, g]` split into its `g / h` gate blocks *before* the scan.

    XLA:CPU layout trap: when the body dynamic-slices one `[b, g]` row of a scanned `[t, b, g]`
    array and then slices gates out of it, the fused gate math is emitted element by element
    (measured ~6x slower per step). Scanning separate `[t, b, h]` blocks and concatenating them
    inside the body lets XLA fold `slice(concat(...))` back into the blocks, so each gate reads a
    contiguous row and `cell.pointwise` keeps its fused-gate contract."""
    width, hidden = projected.shape[-1], cell.hidden_size
    blocks = width // hidden if width % hidden == 0 else 1
    if blocks <= 1:
        return (projected,)
    return tuple(jnp.split(projected, blocks, axis=-1))


INPUT_PROJECTIONS = ("hoisted", "per_step")


def _per_step(input_projection: str) -> bool:
    if input_projection not in INPUT_PROJECTIONS:
        raise ValueError(
            f"input_projection must be one of {INPUT_PROJECTIONS}, got {input_projection!r}"
        )
    return input_projection == "per_step"


def _join(chunks: tuple[Array, ...]) -> Array:
    return chunks[0] if len(chunks) == 1 else jnp.concatenate(chunks, axis=-1)


def _scan_inputs(cell: Cell, params: Params, xs_tm: Array, per_step: bool) -> Any:
    """What the scan reads per step: the raw inputs `[t, b, d]` (projected inside the step) or
    the hoisted projection's gate blocks (see `_gate_chunks`)."""
    return xs_tm if per_step else _gate_chunks(cell, cell.project_inputs(params, xs_tm))


def _projected_t(cell: Cell, proj: Params, per_step: bool, inputs_t: Any) -> Array:
    """Step t's input pre-activation `[b, g]`."""
    return cell.project_inputs(proj, inputs_t) if per_step else _join(inputs_t)


def _scan_forward(
    cell: Cell,
    unroll: int,
    per_step: bool,
    small: Params,
    w_hh: Array,
    proj: Params,
    carry0: Carry,
    inputs: Any,
    aux: StepAux,
    recurrent_mask: Array | None,
) -> tuple[Carry, Array]:
    """The plain scan (what `backward="autodiff"` differentiates)."""
    w_hh_t = w_hh.T

    def body(carry: Carry, step_inputs: tuple[Any, StepAux]) -> tuple[Carry, Array]:
        inputs_t, aux_t = step_inputs
        recurrent_t = _feedback(cell, carry, aux_t, recurrent_mask) @ w_hh_t
        projected_t = _projected_t(cell, proj, per_step, inputs_t)
        return _transition(cell, small, carry, projected_t, recurrent_t, aux_t)

    return jax.lax.scan(body, carry0, (inputs, aux), unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _scan_custom(
    cell: Cell,
    unroll: int,
    per_step: bool,
    native: int | None,
    small: Params,
    w_hh: Array,
    proj: Params,
    carry0: Carry,
    inputs: Any,
    aux: StepAux,
    recurrent_mask: Array | None,
) -> tuple[Carry, Array]:
    """The scan with a hand-written reverse pass. `native` is a `rnnlab.kernels` cell kind to run
    the recurrence (forward and backward) in the native CPU kernel instead of `lax.scan`; then
    `inputs` is the unsplit projection `([t, b, g],)` or `(projection without bias, b [g])`, and
    `ys` come back batch-major `[b, t, h]` (time-major `[t, b, h]` from the scan)."""
    if native is not None:
        out, _ = _native_fwd(cell, native, small, w_hh, carry0, inputs, aux, recurrent_mask, False)
        return out
    return _scan_forward(
        cell, unroll, per_step, small, w_hh, proj, carry0, inputs, aux, recurrent_mask
    )


def _scan_custom_fwd(cell, unroll, per_step, native, small, w_hh, proj, carry0, inputs, aux, mask):
    """The forward scan, also keeping each step's previous carry, `h_in` and both
    pre-activations (as gate blocks). The backward scan recomputes the gate math from them:
    measured faster on XLA:CPU than scanning out the step's VJP residuals, and it saves memory."""
    if native is not None:
        out, saved = _native_fwd(cell, native, small, w_hh, carry0, inputs, aux, mask, True)
        return out, (small, w_hh, carry0, aux, mask, saved)
    w_hh_t = w_hh.T

    def body(carry, step_inputs):
        inputs_t, aux_t = step_inputs
        h_in = _feedback(cell, carry, aux_t, mask)
        recurrent_t = h_in @ w_hh_t
        projected_t = _projected_t(cell, proj, per_step, inputs_t)
        new, y = _transition(cell, small, carry, projected_t, recurrent_t, aux_t)
        saved_projected = _gate_chunks(cell, projected_t) if per_step else None
        return new, (y, h_in, carry, _gate_chunks(cell, recurrent_t), saved_projected)

    carry, (ys, h_in, carries, recurrent, projected) = jax.lax.scan(
        body, carry0, (inputs, aux), unroll=unroll
    )
    projected = projected if per_step else inputs
    saved = (small, w_hh, proj, inputs, h_in, carries, recurrent, projected, aux, mask)
    return (carry, ys), saved


def _scan_custom_bwd(cell, unroll, per_step, native, saved, cotangents):
    if native is not None:
        return _native_bwd(native, saved, cotangents)
    small, w_hh, proj, inputs, h_in, carries, recurrent, projected, aux, mask = saved
    d_carry_last, d_ys = cotangents

    def body(state, step_inputs):
        d_carry, d_small = state
        carry_prev, recurrent_t, projected_t, aux_t, d_y = step_inputs
        _, pullback = jax.vjp(
            lambda s, c, p, r: _transition(cell, s, c, p, r, aux_t),
            small,
            carry_prev,
            _join(projected_t),
            _join(recurrent_t),
        )
        d_small_t, d_prev_direct, d_projected_t, d_recurrent_t = pullback((d_carry, d_y))
        _, feedback_vjp = jax.vjp(lambda c: _feedback(cell, c, aux_t, mask), carry_prev)
        (d_prev_feedback,) = feedback_vjp(d_recurrent_t @ w_hh)
        d_prev = jax.tree_util.tree_map(jnp.add, d_prev_direct, d_prev_feedback)
        d_small = jax.tree_util.tree_map(jnp.add, d_small, d_small_t)
        return (d_prev, d_small), (d_projected_t, d_recurrent_t)

    init = (d_carry_last, jax.tree_util.tree_map(jnp.zeros_like, small))
    (d_carry0, d_small), (d_projected, d_recurrent) = jax.lax.scan(
        body, init, (carries, recurrent, projected, aux, d_ys), reverse=True, unroll=unroll
    )
    # All steps' W_hh gradients as one [g, t*b] @ [t*b, h] matmul.
    d_w_hh = jnp.einsum("tbg,tbh->gh", d_recurrent, h_in)
    zeros = functools.partial(jax.tree_util.tree_map, jnp.zeros_like)
    if per_step:
        # The input projection's gradients for all steps at once (one large matmul each).
        _, projection_vjp = jax.vjp(lambda p, x: cell.project_inputs(p, x), proj, inputs)
        d_proj, d_inputs = projection_vjp(d_projected)
    else:
        d_proj, d_inputs = zeros(proj), _gate_chunks(cell, d_projected)
    return d_small, d_w_hh, d_proj, d_carry0, d_inputs, zeros(aux), zeros(mask)


_scan_custom.defvjp(_scan_custom_fwd, _scan_custom_bwd)


# ----------------------------------------------------------------------------- native kernels

KERNELS = ("auto", "native", "xla", "cudnn")


def _native_split(native: int, carry: Carry) -> tuple[Array | None, Array]:
    """`(c, h)` of an LSTM carry (or zoneout keep), `(None, h)` otherwise."""
    return (carry.c, carry.h) if native == kernels.LSTM else (None, carry)


def _native_keep(native: int, aux: StepAux) -> tuple[Array | None, Array | None]:
    """The zoneout keep masks `(c, h)` for the kernels; `(None, None)` without zoneout."""
    if aux.zoneout_keep is None:
        return None, None
    return _native_split(native, aux.zoneout_keep)


def _native_fwd(cell, native, small, w_hh, carry0, inputs, aux, mask, save):
    """The forward recurrence in the native kernel; returns `((carry, ys), residuals)` with `ys`
    batch-major `[b, t, h]`. `inputs` is `(projected,)` or `(projected without bias, bias)` (the
    kernel then adds the bias itself)."""
    projected, bias = inputs if len(inputs) == 2 else (inputs[0], None)
    c0, h0 = _native_split(native, carry0)
    keep_c, keep_h = _native_keep(native, aux)
    ys, h_last, c_last, hs, cs, h_in, gates, extra = kernels.forward(
        native,
        projected,
        w_hh,
        c0,
        h0,
        aux.valid,
        aux.reset,
        mask,
        keep_c,
        keep_h,
        small.get("b_hn"),
        save,
        bias=bias,
        batch_major=True,
    )
    carry = LSTMState(c=c_last, h=h_last) if native == kernels.LSTM else h_last
    return (carry, ys), (hs, cs, h_in, gates, extra, bias)


def _native_bwd(native, saved, cotangents):
    """The reverse pass in the native kernel; `W_hh`'s (and `b_hn`'s) gradients for all steps as
    one reduction afterwards, like the scan path."""
    small, w_hh, carry0, aux, mask, (hs, cs, h_in, gates, extra, bias) = saved
    d_carry_last, d_ys = cotangents
    c0, h0 = _native_split(native, carry0)
    d_c, d_h = _native_split(native, d_carry_last)
    keep_c, keep_h = _native_keep(native, aux)
    d_projected, d_recurrent, d_h0, d_c0 = kernels.backward(
        native,
        w_hh,
        c0,
        h0,
        aux.valid,
        aux.reset,
        mask,
        keep_c,
        keep_h,
        gates,
        extra,
        hs,
        cs,
        d_ys,
        d_h,
        d_c,
        batch_major=True,
    )
    d_w_hh = jnp.einsum("tbg,tbh->gh", d_recurrent, h_in)
    zeros = functools.partial(jax.tree_util.tree_map, jnp.zeros_like)
    d_small = zeros(small)
    if native == kernels.GRU:
        d_small["b_hn"] = jnp.sum(d_recurrent[..., 2 * w_hh.shape[1] :], axis=(0, 1))
    d_carry0 = LSTMState(c=d_c0, h=d_h0) if native == kernels.LSTM else d_h0
    d_inputs = (d_projected,) if bias is None else (d_projected, jnp.sum(d_projected, axis=(0, 1)))
    return d_small, d_w_hh, {}, d_carry0, d_inputs, zeros(aux), zeros(mask)


def native_unsupported_options(cell: Cell, backward: str, input_projection: str) -> str | None:
    """Why the native kernel cannot run this cell with these options, known before any array
    exists (None if it can; `native_unsupported` adds the arrays' dtypes)."""
    reason = kernels.unavailable_reason()
    if reason is not None:
        return reason
    if kernels.cell_kind(cell) is None:
        return f"{cell!r} is not implemented natively"
    if backward != "custom":
        return 'backward="autodiff" differentiates the XLA scan'
    if input_projection != "hoisted":
        return 'input_projection="per_step" runs on the XLA scan'
    return None


def native_unsupported(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    initial_carry: Carry | None = None,
    recurrent_mask: Array | None = None,
    zoneout_keep: Carry | None = None,
    backward: str = "custom",
    input_projection: str = "hoisted",
) -> str | None:
    """Why `run` with these arguments cannot use the native kernel (None if it can)."""
    reason = native_unsupported_options(cell, backward, input_projection)
    if reason is not None:
        return reason
    arrays = [xs]
    for tree in (params, initial_carry, recurrent_mask, zoneout_keep):
        arrays += jax.tree_util.tree_leaves(tree)
    if any(a.dtype != jnp.float32 for a in arrays):
        return "the native kernel is float32 only"
    return None


def _native_kind(kernel: str, cell: Cell, params: Params, xs: Array, **kwargs: Any) -> int | None:
    """The native cell kind `run` uses, or None for the XLA scan (see `run`'s `kernel`)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel in ("xla", "cudnn"):
        return None
    reason = native_unsupported(cell, params, xs, **kwargs)
    if reason is None:
        return kernels.cell_kind(cell)
    if kernel == "native":
        raise ConfigError(
            f'kernel="native" is not possible here: {reason}; use kernel="auto" (model.kernel)'
        )
    return None


# ----------------------------------------------------------------------------- public API


def run(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    lengths: Array | None = None,
    resets: Array | None = None,
    initial_carry: Carry | None = None,
    reverse: bool = False,
    recurrent_mask: Array | None = None,
    zoneout_keep: Carry | None = None,
    unroll: int = 1,
    backward: str = "custom",
    input_projection: str = "hoisted",
    kernel: str = "auto",
) -> tuple[Carry, Array]:
    """Run one cell over a batch of sequences in one direction.

    Args:
        cell: the cell (a frozen dataclass).
        params: `cell.init(key, d)`.
        xs: `[b, t, d]` inputs.
        lengths: `[b]` valid steps per sequence; past a sequence's end the carry is frozen and
            the output is zero, so the final carry is each sequence's carry at its own last step.
        resets: `[b, t]` bool/0-1, True where a new segment starts (the carry restarts from
            zero before that step), so several sequences can be packed into one row.
        initial_carry: carry to start from (e.g. the last batch's, for truncated BPTT);
            zeros by default.
        reverse: process each sequence back to front *within its own length*; outputs are
            returned in the original order.
        recurrent_mask: `[b, h_fb]` variational dropout mask on the fed-back state (see
            `recurrent_dropout_mask`).
        zoneout_keep: carry-shaped pytree of `[t, b, ...]` keep probabilities/masks (see
            `zoneout_keep`), in the original time order.
        unroll: `lax.scan` unroll factor.
        backward: "custom" (hand-written reverse pass) or "autodiff".
        input_projection: "hoisted" (default: one `[t*b, d] @ [d, g]` matmul before the scan)
            or "per_step" (`x_t @ w_ih.T` inside the step, next to the recurrent matmul, as
            `flax.linen` cells do). Either way the backward pass computes the projection's
            gradients for all steps as one large matmul after the backward scan. Measured on a
            2-core CPU (`scripts/benchmark.py --impls rnnlab,rnnlab-per-step`): per-step was
            faster for LSTM inference at batch 128 (1.3x) but slower for training and for GRU in
            most configs, so "hoisted" is the default; measure on your hardware.
        kernel: "auto" (default), "native", "xla" or "cudnn". "native" runs the recurrence
            (forward and backward) in the optional native CPU kernel (`rnnlab.kernels`: a packed
            per-step product plus fused gate math, called through XLA's FFI), "xla" in
            `lax.scan`. "auto"
            picks native when the library is built and the call is supported (plain `LSTMCell`,
            reset-after `GRUCell` or `ElmanCell`; float32; `backward="custom"`; hoisted input
            projection; any lengths/resets/reverse/recurrent dropout/zoneout), else the scan,
            silently; "native" raises instead. Native only runs on CPU: on other platforms the
            same program takes the scan (`lax.platform_dependent` picks at lowering time).
            "cudnn" runs a plain float32 `LSTMCell` (no resets, recurrent dropout or zoneout)
            in cuDNN's fused LSTM on CUDA (`rnnlab.kernels.cudnn`) and raises elsewhere. "auto"
            never picks cuDNN: on an H100 the scan trained 1.3-1.7x faster than cuDNN (and than
            torch's cuDNN LSTM) on the benchmark grid (README "Performance").

    Returns:
        (final carry, `ys: [b, t, o]`).
    """
    validate_inputs(cell, params, xs, lengths)
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")
    batch, time = xs.shape[:2]
    dtype = xs.dtype
    if resets is not None:
        if resets.shape != (batch, time):
            raise ValueError(f"resets must be [batch, time]=({batch}, {time}), got {resets.shape}")
        resets = resets.astype(dtype)
    if reverse:
        xs = reverse_padded(xs, lengths)
        if resets is not None:
            resets = reverse_resets(resets, lengths)
        if zoneout_keep is not None:
            zoneout_keep = jax.tree_util.tree_map(
                lambda k: jnp.swapaxes(reverse_padded(jnp.swapaxes(k, 0, 1), lengths), 0, 1),
                zoneout_keep,
            )
    per_step = _per_step(input_projection)
    use_cudnn = kernel == "cudnn"
    if use_cudnn:
        reason = cudnn.unsupported_reason(
            cell,
            xs,
            resets=resets,
            recurrent_mask=recurrent_mask,
            zoneout_keep=zoneout_keep,
            backward=backward,
            input_projection=input_projection,
        )
        if reason is not None:
            raise ConfigError(
                f'kernel="cudnn" is not possible here: {reason}; use kernel="auto" (model.kernel)'
            )
    native = _native_kind(
        kernel,
        cell,
        params,
        xs,
        initial_carry=initial_carry,
        recurrent_mask=recurrent_mask,
        zoneout_keep=zoneout_keep,
        backward=backward,
        input_projection=input_projection,
    )
    # Time-major from the start: the projection acts on each position alone, so transposing the
    # narrow `[b, t, d]` input is cheaper than transposing the `[b, t, g]` projection.
    xs_tm = jnp.swapaxes(xs, 0, 1)
    valid = None if lengths is None else lengths_to_mask(lengths, time).T.astype(dtype)
    aux = StepAux(
        valid=valid, reset=None if resets is None else resets.T, zoneout_keep=zoneout_keep
    )
    carry0 = cell.initial_carry(batch, dtype) if initial_carry is None else initial_carry
    small = {k: v for k, v in params.items() if k not in LAYER_OWNED}
    proj = {k: v for k, v in params.items() if k != "w_hh"} if per_step else {}
    w_hh = params["w_hh"]

    def scan() -> tuple[Carry, Array]:
        inputs = _scan_inputs(cell, params, xs_tm, per_step)
        if backward != "custom":
            scan_fn = functools.partial(_scan_forward, cell, unroll, per_step)
        else:
            scan_fn = functools.partial(_scan_custom, cell, unroll, per_step, None)
        return scan_fn(small, w_hh, proj, carry0, inputs, aux, recurrent_mask)

    def on_native() -> tuple[Carry, Array]:
        if native == kernels.GRU:
            inputs = (cell.project_inputs(params, xs_tm),)
        else:  # the plain linear projection (`cell_kind`); the kernel adds the bias
            inputs = (project_inputs_linear(params, xs_tm, bias=False), params["b"])
        native_fn = functools.partial(_scan_custom, cell, unroll, per_step, native)
        carry, ys = native_fn(small, w_hh, proj, carry0, inputs, aux, recurrent_mask)
        return carry, jnp.swapaxes(ys, 0, 1)  # batch-major from the kernel; XLA folds the swaps

    def on_cudnn() -> tuple[Carry, Array]:
        carry, ys = cudnn.lstm(params, xs, carry0, lengths)
        return carry, jnp.swapaxes(ys, 0, 1)

    on_cpu = scan if native is None else on_native
    if jax.default_backend() == "cpu":  # a CPU-only process needs no dispatch
        carry, ys = on_cpu()
    elif native is None and not use_cudnn:
        carry, ys = scan()
    else:  # the platform picks its branch at lowering time
        on_cuda = on_cudnn if use_cudnn else scan
        carry, ys = jax.lax.platform_dependent(cpu=on_cpu, cuda=on_cuda, default=scan)
    ys = jnp.swapaxes(ys, 0, 1)
    return carry, (reverse_padded(ys, lengths) if reverse else ys)


class RecurrentOptions(NamedTuple):
    """Regularisation and speed options shared by every layer of a stack.

    Attributes:
        dropout: rate between stacked layers (on the outputs of all but the last layer).
        recurrent_dropout: variational dropout rate on the fed-back state.
        zoneout: zoneout rate on every carry leaf.
        unroll: `lax.scan` unroll factor.
        backward: "custom" or "autodiff".
        input_projection: "hoisted" or "per_step" (see `run`).
        kernel: "auto", "native" or "xla" (see `run`).
    """

    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    unroll: int = 1
    backward: str = "custom"
    input_projection: str = "hoisted"
    kernel: str = "auto"


DEFAULT_OPTIONS = RecurrentOptions()


def run_layer(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    bidirectional: bool = False,
    merge: str = "concat",
    lengths: Array | None = None,
    resets: Array | None = None,
    initial_carry: Carry | None = None,
    options: RecurrentOptions = DEFAULT_OPTIONS,
    key: PRNGKey | None = None,
) -> tuple[Carry, Array]:
    """One (optionally bidirectional) layer with recurrent dropout and zoneout.

    Args:
        params: `cell.init(...)`, or `{"forward": ..., "backward": ...}` when bidirectional.
        initial_carry: a carry, or a `(forward, backward)` pair when bidirectional.
        merge: how to join the two directions' outputs: "concat" (`[b, t, 2o]`) or "sum".
        key: PRNG key for training-time masks; `None` means evaluation (no dropout, zoneout by
            its expectation).

    Returns:
        (final carry or `(forward, backward)` carries, `ys: [b, t, o or 2o]`).
    """
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    if not bidirectional:
        return _run_direction(cell, params, xs, False, lengths, resets, initial_carry, options, key)
    if set(params) != {"forward", "backward"}:
        raise ValueError("bidirectional params must be {'forward': ..., 'backward': ...}")
    carry_fw, carry_bw = (None, None) if initial_carry is None else initial_carry
    key_fw, key_bw = (None, None) if key is None else jax.random.split(key)
    fw = _run_direction(
        cell, params["forward"], xs, False, lengths, resets, carry_fw, options, key_fw
    )
    bw = _run_direction(
        cell, params["backward"], xs, True, lengths, resets, carry_bw, options, key_bw
    )
    ys = jnp.concatenate([fw[1], bw[1]], axis=-1) if merge == "concat" else fw[1] + bw[1]
    return (fw[0], bw[0]), ys


def _run_direction(
    cell: Cell,
    params: Params,
    xs: Array,
    reverse: bool,
    lengths: Array | None,
    resets: Array | None,
    initial_carry: Carry | None,
    options: RecurrentOptions,
    key: PRNGKey | None,
) -> tuple[Carry, Array]:
    batch, time = xs.shape[:2]
    mask, keep = None, None
    key_mask, key_zone = (None, None) if key is None else jax.random.split(key)
    if options.recurrent_dropout > 0 and key_mask is not None:
        mask = recurrent_dropout_mask(
            key_mask, options.recurrent_dropout, (batch, cell.output_size), xs.dtype
        )
    if options.zoneout > 0:
        keep = zoneout_keep(key_zone, options.zoneout, cell.initial_carry(batch, xs.dtype), time)
    return run(
        cell,
        params,
        xs,
        lengths=lengths,
        resets=resets,
        initial_carry=initial_carry,
        reverse=reverse,
        recurrent_mask=mask,
        zoneout_keep=keep,
        unroll=options.unroll,
        backward=options.backward,
        input_projection=options.input_projection,
        kernel=options.kernel,
    )


def layer_output_size(cell: Cell, bidirectional: bool = False, merge: str = "concat") -> int:
    """Width of a layer's outputs: doubled when both directions are concatenated."""
    return cell.output_size * (2 if bidirectional and merge == "concat" else 1)


def init_layer(cell: Cell, key: PRNGKey, input_size: int, bidirectional: bool = False) -> Params:
    """Params of one layer: `cell.init(...)`, or `{"forward", "backward"}` when bidirectional."""
    if not bidirectional:
        return cell.init(key, input_size)
    k_fw, k_bw = jax.random.split(key)
    return {"forward": cell.init(k_fw, input_size), "backward": cell.init(k_bw, input_size)}


def init_stack(
    cell: Cell,
    key: PRNGKey,
    input_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    merge: str = "concat",
) -> list[Params]:
    """Params of a stack, one entry per layer (see `init_layer`); layer l > 0 reads the previous
    layer's merged output width."""
    params = []
    size = input_size
    for layer_key in jax.random.split(key, num_layers):
        params.append(init_layer(cell, layer_key, size, bidirectional))
        size = layer_output_size(cell, bidirectional, merge)
    return params


def backend_of(cell: Cell, params: Params, xs: Array, options: RecurrentOptions) -> str:
    """What `run` computes a layer with, in words: "native kernel", "cuDNN" or "XLA scan" with
    the reason the native kernel is not used (for the run log)."""
    if options.kernel == "cudnn":
        return "cuDNN (on CUDA; the XLA scan elsewhere)"
    if options.kernel == "xla":
        return "XLA scan (kernel=xla)"
    one = params.get("forward", params)  # a bidirectional layer: both directions alike
    reason = native_unsupported(
        cell, one, xs, backward=options.backward, input_projection=options.input_projection
    )
    return "native kernel (CPU)" if reason is None else f"XLA scan: {reason}"


_LOGGED_BACKENDS: set[tuple[int, str, str]] = set()


def _log_backend(
    index: int, cell: Cell, params: Params, xs: Array, options: RecurrentOptions
) -> None:
    """Logs `layer_{index}: <backend>` at INFO, once per layer, cell and backend in a process
    (the train and evaluation steps trace the same layers)."""
    backend = backend_of(cell, params, xs, options)
    entry = (index, repr(cell), backend)
    if entry not in _LOGGED_BACKENDS:
        _LOGGED_BACKENDS.add(entry)
        log.info("layer_%d: %s", index, backend)


def run_stack(
    cell: Cell,
    params: Sequence[Params],
    xs: Array,
    *,
    bidirectional: bool = False,
    merge: str = "concat",
    lengths: Array | None = None,
    resets: Array | None = None,
    initial_carry: Sequence[Carry] | None = None,
    options: RecurrentOptions = DEFAULT_OPTIONS,
    key: PRNGKey | None = None,
) -> tuple[list[Carry], Array]:
    """Stacked layers with dropout between them (Zaremba et al. 2014: not on recurrent edges).

    Args:
        params: one entry per layer (see `init_stack`).
        initial_carry: one carry per layer (pairs when bidirectional), or None for zeros.
        key: PRNG key for training-time dropout/zoneout masks; None means evaluation.

    Returns:
        (list of final carries, one per layer; outputs of the last layer `[b, t, o]`).
    """
    carries = []
    for index, layer_params in enumerate(params):
        _log_backend(index, cell, layer_params, xs, options)
        layer_key = None if key is None else jax.random.fold_in(key, index)
        if index > 0 and options.dropout > 0 and layer_key is not None:
            drop_key, layer_key = jax.random.split(layer_key)
            keep = jax.random.bernoulli(drop_key, 1.0 - options.dropout, xs.shape)
            xs = jnp.where(keep, xs / (1.0 - options.dropout), jnp.zeros_like(xs))
        carry, xs = run_layer(
            cell,
            layer_params,
            xs,
            bidirectional=bidirectional,
            merge=merge,
            lengths=lengths,
            resets=resets,
            initial_carry=None if initial_carry is None else initial_carry[index],
            options=options,
            key=layer_key,
        )
        carries.append(carry)
    return carries, xs
