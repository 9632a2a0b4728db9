"""The XLA backend: `lax.scan` over the step (`step.py`), with an optional hand-written reverse.

`vjp="custom"` is a hand-written reverse pass (`jax.custom_vjp`) that keeps only
`d_recurrent @ W_hh` inside the backward scan and computes the `W_hh` gradient for all steps as one
matmul afterwards (what cuDNN does); `vjp="autodiff"` differentiates the scan with JAX and is
the reference the custom pass is tested against. Forward-mode AD (`jax.jvp`) needs "autodiff".

`matmul_dtype` ("float32" or "bfloat16", `precision.py`) sets the operands of every matmul here:
the input projection, the per-step `h_in @ W_hh^T`, the reverse pass's `d_recurrent @ W_hh` and
the all-steps `W_hh` gradient; the step's gate math stays in the carry's dtype.

Everything is time-major here (`[t, b, ...]`), so each step reads one contiguous slice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rnnlab import precision
from rnnlab.cells.base import Cell
from rnnlab.recurrence.step import StepAux, feedback, step_gates, transition
from rnnlab.typing import Array, Carry, Params

INPUT_PROJECTIONS = ("hoisted", "per_step")


def gate_chunks(cell: Cell, projected: Array) -> tuple[Array, ...]:
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


def _join(chunks: tuple[Array, ...]) -> Array:
    return chunks[0] if len(chunks) == 1 else jnp.concatenate(chunks, axis=-1)


def is_per_step(input_projection: str) -> bool:
    """Whether the input projection runs inside the step (validates the option)."""
    if input_projection not in INPUT_PROJECTIONS:
        raise ValueError(
            f"input_projection must be one of {INPUT_PROJECTIONS}, got {input_projection!r}"
        )
    return input_projection == "per_step"


def scan_inputs(
    cell: Cell, params: Params, xs_tm: Array, per_step: bool, matmul_dtype: str = "float32"
) -> Any:
    """What the scan reads per step: the raw inputs `[t, b, d]` (projected inside the step) or
    the hoisted projection's gate blocks (see `gate_chunks`), projected under `matmul_dtype`."""
    if per_step:
        return xs_tm
    return gate_chunks(cell, cell.project_inputs(params, xs_tm, matmul_dtype))


# Each step's outputs besides the new carry, chosen by the caller of `_body`:
OUTPUT_Y = "y"  # y_t only (the forward pass)
OUTPUT_SAVED = "saved"  # y_t and what the custom reverse pass recomputes the step from
OUTPUT_TRACE = "trace"  # y_t, the new carry and the gates (diagnostics)


def _body(
    cell: Cell,
    per_step: bool,
    matmul_dtype: str,
    small: Params,
    w_hh: Array,
    proj: Params,
    recurrent_mask: Array | None,
    outputs: str,
) -> Callable[[Carry, tuple[Any, StepAux]], tuple[Carry, Any]]:
    """The scan body: the recurrent matmul plus `step.transition`, with the per-step outputs
    `outputs` names."""
    w_hh_t = w_hh.T

    def body(carry: Carry, step_inputs: tuple[Any, StepAux]) -> tuple[Carry, Any]:
        inputs_t, aux_t = step_inputs
        h_in = feedback(cell, carry, aux_t, recurrent_mask)
        recurrent_t = precision.matmul(h_in, w_hh_t, matmul_dtype)
        if per_step:
            projected_t = cell.project_inputs(proj, inputs_t, matmul_dtype)
        else:
            projected_t = _join(inputs_t)
        new, y = transition(cell, small, carry, projected_t, recurrent_t, aux_t)
        if outputs == OUTPUT_Y:
            return new, y
        if outputs == OUTPUT_TRACE:
            return new, (y, new, step_gates(cell, small, carry, projected_t, recurrent_t, aux_t))
        saved_projected = gate_chunks(cell, projected_t) if per_step else None
        return new, (y, h_in, carry, gate_chunks(cell, recurrent_t), saved_projected)

    return body


def scan_forward(
    cell: Cell,
    unroll: int,
    per_step: bool,
    matmul_dtype: str,
    small: Params,
    w_hh: Array,
    proj: Params,
    carry0: Carry,
    inputs: Any,
    aux: StepAux,
    recurrent_mask: Array | None,
    outputs: str = OUTPUT_Y,
) -> tuple[Carry, Any]:
    """The plain scan (what `vjp="autodiff"` differentiates): `(final carry, ys: [t, b, o])`,
    or with `outputs=OUTPUT_TRACE` `(final carry, (ys, carries, gates))`, all time-major."""
    body = _body(cell, per_step, matmul_dtype, small, w_hh, proj, recurrent_mask, outputs)
    return jax.lax.scan(body, carry0, (inputs, aux), unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def scan_custom(
    cell: Cell,
    unroll: int,
    per_step: bool,
    matmul_dtype: str,
    small: Params,
    w_hh: Array,
    proj: Params,
    carry0: Carry,
    inputs: Any,
    aux: StepAux,
    recurrent_mask: Array | None,
) -> tuple[Carry, Array]:
    """`scan_forward` with the hand-written reverse pass (see the module docstring)."""
    return scan_forward(
        cell, unroll, per_step, matmul_dtype, small, w_hh, proj, carry0, inputs, aux,
        recurrent_mask,
    )  # fmt: skip


def _scan_custom_fwd(
    cell, unroll, per_step, matmul_dtype, small, w_hh, proj, carry0, inputs, aux, mask
):
    """The forward scan, also keeping each step's previous carry, `h_in` and both
    pre-activations (as gate blocks). The backward scan recomputes the gate math from them:
    measured faster on XLA:CPU than scanning out the step's VJP residuals, and it saves memory."""
    body = _body(cell, per_step, matmul_dtype, small, w_hh, proj, mask, OUTPUT_SAVED)
    carry, (ys, h_in, carries, recurrent, projected) = jax.lax.scan(
        body, carry0, (inputs, aux), unroll=unroll
    )
    projected = projected if per_step else inputs
    saved = (small, w_hh, proj, inputs, h_in, carries, recurrent, projected, aux, mask)
    return (carry, ys), saved


def _scan_custom_bwd(cell, unroll, per_step, matmul_dtype, saved, cotangents):
    small, w_hh, proj, inputs, h_in, carries, recurrent, projected, aux, mask = saved
    d_carry_last, d_ys = cotangents

    def body(state, step_inputs):
        d_carry, d_small = state
        carry_prev, recurrent_t, projected_t, aux_t, d_y = step_inputs
        _, pullback = jax.vjp(
            lambda s, c, p, r: transition(cell, s, c, p, r, aux_t),
            small,
            carry_prev,
            _join(projected_t),
            _join(recurrent_t),
        )
        d_small_t, d_prev_direct, d_projected_t, d_recurrent_t = pullback((d_carry, d_y))
        _, feedback_vjp = jax.vjp(lambda c: feedback(cell, c, aux_t, mask), carry_prev)
        (d_prev_feedback,) = feedback_vjp(precision.matmul(d_recurrent_t, w_hh, matmul_dtype))
        d_prev = jax.tree_util.tree_map(jnp.add, d_prev_direct, d_prev_feedback)
        d_small = jax.tree_util.tree_map(jnp.add, d_small, d_small_t)
        return (d_prev, d_small), (d_projected_t, d_recurrent_t)

    init = (d_carry_last, jax.tree_util.tree_map(jnp.zeros_like, small))
    (d_carry0, d_small), (d_projected, d_recurrent) = jax.lax.scan(
        body, init, (carries, recurrent, projected, aux, d_ys), reverse=True, unroll=unroll
    )
    # All steps' W_hh gradients as one [g, t*b] @ [t*b, h] matmul.
    d_w_hh = precision.einsum("tbg,tbh->gh", d_recurrent, h_in, matmul_dtype)
    zeros = functools.partial(jax.tree_util.tree_map, jnp.zeros_like)
    if per_step:
        # The input projection's gradients for all steps at once (one large matmul each).
        _, projection_vjp = jax.vjp(
            lambda p, x: cell.project_inputs(p, x, matmul_dtype), proj, inputs
        )
        d_proj, d_inputs = projection_vjp(d_projected)
    else:
        d_proj, d_inputs = zeros(proj), gate_chunks(cell, d_projected)
    return d_small, d_w_hh, d_proj, d_carry0, d_inputs, zeros(aux), zeros(mask)


scan_custom.defvjp(_scan_custom_fwd, _scan_custom_bwd)
