"""Optional native CPU recurrences, called from XLA through JAX's FFI (`csrc/rnn_kernels.cc`).

Only the sequential part of a layer runs natively: per step one matrix product with the
recurrent weights (a register-blocked AVX-512 kernel over weights packed once per call, or
OpenBLAS from the `scipy-openblas32` wheel for other sizes) and the fused gate math, forward
and backward, on two of XLA's intra-op threads once a step is large enough: from batch 8 each
thread runs the whole recurrence of half the batch rows (no synchronisation between steps), below
it each step's product is split by columns. The hoisted input projection and all weight
gradients stay in XLA, so `rnnlab.recurrence` uses these functions as a drop-in replacement for
its scans inside the custom-VJP pass (`backend="auto"|"native"`).

The library is compiled when the package is installed (`setup.py`, optional: without a compiler
the install still succeeds and `available()` is False, so everything runs on the XLA scan). It is
built for any x86-64 and holds the kernels three times, for AVX-512, AVX2 and the baseline
("scalar": SSE2); the best one the CPU supports is chosen when it is loaded (`isa()`).
Set `RNNLAB_NATIVE=0` to ignore a built library, `RNNLAB_NATIVE_ISA=avx512|avx2|scalar` to run
another ISA (one the CPU supports; else `available()` is False and `unavailable_reason()` says
why), `RNNLAB_NATIVE_GEMM=blas` to use OpenBLAS for every per-step product (for comparison with
the packed kernel), `RNNLAB_NATIVE_SPLIT=rows|columns|none` to force how a call uses the second
thread (to measure; every split gives bit-identical results on the packed product).
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

ISAS = ("avx512", "avx2", "scalar")
"""The instruction sets the library holds the kernels for, best first (`kIsas` in
`csrc/rnn_kernels.cc`): "avx512" (AVX-512 F/CD/BW/DQ/VL; the packed GEMM and 16-lane gate loops),
"avx2" (AVX2 + FMA; BLAS products), "scalar" (baseline x86-64, SSE2; BLAS products)."""

ISA_ENV = "RNNLAB_NATIVE_ISA"
"""Environment variable naming the instruction set to run the kernels on ("auto" or unset: the
best the CPU supports), read once, when the library is loaded."""

FORWARD_TARGET = "rnnlab_native_forward"
BACKWARD_TARGET = "rnnlab_native_backward"
_HERE = os.path.dirname(os.path.abspath(__file__))


def _blas_sgemm() -> Any:
    """OpenBLAS's `cblas_sgemm` (from the `scipy-openblas32` dependency), single-threaded: the
    kernels split each step across XLA's intra-op threads themselves. It is only the fallback
    for sizes the built-in packed AVX-512 kernel does not take (hidden size not a multiple of 32,
    or a CPU, or a chosen `RNNLAB_NATIVE_ISA`, without AVX-512)."""
    import scipy_openblas32

    name = f"lib{scipy_openblas32.get_library()}.so"
    lib = ctypes.CDLL(os.path.join(scipy_openblas32.get_lib_dir(), name), mode=ctypes.RTLD_GLOBAL)
    lib.scipy_openblas_set_num_threads(1)
    return lib.scipy_cblas_sgemm


def _library_paths() -> list[str]:
    """The built library in the package directory (one, or none)."""
    return sorted(glob.glob(os.path.join(_HERE, "_rnn_kernels*.so")))


def _isa_names(lib: ctypes.CDLL, supported_only: bool) -> list[str]:
    """The ISAs built into the library, or only those this CPU runs; best first."""
    lib.RnnlabIsas.restype = ctypes.c_char_p
    return lib.RnnlabIsas(int(supported_only)).decode().split(",")


def _select_isa(lib: ctypes.CDLL, wanted: str) -> str | None:
    """Make the library run on ISA `wanted` ("auto": the best this CPU runs, which the library
    chose when it was loaded); None on success, else why not (nothing has run yet)."""
    if wanted in ("", "auto"):
        return None
    built, here = _isa_names(lib, False), _isa_names(lib, True)
    if wanted not in built:
        return f"{ISA_ENV}={wanted!r} is not one of auto, {', '.join(built)}; unset it or pick one"
    if wanted not in here or not lib.RnnlabSelectIsa(wanted.encode()):
        return (
            f"{ISA_ENV}={wanted} but this CPU cannot run {wanted} code (it can run: "
            f"{', '.join(here)}); unset {ISA_ENV} or set it to one of those"
        )
    return None


@functools.cache
def _load() -> tuple[str | None, str | None, bool]:
    """Load the library, choose its ISA and register its FFI targets: `(isa, None, bf16)` on
    success (`bf16`: whether the loaded kernels run bfloat16 matmuls), else
    `(None, why not, False)`."""
    if os.environ.get("RNNLAB_NATIVE", "1") == "0":
        return None, "disabled by RNNLAB_NATIVE=0", False
    paths = _library_paths()
    if not paths:
        return (
            None,
            (
                "the native library was not built (no C++ compiler at install time?); "
                "reinstall with `pip install -e .` to build it"
            ),
            False,
        )
    try:
        sgemm = _blas_sgemm()
        lib = ctypes.CDLL(paths[0])
        reason = _select_isa(lib, os.environ.get(ISA_ENV, "auto").strip().lower())
        if reason is not None:
            return None, reason, False
        lib.RnnlabSetSgemm(ctypes.cast(sgemm, ctypes.c_void_p))
        jax.ffi.register_ffi_target(
            FORWARD_TARGET, jax.ffi.pycapsule(lib.RnnlabForward), platform="cpu"
        )
        jax.ffi.register_ffi_target(
            BACKWARD_TARGET, jax.ffi.pycapsule(lib.RnnlabBackward), platform="cpu"
        )
        lib.RnnlabIsa.restype = ctypes.c_char_p
        return lib.RnnlabIsa().decode(), None, bool(lib.RnnlabBf16())
    except (ImportError, OSError, AttributeError) as error:
        return None, f"the native library could not be loaded: {error}", False


def available() -> bool:
    """Whether the native kernels are built and loaded."""
    return _load()[1] is None


def unavailable_reason() -> str | None:
    """Why `available()` is False (None when it is True)."""
    return _load()[1]


def bf16_unavailable_reason() -> str | None:
    """Why the kernels cannot run bfloat16 matmuls (`matmul_dtype="bfloat16"`; None if they can):
    they need the AVX-512 path and a CPU with AVX512_BF16 (`vdpbf16ps`)."""
    isa_name, reason, bf16 = _load()
    if reason is not None:
        return f"is unavailable: {reason}"
    if not bf16:
        if isa_name != "avx512":
            return f"needs the avx512 path (running {isa_name})"
        return "needs a CPU with AVX512_BF16 (this one has none)"
    return None


def bf16_available() -> bool:
    """Whether the kernels run bfloat16 matmuls here (see `bf16_unavailable_reason`)."""
    return bf16_unavailable_reason() is None


def isa() -> str | None:
    """The instruction set the kernels run on: "avx512", "avx2" or "scalar" (None when they are
    unavailable). The best the CPU supports unless `RNNLAB_NATIVE_ISA` chose another."""
    return _load()[0]


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
    reason = unavailable_reason()
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
    bf16: bool = False,
) -> tuple[Array, ...]:
    """The forward recurrence over time-major `projected: [t, b, g]`.

    `bias: [g]` (LSTM and Elman only; None for the GRU) is added to `projected` inside the kernel,
    saving XLA a pass over `[t, b, g]`. With `batch_major`, `ys` is written `[b, t, h]` (no
    transpose afterwards). With `bf16` the per-step product rounds `h_in` and `W` to bfloat16
    and sums in float32 (`bf16_available()`; hidden size a multiple of 32). Returns `(ys, h_T,
    c_T, hs, cs, h_in, gates, aux)`; the last five (the adjoint's residuals) and `c_T` (non-LSTM)
    are empty unless `save`/LSTM."""
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
        *(_or_empty(a) for a in args),
        kind=np.int32(kind),
        batch_major=np.int32(batch_major),
        bf16=np.int32(bf16),
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
    bf16: bool = False,
) -> tuple[Array, Array, Array, Array]:
    """The reverse (adjoint) recurrence: `(d_projected, d_recurrent, d_h0, d_c0)`, both `[t, b, g]`
    pre-activation gradients (the same array except for the GRU's n gate; `d_recurrent` is
    returned as `d_projected` then), and the initial carry's. `d_ys` is `[b, t, h]` with
    `batch_major` (as the forward's `ys`), else `[t, b, h]`. `bf16`: the per-step product
    `d_rec @ W` in bfloat16 operands, as in `forward`."""
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
        *(_or_empty(a) for a in args),
        kind=np.int32(kind),
        batch_major=np.int32(batch_major),
        bf16=np.int32(bf16),
    )
    return d_proj, (d_rec if kind == GRU else d_proj), d_h0, d_c0
