"""Optional native CPU recurrences, called from XLA through JAX's FFI (`csrc/rnn_kernels.cc`).

Only the sequential part of a layer runs natively: per step one matrix product with the
recurrent weights (a register-blocked AVX-512 kernel over weights packed once per call, or
OpenBLAS from the `scipy-openblas32` wheel for other sizes) and the fused gate math, forward
and backward, split over XLA's intra-op threads. The hoisted input projection and all weight
gradients stay in XLA, so `rnnlab.recurrence` uses these functions as a drop-in replacement for
its scans inside the custom-VJP pass (`backend="auto"|"native"`).

The library is compiled when the package is installed (`setup.py`, optional: without a compiler
the install still succeeds and `available()` is False, so everything runs on the XLA scan).
Set `RNNLAB_NATIVE=0` to ignore a built library, `RNNLAB_NATIVE_GEMM=blas` to use OpenBLAS for
every per-step product (for comparison with the packed kernel).
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.typing import Array

LSTM, GRU, TANH, RELU = 0, 1, 2, 3
"""The cell kinds the kernels implement (the `kind` attribute of both FFI targets)."""

KINDS = {"lstm": LSTM, "gru": GRU, "tanh": TANH, "relu": RELU}
"""The names a cell declares as its `native_kernel` (see `rnnlab.cells.base`), with the math and
parameter layout each kind computes: "lstm" the plain LSTM (gates i, f, g, o; `w_ih: [4h, d]`,
`w_hh: [4h, h]`, `b`), "gru" the reset-after GRU (r, z, n; `b_hn` inside the reset gate), "tanh"
and "relu" the Elman RNN (`w_ih: [h, d]`, `w_hh: [h, h]`, `b`)."""

FORWARD_TARGET = "rnnlab_native_forward"
BACKWARD_TARGET = "rnnlab_native_backward"
_HERE = os.path.dirname(os.path.abspath(__file__))


def _blas_sgemm() -> Any:
    """OpenBLAS's `cblas_sgemm` (from the `scipy-openblas32` dependency), single-threaded: the
    kernels split each step across XLA's intra-op threads themselves. It is only the fallback
    for sizes the built-in packed AVX-512 kernel does not take (hidden size not a multiple of 32,
    or a build without AVX-512)."""
    import scipy_openblas32

    name = f"lib{scipy_openblas32.get_library()}.so"
    lib = ctypes.CDLL(os.path.join(scipy_openblas32.get_lib_dir(), name), mode=ctypes.RTLD_GLOBAL)
    lib.scipy_openblas_set_num_threads(1)
    return lib.scipy_cblas_sgemm


@functools.cache
def _load() -> str | None:
    """Load the library and register its FFI targets; None on success, else why not."""
    if os.environ.get("RNNLAB_NATIVE", "1") == "0":
        return "disabled by RNNLAB_NATIVE=0"
    paths = sorted(glob.glob(os.path.join(_HERE, "_rnn_kernels*.so")))
    if not paths:
        return (
            "the native library was not built (no C++ compiler at install time?); "
            "reinstall with `pip install -e .` to build it"
        )
    try:
        sgemm = _blas_sgemm()
        lib = ctypes.CDLL(paths[0])
        lib.RnnlabSetSgemm(ctypes.cast(sgemm, ctypes.c_void_p))
        jax.ffi.register_ffi_target(
            FORWARD_TARGET, jax.ffi.pycapsule(lib.RnnlabForward), platform="cpu"
        )
        jax.ffi.register_ffi_target(
            BACKWARD_TARGET, jax.ffi.pycapsule(lib.RnnlabBackward), platform="cpu"
        )
    except (ImportError, OSError, AttributeError) as error:
        return f"the native library could not be loaded: {error}"
    return None


def available() -> bool:
    """Whether the native kernels are built and loaded."""
    return _load() is None


def unavailable_reason() -> str | None:
    """Why `available()` is False (None when it is True)."""
    return _load()


def cell_kind(cell: Any) -> int | None:
    """The kernel's kind for a cell it implements exactly, else None.

    The cell says so itself: its class declares `native_kernel`, a key of `KINDS` or None (see
    `rnnlab.cells.base`; e.g. `LSTMCell` without peepholes, layer norm or projection declares
    "lstm"). A cell that declares nothing runs on the XLA scan, and so does a subclass that does
    not declare again (it may change the math).

    Raises:
        ValueError: the cell declares a name that is not a kernel kind.
    """
    from rnnlab.cells.base import declared

    name = declared(cell, "native_kernel")
    if name is None:
        return None
    if name not in KINDS:
        raise ValueError(
            f"{type(cell).__name__}.native_kernel is {name!r}, not a native kernel kind; "
            f"declare one of {sorted(KINDS)} or None"
        )
    return KINDS[name]


def _require() -> None:
    reason = _load()
    if reason is not None:
        raise RuntimeError(reason)


def _empty() -> Array:
    return jnp.zeros((0,), jnp.float32)


def _or_empty(x: Array | None) -> Array:
    return _empty() if x is None else x


def forward(
    kind: int,
    projected: Array,
    w_hh: Array,
    c0: Array | None,
    h0: Array,
    valid: Array | None,
    reset: Array | None,
    mask: Array | None,
    keep_c: Array | None,
    keep_h: Array | None,
    b_hn: Array | None,
    save: bool,
    bias: Array | None = None,
    batch_major: bool = False,
) -> tuple[Array, ...]:
    """The forward recurrence over time-major `projected: [t, b, g]`.

    `bias: [g]` (LSTM and Elman only; None for the GRU) is added to `projected` inside the kernel,
    saving XLA a pass over `[t, b, g]`. With `batch_major`, `ys` is written `[b, t, h]` (no
    transpose afterwards). Returns `(ys, h_T, c_T, hs, cs, h_in, gates, aux)`; the last five (the
    adjoint's residuals) and `c_T` (non-LSTM) are empty unless `save`/LSTM."""
    _require()
    if bias is not None and kind == GRU:
        raise ValueError("the GRU kernel takes its input bias inside `projected`")
    t, b, g = projected.shape
    h = w_hh.shape[1]
    f32 = jnp.float32
    seq = jax.ShapeDtypeStruct((t, b, h), f32)
    empty = jax.ShapeDtypeStruct((0,), f32)
    lstm = kind == LSTM
    shapes = (
        jax.ShapeDtypeStruct((b, t, h), f32) if batch_major else seq,
        jax.ShapeDtypeStruct((b, h), f32),
        jax.ShapeDtypeStruct((b, h), f32) if lstm else empty,
        seq if save else empty,
        seq if save and lstm else empty,
        seq if save else empty,
        jax.ShapeDtypeStruct((t, b, g), f32) if save else empty,
        seq if save and kind in (LSTM, GRU) else empty,
    )
    call = jax.ffi.ffi_call(FORWARD_TARGET, shapes, vmap_method="sequential")
    args = (projected, w_hh, c0, h0, valid, reset, mask, keep_c, keep_h, b_hn, bias)
    return call(
        *(_or_empty(a) for a in args), kind=np.int32(kind), batch_major=np.int32(batch_major)
    )


def adjoint(
    kind: int,
    w_hh: Array,
    c0: Array | None,
    h0: Array,
    valid: Array | None,
    reset: Array | None,
    mask: Array | None,
    keep_c: Array | None,
    keep_h: Array | None,
    gates: Array,
    aux: Array,
    hs: Array,
    cs: Array,
    d_ys: Array,
    d_h: Array,
    d_c: Array | None,
    batch_major: bool = False,
) -> tuple[Array, Array, Array, Array]:
    """The reverse (adjoint) recurrence: `(d_projected, d_recurrent, d_h0, d_c0)`, both `[t, b, g]`
    pre-activation gradients (the same array except for the GRU's n gate; `d_recurrent` is
    returned as `d_projected` then), and the initial carry's. `d_ys` is `[b, t, h]` with
    `batch_major` (as the forward's `ys`), else `[t, b, h]`."""
    _require()
    t, b, g = gates.shape
    h = w_hh.shape[1]
    f32 = jnp.float32
    full = jax.ShapeDtypeStruct((t, b, g), f32)
    empty = jax.ShapeDtypeStruct((0,), f32)
    lstm = kind == LSTM
    shapes = (
        full,
        full if kind == GRU else empty,
        jax.ShapeDtypeStruct((b, h), f32),
        jax.ShapeDtypeStruct((b, h), f32) if lstm else empty,
    )
    call = jax.ffi.ffi_call(BACKWARD_TARGET, shapes, vmap_method="sequential")
    args = (w_hh, c0, h0, valid, reset, mask, keep_c, keep_h, gates, aux, hs, cs, d_ys, d_h, d_c)
    d_proj, d_rec, d_h0, d_c0 = call(
        *(_or_empty(a) for a in args), kind=np.int32(kind), batch_major=np.int32(batch_major)
    )
    return d_proj, (d_rec if kind == GRU else d_proj), d_h0, d_c0
