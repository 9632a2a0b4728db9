"""cuDNN's fused LSTM on NVIDIA GPUs, through `jax.experimental.rnn` (forward and backward).

`recurrence.run(backend="cudnn")` (opt-in; `RecurrentOptions.backend`) takes this path for a
plain `LSTMCell` in float32 on CUDA when nothing needs a per-step hook (resets, recurrent
dropout, zoneout, an autodiff or per-step-projection request): cuDNN runs the whole sequence,
all four gates and the weight gradients in its own kernels, as `torch.nn.LSTM` does on CUDA. It
is not the default: on an H100 the XLA scan (custom backward) trained 1.3-1.7x faster than this
path on the benchmark grid, though it compiles slower (1-3 s vs 0.3-0.6 s); measure on yours
(`scripts/benchmark.py --impls rnnlab,rnnlab-cudnn,torch`).

The parameter layout is already PyTorch's (gate order i, f, g, o; `w_ih: [4h, d]`,
`w_hh: [4h, h]`), which is cuDNN's: the flat weight vector is `[w_ih, w_hh, b_ih, b_hh]`, and
rnnlab's single bias goes in `b_ih` (with `b_hh` zero), so the bias gradient arrives in one
piece.

Parity with the scan (outputs, carries, every gradient; lengths, reverse, bidirectional, initial
carries) is tested in `tests/test_cudnn.py`, which runs where a GPU is present.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from rnnlab.cells.lstm import LSTMState
from rnnlab.typing import Array, Params


def unsupported_reason(
    cell: Any,
    xs: Array,
    *,
    resets: Array | None,
    recurrent_mask: Array | None,
    zoneout_keep: Any,
    vjp: str,
    input_projection: str,
) -> str | None:
    """Why `run` with these arguments cannot use cuDNN (None if it can)."""
    from rnnlab.cells import LSTMCell

    if not cuda_present():
        return "no CUDA device (jaxlib's cuDNN bindings are only present with one)"
    if type(cell) is not LSTMCell or cell.peephole or cell.layer_norm or cell.proj_size:
        return "cuDNN runs the plain LSTMCell only"
    if xs.dtype != jnp.float32:
        return "the cuDNN path is float32 only"
    if resets is not None or recurrent_mask is not None or zoneout_keep is not None:
        return "resets, recurrent dropout and zoneout need the per-step scan"
    if vjp != "custom" or input_projection != "hoisted":
        return 'vjp="autodiff" and input_projection="per_step" run on the scan'
    try:
        _allow_tf32()
    except (NotImplementedError, ValueError) as error:
        return f"cuDNN cannot honour jax_default_matmul_precision: {error}"
    return None


@functools.cache
def cuda_present() -> bool:
    """Whether this process has a CUDA backend (the cuDNN branch can only be traced then)."""
    try:
        return bool(jax.devices("cuda"))
    except RuntimeError:
        return False


def _allow_tf32() -> bool:
    """cuDNN's TF32 switch from JAX's matmul precision, as `jax.experimental.rnn` reads it."""
    from jax.experimental import rnn

    return rnn._lstm_cudnn_allow_tf32(None)  # noqa: SLF001 - the one source of that rule


def flat_weights(params: Params) -> Array:
    """cuDNN's flat layout of one layer and direction: `[w_ih, w_hh, b_ih, b_hh]`."""
    bias = params["b"]
    return jnp.concatenate(
        [params["w_ih"].ravel(), params["w_hh"].ravel(), bias, jnp.zeros_like(bias)]
    )


def lstm(
    params: Params, xs: Array, carry0: LSTMState, lengths: Array | None
) -> tuple[LSTMState, Array]:
    """One direction of a plain LSTM over `xs: [b, t, d]` from `carry0`; returns
    (final carry at each sequence's last valid step, `ys: [b, t, h]`, zero past each length)."""
    from jax.experimental import rnn

    batch, time, input_size = xs.shape
    hidden = params["w_hh"].shape[1]
    full = jnp.full((batch,), time, jnp.int32)
    seq_lengths = full if lengths is None else jnp.asarray(lengths, jnp.int32)
    # cuDNN rejects empty sequences: run them one step and restore their state afterwards.
    ys, h_n, c_n = rnn.lstm(
        xs,
        carry0.h[None],
        carry0.c[None],
        flat_weights(params),
        jnp.maximum(seq_lengths, 1),
        input_size=input_size,
        hidden_size=hidden,
        num_layers=1,
        dropout=0.0,
        bidirectional=False,
    )
    carry = LSTMState(c=c_n[0], h=h_n[0])
    if lengths is None:
        return carry, ys
    empty = seq_lengths == 0
    carry = jax.tree_util.tree_map(
        lambda new, old: jnp.where(empty[:, None], old, new), carry, carry0
    )
    valid = jnp.arange(time)[None, :] < seq_lengths[:, None]
    return carry, jnp.where(valid[:, :, None], ys, 0.0)
