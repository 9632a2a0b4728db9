"""Backends as a dispatch table: each says whether it can run a direction, and runs it.

    BACKENDS = {"native": ..., "associative": ..., "log_space": ..., "chunkwise": ...,
                "xla": ..., "cudnn": ...}
    backend, skipped = resolve(choice, request)      # once per direction, at trace time
    carry, ys_tm = backend.run(request)              # every backend: ys time-major [t, b, o]

`backend="auto"` takes the first backend of `AUTO_ORDER` that can run the request (the native CPU
kernel, else a cell's chunkwise form, else the XLA scan, which runs everything; `AUTO_ORDER` says
why not the others); an
explicit choice that cannot be honoured raises a `ConfigError` saying why. A
backend is a pair of pure functions (optax's habit), so a new one is one more entry here.

Diagnostic requests (per-step carries and gates, or carry perturbations; `Request.traced`) always
run on the XLA scan, differentiated by JAX: they re-run a layer's math to look inside it, and the
custom reverse passes do not differentiate with respect to the perturbations.

`matmul_dtype="bfloat16"` (`precision.py`) runs on the XLA scan, the native kernel (where it is
built with bfloat16 support), the associative and log-space scans and the chunkwise form (their
one layer-owned matmul is the input projection); cuDNN refuses it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnlab.cells.base import Cell, declared
from rnnlab.errors import ConfigError
from rnnlab.kernels import cudnn
from rnnlab.recurrence import associative, native, scan
from rnnlab.recurrence.step import LAYER_OWNED, StepAux
from rnnlab.typing import Array, Carry, Params

BACKEND_CHOICES = ("auto", "native", "associative", "log_space", "chunkwise", "xla", "cudnn")
VJPS = ("custom", "autodiff")


class Request(NamedTuple):
    """One direction of one layer, in processing order (already reversed for a reverse
    direction), with everything a backend needs.

    Attributes:
        cell, params: the cell and its params.
        xs: `[b, t, d]` inputs.
        lengths: `[b]` valid steps, or None.
        carry0: the starting carry.
        aux: time-major per-step inputs (`step.StepAux`).
        recurrent_mask: `[b, h_fb]` variational dropout mask, or None.
        unroll, vjp, input_projection: the scan options (`RecurrentOptions`).
        trace: also return every step's carry and gates (diagnostics).
        matmul_dtype: "float32" or "bfloat16", the operands of the layer's matmuls
            (`RecurrentOptions`, `precision.py`).
    """

    cell: Cell
    params: Params
    xs: Array
    lengths: Array | None
    carry0: Carry
    aux: StepAux
    recurrent_mask: Array | None
    unroll: int = 1
    vjp: str = "custom"
    input_projection: str = "hoisted"
    trace: bool = False
    matmul_dtype: str = "float32"

    @property
    def traced(self) -> bool:
        """A diagnostic request: per-step outputs or carry perturbations."""
        return self.trace or self.aux.delta is not None


@dataclasses.dataclass(frozen=True)
class Backend:
    """How to compute a direction.

    Attributes:
        name: in words, for the run log ("native kernel (CPU)").
        platform: the only platform it runs on ("cpu", "cuda"), or None for all; elsewhere the
            same program takes the XLA scan (`jax.lax.platform_dependent`, at lowering time).
        unsupported: `request -> None` if it can run it, else the reason it cannot.
        run: `request -> (final carry, ys: [t, b, o])`; with `request.trace`, `ys` is
            `(ys, carries, gates)`, all time-major.
    """

    name: str
    platform: str | None
    unsupported: Callable[[Request], str | None]
    run: Callable[[Request], tuple[Carry, Any]]


def _small(params: Params) -> Params:
    return {k: v for k, v in params.items() if k not in LAYER_OWNED}


def _run_xla(request: Request) -> tuple[Carry, Any]:
    cell, params = request.cell, request.params
    per_step = scan.is_per_step(request.input_projection)
    xs_tm = jnp.swapaxes(request.xs, 0, 1)
    inputs = scan.scan_inputs(cell, params, xs_tm, per_step, request.matmul_dtype)
    proj = {k: v for k, v in params.items() if k != "w_hh"} if per_step else {}
    static = (cell, request.unroll, per_step, request.matmul_dtype)
    args = (_small(params), params["w_hh"], proj, request.carry0, inputs, request.aux)
    if request.traced or request.vjp != "custom":
        outputs = scan.OUTPUT_TRACE if request.trace else scan.OUTPUT_Y
        return scan.scan_forward(*static, *args, request.recurrent_mask, outputs)
    return scan.scan_custom(*static, *args, request.recurrent_mask)


def _native_unsupported(request: Request) -> str | None:
    if request.traced:
        return "per-step traces and carry perturbations run on the XLA scan"
    return native.unsupported(
        request.cell,
        request.params,
        request.xs,
        initial_carry=request.carry0,
        recurrent_mask=request.recurrent_mask,
        zoneout_keep=request.aux.zoneout_keep,
        vjp=request.vjp,
        input_projection=request.input_projection,
        matmul_dtype=request.matmul_dtype,
    )


def _run_native(request: Request) -> tuple[Carry, Array]:
    return native.run(
        request.cell,
        _small(request.params),
        request.params,
        jnp.swapaxes(request.xs, 0, 1),
        request.carry0,
        request.aux,
        request.recurrent_mask,
        matmul_dtype=request.matmul_dtype,
    )


def _cudnn_unsupported(request: Request) -> str | None:
    if request.traced:
        return "per-step traces and carry perturbations run on the XLA scan"
    if request.matmul_dtype != "float32":
        return f"matmul_dtype={request.matmul_dtype} runs on the XLA scan or the native kernel"
    return cudnn.unsupported_reason(
        request.cell,
        request.xs,
        resets=request.aux.reset,
        recurrent_mask=request.recurrent_mask,
        zoneout_keep=request.aux.zoneout_keep,
        vjp=request.vjp,
        input_projection=request.input_projection,
    )


def _run_cudnn(request: Request) -> tuple[Carry, Array]:
    carry, ys = cudnn.lstm(request.params, request.xs, request.carry0, request.lengths)
    return carry, jnp.swapaxes(ys, 0, 1)


def _associative_unsupported(request: Request) -> str | None:
    zoneout = request.aux.zoneout_keep is not None
    return associative.unsupported(request.cell, request.traced, zoneout)


def _run_associative(request: Request) -> tuple[Carry, Array]:
    return associative.run(
        request.cell, request.params, request.xs, request.carry0, request.aux, request.matmul_dtype
    )


def _log_space_unsupported(request: Request) -> str | None:
    return associative.log_space_unsupported(request.cell, request.traced)


def _run_log_space(request: Request) -> tuple[Carry, Array]:
    return associative.run_log_space(
        request.cell, request.params, request.xs, request.carry0, request.aux, request.matmul_dtype
    )


def _chunkwise_unsupported(request: Request) -> str | None:
    cell = request.cell
    if declared(cell, "chunkwise") is None:
        return (
            f"{type(cell).__name__} has no chunkwise form (cells declaring `chunkwise` have: mlstm)"
        )
    if request.traced:
        return "per-step traces and carry perturbations run on the XLA scan"
    if request.aux.reset is not None:
        return "packed-sequence resets run on the XLA scan (the chunkwise form has none)"
    if request.aux.zoneout_keep is not None:
        return "zoneout runs on the XLA scan (the chunkwise form has none)"
    return None


def _run_chunkwise(request: Request) -> tuple[Carry, Array]:
    valid = None if request.aux.valid is None else jnp.swapaxes(request.aux.valid, 0, 1)
    carry, ys = request.cell.chunkwise(
        request.params, request.xs, request.carry0, valid, request.matmul_dtype
    )
    return carry, jnp.swapaxes(ys, 0, 1)


XLA = Backend("XLA scan", None, lambda request: None, _run_xla)
BACKENDS: dict[str, Backend] = {
    "native": Backend("native kernel (CPU)", "cpu", _native_unsupported, _run_native),
    "associative": Backend("associative scan", None, _associative_unsupported, _run_associative),
    "log_space": Backend("log-space scan", None, _log_space_unsupported, _run_log_space),
    "chunkwise": Backend("chunkwise form", None, _chunkwise_unsupported, _run_chunkwise),
    "xla": XLA,
    "cudnn": Backend(
        "cuDNN (on CUDA; the XLA scan elsewhere)", "cuda", _cudnn_unsupported, _run_cudnn
    ),
}
AUTO_ORDER = ("native", "chunkwise", "xla")
"""What `backend="auto"` tries, in order. The chunkwise form (mLSTM) trained 2.1-4.8x faster
than the sequential scan on a 2-core CPU from 40 to 1024 steps, and inferred 1.0-1.7x as fast
(README "Modern recurrences").
It never picks cuDNN: on an H100 the scan trained 1.3-1.7x faster than cuDNN (and than torch's
cuDNN LSTM) on the benchmark grid. Nor the associative scan: on a 2-core CPU the sequential scan
ran minGRU/minLSTM 1.0-1.5x faster at every length from 64 to 8192 steps, training and
inference, in half the memory (README "Modern recurrences"); where parallel depth pays (a GPU)
choose `backend="associative"`."""


def check_backend(choice: str) -> None:
    """Raise a ValueError unless `choice` is one of `BACKEND_CHOICES`."""
    if choice not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {BACKEND_CHOICES}, got {choice!r}")


def resolve(choice: str, request: Request) -> tuple[Backend, str | None]:
    """The backend for `request`, and why `backend="auto"` passed over the ones before it (None
    when it took the first, or for an explicit choice).

    Raises:
        ConfigError: an explicit `choice` that cannot run the request, with the reason.
    """
    check_backend(choice)
    if request.traced:
        return XLA, None
    if choice != "auto":
        backend = BACKENDS[choice]
        reason = backend.unsupported(request)
        if reason is not None:
            raise ConfigError(
                f'backend="{choice}" is not possible here: {reason}; use backend="auto" '
                "(model.backend)"
            )
        return backend, None
    skipped = None
    for name in AUTO_ORDER:
        backend = BACKENDS[name]
        reason = backend.unsupported(request)
        if reason is None:
            return backend, skipped
        skipped = skipped or reason
    raise AssertionError("the XLA scan runs every request")  # pragma: no cover


def run(backend: Backend, request: Request) -> tuple[Carry, Any]:
    """`backend.run(request)` where the platform allows it, else the XLA scan: a CPU-only
    process needs no dispatch; otherwise the platform picks its branch at lowering time."""
    if backend.platform is None or (jax.default_backend() == "cpu" == backend.platform):
        return backend.run(request)
    if jax.default_backend() == "cpu":
        return XLA.run(request)
    branches = {backend.platform: functools.partial(backend.run, request)}
    return jax.lax.platform_dependent(**branches, default=functools.partial(XLA.run, request))
