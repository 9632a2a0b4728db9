"""The native backend: the recurrence (forward and reverse) in the optional CPU kernel.

`rnnlab.kernels` runs the sequential part (per step the `W_hh` product and the fused gate math
of `step.transition`) through XLA's FFI; the hoisted input projection and the weight gradients
stay in XLA, as in the scan's custom reverse pass (`scan.py`), so both backends differentiate the
same way and are tested bit-for-bit against each other (`tests/test_native_kernel.py`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from rnnlab import kernels, precision
from rnnlab.cells.base import Cell, project_inputs_linear
from rnnlab.cells.lstm import LSTMState
from rnnlab.recurrence.step import StepAux
from rnnlab.typing import Array, Carry, Params


def unsupported_options(
    cell: Cell, vjp: str, input_projection: str, matmul_dtype: str = "float32"
) -> str | None:
    """Why the native kernel cannot run this cell with these options, known before any array
    exists (None if it can; `unsupported` adds the arrays' dtypes)."""
    reason = kernels.unavailable_reason()
    if reason is not None:
        return reason
    if kernels.cell_kind(cell) is None:
        return f"{cell!r} is not implemented natively"
    if matmul_dtype == "bfloat16" and not kernels.bf16_available():
        return f"bfloat16 matmuls in the native kernel {kernels.bf16_unavailable_reason()}"
    if matmul_dtype == "bfloat16" and cell.hidden_size % 32:
        return (
            f"bfloat16 matmuls in the native kernel need a hidden size that is a multiple of 32 "
            f"(got {cell.hidden_size})"
        )
    if vjp != "custom":
        return 'vjp="autodiff" differentiates the XLA scan'
    if input_projection != "hoisted":
        return 'input_projection="per_step" runs on the XLA scan'
    return None


def unsupported(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    initial_carry: Carry | None = None,
    recurrent_mask: Array | None = None,
    zoneout_keep: Carry | None = None,
    vjp: str = "custom",
    input_projection: str = "hoisted",
    matmul_dtype: str = "float32",
) -> str | None:
    """Why a layer with these arguments cannot use the native kernel (None if it can)."""
    reason = unsupported_options(cell, vjp, input_projection, matmul_dtype)
    if reason is not None:
        return reason
    arrays = [xs]
    for tree in (params, initial_carry, recurrent_mask, zoneout_keep):
        arrays += jax.tree_util.tree_leaves(tree)
    if any(a.dtype != jnp.float32 for a in arrays):
        return "the native kernel is float32 only"
    return None


def _split(kind: int, carry: Carry) -> tuple[Array | None, Array]:
    """`(c, h)` of an LSTM carry (or zoneout keep), `(None, h)` otherwise."""
    return (carry.c, carry.h) if kind == kernels.LSTM else (None, carry)


def _keep(kind: int, aux: StepAux) -> tuple[Array | None, Array | None]:
    """The zoneout keep masks `(c, h)` for the kernels; `(None, None)` without zoneout."""
    if aux.zoneout_keep is None:
        return None, None
    return _split(kind, aux.zoneout_keep)


def _forward(kind, bf16, small, w_hh, carry0, inputs, aux, mask, save):
    """The forward recurrence in the native kernel; returns `((carry, ys), residuals)` with `ys`
    batch-major `[b, t, h]`. `inputs` is `(projected,)` or `(projected without bias, bias)` (the
    kernel then adds the bias itself)."""
    projected, bias = inputs if len(inputs) == 2 else (inputs[0], None)
    c0, h0 = _split(kind, carry0)
    keep_c, keep_h = _keep(kind, aux)
    ys, h_last, c_last, hs, cs, h_in, gates, extra = kernels.forward(
        kind,
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
        bf16=bf16,
    )
    carry = LSTMState(c=c_last, h=h_last) if kind == kernels.LSTM else h_last
    return (carry, ys), (hs, cs, h_in, gates, extra, bias)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _recurrence(
    kind: int,
    bf16: bool,
    small: Params,
    w_hh: Array,
    carry0: Carry,
    inputs: tuple[Array, ...],
    aux: StepAux,
    recurrent_mask: Array | None,
) -> tuple[Carry, Array]:
    out, _ = _forward(kind, bf16, small, w_hh, carry0, inputs, aux, recurrent_mask, False)
    return out


def _recurrence_fwd(kind, bf16, small, w_hh, carry0, inputs, aux, mask):
    out, saved = _forward(kind, bf16, small, w_hh, carry0, inputs, aux, mask, True)
    return out, (small, w_hh, carry0, aux, mask, saved)


def _recurrence_bwd(kind, bf16, saved, cotangents):
    """The reverse pass in the native kernel; `W_hh`'s (and `b_hn`'s) gradients for all steps as
    one reduction afterwards, like the scan's custom reverse pass."""
    small, w_hh, carry0, aux, mask, (hs, cs, h_in, gates, extra, bias) = saved
    d_carry_last, d_ys = cotangents
    c0, h0 = _split(kind, carry0)
    d_c, d_h = _split(kind, d_carry_last)
    keep_c, keep_h = _keep(kind, aux)
    d_projected, d_recurrent, d_h0, d_c0 = kernels.adjoint(
        kind,
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
        bf16=bf16,
    )
    matmul_dtype = "bfloat16" if bf16 else "float32"
    d_w_hh = precision.einsum("tbg,tbh->gh", d_recurrent, h_in, matmul_dtype)
    zeros = functools.partial(jax.tree_util.tree_map, jnp.zeros_like)
    d_small = zeros(small)
    if kind == kernels.GRU:
        d_small["b_hn"] = jnp.sum(d_recurrent[..., 2 * w_hh.shape[1] :], axis=(0, 1))
    d_carry0 = LSTMState(c=d_c0, h=d_h0) if kind == kernels.LSTM else d_h0
    d_inputs = (d_projected,) if bias is None else (d_projected, jnp.sum(d_projected, axis=(0, 1)))
    return d_small, d_w_hh, d_carry0, d_inputs, zeros(aux), zeros(mask)


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def run(
    cell: Cell,
    small: Params,
    params: Params,
    xs_tm: Array,
    carry0: Carry,
    aux: StepAux,
    recurrent_mask: Array | None,
    matmul_dtype: str = "float32",
) -> tuple[Carry, Array]:
    """One direction in the native kernel: `(final carry, ys: [t, b, o])` from `xs_tm: [t, b, d]`.

    The GRU's projection includes its bias; for the other kinds the kernel adds the bias itself
    to the plain linear projection (one fewer `[t, b, g]` pass). With `matmul_dtype="bfloat16"`
    the projection, the kernel's per-step products and `W_hh`'s gradient take bfloat16 operands
    and sum in float32 (`rnnlab.precision`)."""
    kind = kernels.cell_kind(cell)
    if kind == kernels.GRU:
        inputs: Any = (project_inputs_linear(params, xs_tm, True, matmul_dtype),)
    else:
        inputs = (project_inputs_linear(params, xs_tm, False, matmul_dtype), params["b"])
    bf16 = matmul_dtype == "bfloat16"
    carry, ys = _recurrence(kind, bf16, small, params["w_hh"], carry0, inputs, aux, recurrent_mask)
    return carry, jnp.swapaxes(ys, 0, 1)  # batch-major from the kernel; XLA folds the swaps
