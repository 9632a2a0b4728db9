"""The public layers: one direction (`run`), a bidirectional layer (`run_layer`), a stack.

Shapes are batch-major at this API (`xs: [b, t, d]`); the backends (`backends.py`) run
time-major. Every function takes a cell (see `rnnlab.cells.base`) and its params and returns
`(final_carry, ys)`; with `trace=True` also the per-step carries and gates (`Trace`), which is how
the diagnostics look inside a layer without a second loop of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnlab import kernels, precision
from rnnlab.attention import lengths_to_mask
from rnnlab.cells.base import Cell, with_recurrent_matrix
from rnnlab.recurrence import backends, scan
from rnnlab.recurrence.step import (
    StepAux,
    recurrent_dropout_mask,
    reverse_padded,
    reverse_resets,
    validate_inputs,
    zoneout_keep,
)
from rnnlab.typing import Array, Carry, Params, PRNGKey

log = logging.getLogger("rnnlab.recurrence")

MERGES = ("concat", "sum")


class RecurrentOptions(NamedTuple):
    """Regularisation and speed options shared by every layer of a stack.

    Attributes:
        dropout: rate between stacked layers (on the outputs of all but the last layer).
        recurrent_dropout: variational dropout rate on the fed-back state.
        zoneout: zoneout rate on every carry leaf.
        unroll: `lax.scan` unroll factor.
        vjp: "custom" or "autodiff" (see `run`).
        input_projection: "hoisted" or "per_step" (see `run`).
        backend: one of `BACKEND_CHOICES` (see `run`).
        matmul_dtype: "float32" or "bfloat16", the operands of the layer's matmuls (see `run`).
    """

    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    unroll: int = 1
    vjp: str = "custom"
    input_projection: str = "hoisted"
    backend: str = "auto"
    matmul_dtype: str = "float32"


DEFAULT_OPTIONS = RecurrentOptions()


class Trace(NamedTuple):
    """What happened at every step of one direction, batch-major and in the original time order.

    Attributes:
        ys: `[b, t, o]` the direction's outputs.
        carries: carry-shaped pytree of `[b, t, ...]`: the carry after every step (padded steps
            hold the frozen carry).
        gates: gate name -> `[b, t, h]` (see `step.step_gates`; zero on padded steps).
    """

    ys: Array
    carries: Carry
    gates: dict[str, Array]


def _swap(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), tree)


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
    vjp: str = "custom",
    input_projection: str = "hoisted",
    backend: str = "auto",
    matmul_dtype: str = "float32",
    carry_deltas: Carry | None = None,
    trace: bool = False,
) -> tuple[Carry, Array] | tuple[Carry, Array, Trace]:
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
        vjp: how the layer is differentiated: "custom" (the hand-written reverse pass) or
            "autodiff" (JAX differentiates the scan; the reference, and what `jax.jvp` needs).
        input_projection: "hoisted" (default: one `[t*b, d] @ [d, g]` matmul before the scan)
            or "per_step" (`x_t @ w_ih.T` inside the step, next to the recurrent matmul, as
            `flax.linen` cells do). Either way the backward pass computes the projection's
            gradients for all steps as one large matmul after the backward scan. Measured on a
            2-core CPU (`scripts/benchmark.py --impls rnnlab,rnnlab-per-step`): per-step was
            faster for LSTM inference at batch 128 (1.3x) but slower for training and for GRU in
            most configs, so "hoisted" is the default; measure on your hardware.
        backend: what computes the recurrence (`backends.BACKENDS`): "auto" (default),
            "native", "associative", "log_space", "chunkwise", "xla" or "cudnn". "associative"
            runs a linear recurrence (`linear_recurrence`) as a parallel scan, "log_space" as
            a parallel scan in logs (minGRU / minLSTM, as their paper trains, `log_space`:
            positive coefficients only); "chunkwise" a cell's chunkwise
            form (mLSTM; no resets or zoneout), which "auto" takes before the scan. "native"
            runs it (forward and backward) in the optional native CPU kernel
            (`rnnlab.kernels`), "xla" in `lax.scan`. "auto" picks native when
            the library is built and the call is supported (a cell that declares
            `native_kernel`; float32; `vjp="custom"`; hoisted input projection; any lengths,
            resets, reverse, recurrent dropout, zoneout), else the scan; the run log says which
            and why (`backend_of`). "native" raises instead. Native only runs on CPU: on other
            platforms the same program takes the scan. "cudnn" runs a plain float32 `LSTMCell`
            (no resets, recurrent dropout or zoneout) in cuDNN's fused LSTM on CUDA
            (`rnnlab.kernels.cudnn`) and raises elsewhere; "auto" never picks it.
        matmul_dtype: "float32" (default; bit for bit the float32 code) or "bfloat16": every
            matmul the layer owns (the input projection, the recurrent `h @ W_hh^T`, their
            gradients and the weight gradients) rounds both operands to bfloat16 and sums in
            float32 (`precision.py`); gate math, carry, params and optimizer stay float32, as
            do matmuls inside a cell's `pointwise` and the blocks' head-wise projections. The
            XLA scan, the associative, log-space and chunkwise forms and the native kernel
            (where built with bfloat16 support) run it; cuDNN does not.
        carry_deltas: carry-shaped pytree of `[b, t, ...]` additive perturbations of each step's
            new carry (original time order); `jax.grad` with respect to zeros here is the total
            derivative `d loss / d carry_t` (diagnostics; runs on the XLA scan, autodiff).
        trace: also return a `Trace` (every step's carry and gates; runs on the XLA scan).

    Returns:
        (final carry, `ys: [b, t, o]`), and the `Trace` when `trace` is True.
    """
    params = with_recurrent_matrix(cell, params)
    validate_inputs(cell, params, xs, lengths)
    if vjp not in backends.VJPS:
        raise ValueError(f"vjp must be one of {backends.VJPS}, got {vjp!r}")
    scan.is_per_step(input_projection)
    backends.check_backend(backend)
    precision.check_matmul_dtype(matmul_dtype)
    batch, time = xs.shape[:2]
    dtype = xs.dtype
    if resets is not None:
        if resets.shape != (batch, time):
            raise ValueError(f"resets must be [batch, time]=({batch}, {time}), got {resets.shape}")
        resets = resets.astype(dtype)
    flip = (lambda a: reverse_padded(a, lengths)) if reverse else (lambda a: a)
    if reverse:
        xs = flip(xs)
        if resets is not None:
            resets = reverse_resets(resets, lengths)
        if zoneout_keep is not None:
            zoneout_keep = jax.tree_util.tree_map(
                lambda k: reverse_padded(k, lengths, time_axis=0), zoneout_keep
            )
    if carry_deltas is not None:
        carry_deltas = _swap(jax.tree_util.tree_map(flip, carry_deltas))
    aux = StepAux(
        valid=None if lengths is None else lengths_to_mask(lengths, time).T.astype(dtype),
        reset=None if resets is None else resets.T,
        zoneout_keep=zoneout_keep,
        delta=carry_deltas,
    )
    carry0 = cell.initial_carry(batch, dtype) if initial_carry is None else initial_carry
    request = backends.Request(
        cell, params, xs, lengths, carry0, aux, recurrent_mask, unroll, vjp,
        input_projection, trace, matmul_dtype,
    )  # fmt: skip
    chosen, _ = backends.resolve(backend, request)
    carry, outputs = backends.run(chosen, request)
    back = lambda tree: jax.tree_util.tree_map(flip, _swap(tree))
    if not trace:
        return carry, back(outputs)
    ys, carries, gates = back(outputs)
    return carry, ys, Trace(ys=ys, carries=carries, gates=gates)


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
    carry_deltas: Carry | None = None,
    trace: bool = False,
) -> tuple[Carry, Array] | tuple[Carry, Array, Any]:
    """One (optionally bidirectional) layer with recurrent dropout and zoneout.

    Args:
        params: `cell.init(...)`, or `{"forward": ..., "backward": ...}` when bidirectional.
        initial_carry: a carry, or a `(forward, backward)` pair when bidirectional.
        merge: how to join the two directions' outputs: "concat" (`[b, t, 2o]`) or "sum".
        key: PRNG key for training-time masks; `None` means evaluation (no dropout, zoneout by
            its expectation).
        carry_deltas, trace: see `run`; pairs `(forward, backward)` when bidirectional.

    Returns:
        (final carry or `(forward, backward)` carries, `ys: [b, t, o or 2o]`), and the `Trace`
        (a pair when bidirectional) when `trace` is True.
    """
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    direction = dict(
        lengths=lengths, resets=resets, options=options, trace=trace
    )  # the same for both directions
    if not bidirectional:
        return _run_direction(
            cell, params, xs, False, initial_carry, key, carry_deltas, **direction
        )
    if set(params) != {"forward", "backward"}:
        raise ValueError("bidirectional params must be {'forward': ..., 'backward': ...}")
    carry_fw, carry_bw = (None, None) if initial_carry is None else initial_carry
    key_fw, key_bw = (None, None) if key is None else jax.random.split(key)
    deltas_fw, deltas_bw = (None, None) if carry_deltas is None else carry_deltas
    fw = _run_direction(
        cell, params["forward"], xs, False, carry_fw, key_fw, deltas_fw, **direction
    )
    bw = _run_direction(
        cell, params["backward"], xs, True, carry_bw, key_bw, deltas_bw, **direction
    )
    ys = merge_directions(fw[1], bw[1], merge)
    if not trace:
        return (fw[0], bw[0]), ys
    return (fw[0], bw[0]), ys, (fw[2], bw[2])


def merge_directions(forward: Array, backward: Array, merge: str) -> Array:
    """Join the two directions' outputs `[b, t, o]`: "concat" (`[b, t, 2o]`) or "sum"."""
    return (
        jnp.concatenate([forward, backward], axis=-1) if merge == "concat" else forward + backward
    )


def _run_direction(
    cell: Cell,
    params: Params,
    xs: Array,
    reverse: bool,
    initial_carry: Carry | None,
    key: PRNGKey | None,
    carry_deltas: Carry | None,
    *,
    lengths: Array | None,
    resets: Array | None,
    options: RecurrentOptions,
    trace: bool,
) -> tuple[Any, ...]:
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
        vjp=options.vjp,
        input_projection=options.input_projection,
        backend=options.backend,
        matmul_dtype=options.matmul_dtype,
        carry_deltas=carry_deltas,
        trace=trace,
    )


def layer_output_size(cell: Cell, bidirectional: bool = False, merge: str = "concat") -> int:
    """Width of a layer's outputs: doubled when both directions are concatenated."""
    return cell.output_size * (2 if bidirectional and merge == "concat" else 1)


def layer_name(index: int) -> str:
    """The name of layer `index` of a stack: its params key and its name in logs and traces."""
    return f"layer_{index}"


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
    """What `run` computes a layer with, in words, for the run log: the backend's name, with why
    `backend="auto"` passed over the native kernel, or "(backend=xla)" for an explicit choice."""
    one = params.get("forward", params)  # a bidirectional layer: both directions alike
    request = backends.Request(
        cell, one, xs, None, None, StepAux(), None, options.unroll, options.vjp,
        options.input_projection, matmul_dtype=options.matmul_dtype,
    )  # fmt: skip
    backend, skipped = backends.resolve(options.backend, request)
    if backend is backends.BACKENDS["native"]:
        return f"{backend.name}, {kernels.isa()} code"
    if skipped is not None:
        return f"{backend.name}: {skipped}"
    return (
        f"{backend.name} (backend={options.backend})" if backend is backends.XLA else backend.name
    )


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
        log.info("%s: %s", layer_name(index), backend)


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
    carry_deltas: Sequence[Carry] | None = None,
    trace: bool = False,
) -> tuple[list[Carry], Array] | tuple[list[Carry], Array, list[Any]]:
    """Stacked layers with dropout between them (Zaremba et al. 2014: not on recurrent edges).

    Args:
        params: one entry per layer (see `init_stack`).
        initial_carry: one carry per layer (pairs when bidirectional), or None for zeros.
        key: PRNG key for training-time dropout/zoneout masks; None means evaluation.
        carry_deltas: one entry per layer (see `run_layer`), or None.
        trace: also return each layer's `Trace` (pairs when bidirectional).

    Returns:
        (list of final carries, one per layer; outputs of the last layer `[b, t, o]`), and the
        list of per-layer traces when `trace` is True.
    """
    carries, traces = [], []
    for index, layer_params in enumerate(params):
        if not trace and carry_deltas is None:  # diagnostic runs take the XLA scan
            _log_backend(index, cell, layer_params, xs, options)
        layer_key = None if key is None else jax.random.fold_in(key, index)
        if index > 0 and options.dropout > 0 and layer_key is not None:
            drop_key, layer_key = jax.random.split(layer_key)
            keep = jax.random.bernoulli(drop_key, 1.0 - options.dropout, xs.shape)
            xs = jnp.where(keep, xs / (1.0 - options.dropout), jnp.zeros_like(xs))
        out = run_layer(
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
            carry_deltas=None if carry_deltas is None else carry_deltas[index],
            trace=trace,
        )
        carries.append(out[0])
        xs = out[1]
        traces.extend(out[2:])
    return (carries, xs, traces) if trace else (carries, xs)
