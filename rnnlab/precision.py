"""The dtype of a layer's matmuls (`RecurrentOptions.matmul_dtype`): float32, or bfloat16 operands.

With "bfloat16" every matmul a layer owns (the input projection `x @ W_ih^T`, the recurrent
product `h @ W_hh^T`, their gradients and the weight gradients) rounds both operands to bfloat16
and accumulates in float32 (`preferred_element_type`); the gate math, the cell state, the
parameters and the optimizer stay float32. On a CPU with AVX512_BF16 such a matmul runs about
twice as fast as float32 (XLA: 885 vs 479 GFLOP/s at 2048^3 on the 2-core AMD EPYC), and the
native kernel's per-step product uses `vdpbf16ps`. "float32" (the default) runs exactly the
float32 code, bit for bit.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnnlab.typing import Array

MATMUL_DTYPES = ("float32", "bfloat16")


def check_matmul_dtype(name: str) -> None:
    """Raise a ValueError unless `name` is one of `MATMUL_DTYPES`."""
    if name not in MATMUL_DTYPES:
        raise ValueError(f"matmul_dtype must be one of {MATMUL_DTYPES}, got {name!r}")


def _bf16_einsum_value(spec: str, a: Array, b: Array) -> Array:
    """`einsum(spec)` of `a`, `b` rounded to bfloat16, summed and returned in float32 (or the
    wider of float32 and the operands' dtype)."""
    result = jnp.promote_types(jnp.result_type(a, b), jnp.float32)
    return jnp.einsum(
        spec, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=result
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _bf16_einsum(spec: str, a: Array, b: Array) -> Array:
    return _bf16_einsum_value(spec, a, b)


def _bf16_einsum_fwd(spec, a, b):
    return _bf16_einsum_value(spec, a, b), (a, b)


def _bf16_einsum_bwd(spec, saved, cotangent):
    """Both gradients as bfloat16-operand einsums with float32 sums, like the forward (JAX's own
    transpose of a `preferred_element_type` dot sums in float32 but rounds the gradient to
    bfloat16, and gets no bfloat16 speed). Every index of an operand appears in the other
    operand or the output (true of the layers' `...d,gd->...g`, `tbg,tbh->gh`, `...k,kn->...n`)."""
    a, b = saved
    inputs, out = spec.split("->")
    a_idx, b_idx = inputs.split(",")
    d_a = _bf16_einsum_value(f"{out},{b_idx}->{a_idx}", cotangent, b).astype(a.dtype)
    d_b = _bf16_einsum_value(f"{a_idx},{out}->{b_idx}", a, cotangent).astype(b.dtype)
    return d_a, d_b


_bf16_einsum.defvjp(_bf16_einsum_fwd, _bf16_einsum_bwd)


def einsum(spec: str, a: Array, b: Array, matmul_dtype: str = "float32") -> Array:
    """`jnp.einsum(spec, a, b)` (two operands, explicit `->`); with "bfloat16", of the operands
    rounded to bfloat16, summed in float32 (or in the wider of float32 and the operands' dtype)
    and returned in it, and differentiated the same way."""
    if matmul_dtype == "float32":
        return jnp.einsum(spec, a, b)
    check_matmul_dtype(matmul_dtype)
    return _bf16_einsum(spec.replace(" ", ""), a, b)


def matmul(a: Array, b: Array, matmul_dtype: str = "float32") -> Array:
    """`a @ b` (`b` a matrix) under `matmul_dtype`, as `einsum`."""
    if matmul_dtype == "float32":
        return a @ b
    return einsum("...k,kn->...n", a, b, matmul_dtype)
