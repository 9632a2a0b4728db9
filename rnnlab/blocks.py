"""Residual block stacks: the modern recurrences inside the blocks their papers use.

The plain stack (`rnnlab.nn.RecurrentStack`: embed -> recurrent layers -> dropout) is what a
like-for-like sweep against the LSTM wants. The papers that introduced RG-LRU, mLSTM, sLSTM,
minGRU/minLSTM and the LRU report them inside pre-norm residual blocks with an MLP and (for
Hawk, xLSTM and minGRU/minLSTM) a short causal convolution; `BlockStack` builds those, so a
config can compare "the architecture the paper reports". The recurrence inside every block is
one layer of `rnnlab.recurrence.run_layer` (lengths, resets, carries, recurrent dropout,
zoneout, backends): no block scans on its own. Where the paper's recurrence reads different
inputs for different gates (mLSTM: q and k from the convolved branch, v from the plain one;
sLSTM: i and f from the convolved branch), the block feeds the cell the concatenation of both
branches, and the cell's input projection is the paper's head-wise one (`BlockMLSTM`,
`BlockSLSTM`, `HawkRGLRU`: subclasses that override only `project_inputs`, computing the
block-diagonal projections block by block, never the zeros of a dense fused `w_ih`). The cell
files are unchanged: the blocks build their cells' params from their own. These head-wise
projections stay float32 under `matmul_dtype="bfloat16"` (`RecurrentOptions`; they are many
small matmuls, not the layer's one large one); the layer's recurrent matmul, where the cell has
one, and the dense projections of the prenorm and minrnn blocks' cells take bfloat16.

Kinds (`BLOCK_KINDS`; `Backbone.block`):

    hawk     Hawk's residual block (De et al. 2024, "Griffin: Mixing Gated Linear Recurrences
             with Local Attention for Efficient Language Models", Figure 2):
                 x = x + W_out( GeLU(W_gate n(x)) * RG-LRU(Conv4(W_x n(x))) ),  n = RMSNorm
                 x = x + MLP(n(x)),  MLP(u) = W_down( GeLU(W_1 u) * (W_2 u) ), expansion 3
             the RG-LRU's gates are block-diagonal (`num_heads` blocks) and it reads the
             convolved branch directly (`cell` an `RGLRUCell`; another cell runs in its place
             on its own params).
    mlstm    xLSTM's mLSTM block (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory",
             Section 4 and Figure 10, pre-up-projection):
                 (u, z) = W_up LN(x)                              up-projection to 2 x inner
                 c = swish(Conv4(u)),  q = W_q c,  k = W_k c,  v = W_v u   (head-wise, 4 x 4)
                 h = GroupNorm(mLSTM(q, k, v)) + s * c            learnable skip s
                 x = x + W_down( h * swish(z) )
             `cell` an `MLSTMCell` of `hidden_size` = inner width (2 x `embed_dim` in the
             paper) and its own `num_heads`; no MLP.
    slstm    xLSTM's sLSTM block (Figure 9, post-up-projection):
                 c = swish(Conv4(LN(x))),  (i, f) from c,  (z, o) from LN(x)  (head-wise)
                 x = x + GroupNorm(sLSTM(...))        block-diagonal heads throughout
                 x = x + MLP(LN(x)),  expansion 4/3
             `cell` an `SLSTMCell` of `hidden_size` = `embed_dim`; its `num_heads` are the
             block's heads.
    xlstm    mLSTM blocks with sLSTM blocks at the indices `slstm_at` (xLSTM[a:b]); `cell` is
             the mLSTM cell, the sLSTM blocks use `SLSTMCell(embed_dim, num_heads)`.
    prenorm  the generic pre-norm block for any cell, as minGRU / minLSTM (Feng et al. 2024,
             "Were RNNs All We Needed?") and the LRU (Orvieto et al. 2023, "Resurrecting
             Recurrent Neural Networks for Long Sequences") are used:
                 x = x + W_out( cell(RMSNorm(x)) ),  x = x + MLP(RMSNorm(x)), expansion 3
    minrnn   the block of Feng et al.'s code (BorealisAI/minRNNs, `models/model.py`), for any
             cell (minGRU, minLSTM, or an LSTM/GRU of the same size to compare in the same block):
                 x = x + W_pw Conv_k(x)            (conv_width k > 1 only; depthwise, then 1x1)
                 x = x + W_out( cell(RMSNorm(x)) )
                 x = x + MLP(RMSNorm(x)),  MLP(u) = W_2 GeLU(W_1 u), expansion 4, erf GeLU
             every projection with a bias and PyTorch's default initialisation (the cell: its
             own); dropout on the MLP branch only.

The stack: inputs of another width than `width` pass a Dense first (`input_projection`); blocks;
a final norm (RMSNorm for hawk/prenorm/minrnn, LayerNorm for the xLSTM kinds), zeros at padded
steps. Dropout (`dropout`) falls on every residual branch before its addition (minrnn: on the
MLP branch only).

Differences from the papers' code (recurrentgemma; NX-AI/xlstm; BorealisAI/minRNNs), all
deliberate:
    - Hawk: the embedding is not scaled by sqrt(width) (the models' embedding is shared with the
      plain stack); at a packed-sequence reset the RG-LRU keeps its normaliser sqrt(1 - a_t^2)
      (recurrentgemma sets it to 1; the cell's choice, `rnnlab.cells.rglru`); the MLP
      kernels start with fan-in `width` (recurrentgemma's stacked `[2, d, e]` Einsum counts 2d);
      Hawk's blocks only, no local-attention blocks (Griffin).
    - mLSTM: the cell's output gate is held at sigma(0) = 1/2 and the block doubles its output
      (exact: the block's output gate is swish(z)); the cell's denominator
      max(|n . q|, exp(-m)) has no + 1e-6; the inner width is the cell's `hidden_size` as
      configured (xLSTM rounds 2 x width up to a multiple of 64).
    - sLSTM: the MLP width is round(4/3 x width) (xLSTM: 1.3 x width rounded up to a multiple
      of 64); dropout falls on the residual branch (xLSTM: on the cell's output before the group
      norm); the cell's `forget_bias_range`, `input_init` and `recurrent_init` are replaced by
      the xLSTM code's initialisation.
    - prenorm: no convolution; RMSNorm and a GeGLU MLP for every cell (Feng et al. and Orvieto
      et al. describe layer/batch norm and their own MLP/GLU); the LRU's skip `D x` of its
      readout is left to the residual connection.
    - minrnn: RMSNorm only (the official code chooses BatchNorm or RMSNorm, `norm_type`), with
      `rms_norm`'s eps inside the root (theirs: `F.normalize(x) * sqrt(d)`); no learnt initial
      hidden state (`use_init_hidden_state`): every stream starts from a zero carry, which
      truncated BPTT and generation need; the cell keeps its own options and initialisation
      (`conf/cell/`), where the official cells use PyTorch's `Linear` default, add
      `forget_bias_init_scale` to minLSTM's forget-gate bias and size the state as
      `expansion_factor` x width (here `cell.hidden_size`, read by `W_out`); the convolution and
      the cell honour `lengths` and `resets` (the official code has neither); around the stack,
      `LanguageModel` drops out the embedding and the stack's output at `dropout` and gives its
      output layer a bias (theirs: neither). The convolution and the MLP are those of
      lucidrains' minGRU-pytorch, on which the official code is based (`CausalDepthWiseConv1d`:
      depthwise taps then a pointwise 1x1, both with biases; `FeedForward`: plain GeLU MLP); the
      official `models/modules.py` was not at hand to confirm them (a fork that inlines it,
      Yani-hmc/minRNNs `models.py`, has the same convolution but a GeGLU MLP with a learnt
      per-unit output scale).

Carry, per block: `{"conv": [b, k-1, c], "cell": cell carry}` (no "conv" for prenorm or
`conv_width=1`): the convolution's last `k-1` inputs travel with the recurrence's carry, so a
sequence run in pieces, or token by token in generation, equals one run. With `lengths` they
are each sequence's last valid inputs; with `resets` inputs of an earlier segment are never
convolved with a later one's (recurrentgemma's document mask), in the window carried out too.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlab import recurrence
from rnnlab.attention import lengths_to_mask
from rnnlab.cells.base import Cell, along_last
from rnnlab.cells.base import layer_norm as cell_layer_norm
from rnnlab.cells.mlstm import MLSTMCell
from rnnlab.cells.rglru import RGLRUCell
from rnnlab.cells.slstm import SLSTMCell
from rnnlab.typing import Array, Carry, Params, PRNGKey

log = logging.getLogger("rnnlab.blocks")
_LOGGED_BACKENDS: set[tuple[int, str, str]] = set()

BLOCK_KINDS = ("none", "hawk", "mlstm", "slstm", "xlstm", "prenorm", "minrnn")
"""Every value of `Backbone.block`; "none" is the plain stack (`rnnlab.nn.RecurrentStack`)."""

XLSTM_KINDS = ("mlstm", "slstm", "xlstm")
MLP_EXPANSION = {"hawk": 3.0, "prenorm": 3.0, "mlstm": 0.0, "slstm": 4.0 / 3.0, "minrnn": 4.0}
"""The papers' MLP expansion per block (`mlp_expansion=None`); 0 means no MLP."""
QKV_BLOCK_SIZE = 4
"""xLSTM's head-wise q/k/v projections: blocks of 4 x 4 (`qkv_proj_blocksize`)."""


# ------------------------------------------------------------------------------ pure pieces


def rms_norm(x: Array, scale: Array, eps: float = 1e-6) -> Array:
    """Griffin's RMSNorm: `x / sqrt(mean(x^2) + eps) * (1 + scale)` over the last axis."""
    var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(var + eps) * along_last(1.0 + scale, x)


def layer_norm(x: Array, weight: Array, eps: float = 1e-5) -> Array:
    """xLSTM's LayerNorm: no bias, weight stored as an offset from 1."""
    return cell_layer_norm(x, 1.0 + weight, eps=eps)


def head_norm(x: Array, weight: Array, heads: int, eps: float = 1e-5) -> Array:
    """xLSTM's MultiHeadLayerNorm (a group norm): `x: [..., h]` normalised within each of
    `heads` groups of `h / heads` units, then times `1 + weight` (`[h]`)."""
    grouped = x.reshape(x.shape[:-1] + (heads, x.shape[-1] // heads))
    ones = jnp.ones((grouped.shape[-1],), x.dtype)
    normed = cell_layer_norm(grouped, ones, eps=eps).reshape(x.shape)
    return normed * along_last(1.0 + weight, x)


def headwise(xs: Array, blocks: Array) -> Array:
    """`xs @ blockdiag(blocks)` without the zeros: `[..., n*i]` with `[n, i, o]` blocks ->
    `[..., n*o]`, block `j` applied to the `j`-th slice of `xs` (xLSTM's `LinearHeadwiseExpand`,
    recurrentgemma's `BlockDiagonalLinear`)."""
    n, i, o = blocks.shape
    lead = xs.shape[:-1]
    heads_first = jnp.moveaxis(xs.reshape(-1, n, i), 1, 0)  # [n, rows, i]
    # the head axis leading: XLA's CPU batched matmul; twice as fast as "...ni,nio->...no"
    out = jax.lax.dot_general(heads_first, blocks, (((2,), (1,)), ((0,), (0,))))  # [n, rows, o]
    return jnp.moveaxis(out, 0, 1).reshape(*lead, n * o)


def projection_marker(input_size: int, dtype: Any) -> Array:
    """The empty `w_ih: [0, input_size]` of a block's cell whose input projection is the
    block's own, structured one (`HawkRGLRU`, `BlockMLSTM`, `BlockSLSTM`): the layer reads the
    input width from it, and no multiply-add is spent on the zeros a dense fused matrix would
    hold (in the xLSTM blocks most of them: head-wise 4 x 4 blocks, branches a gate does not
    read)."""
    return jnp.zeros((0, input_size), dtype)


def causal_conv(
    xs: Array,
    w: Array,
    b: Array,
    window: Array | None = None,
    lengths: Array | None = None,
    resets: Array | None = None,
) -> tuple[Array, Array | None]:
    """Depthwise causal convolution over time, `y_t = b + sum_j w[k-1-j] * x_{t-j}`.

    Args:
        xs: `[b, t, c]`.
        w: `[k, c]` taps; `w[k-1]` multiplies the current input (recurrentgemma's `Conv1D`
            layout; PyTorch's causal `Conv1d` weight `[c, 1, k]` transposed).
        b: `[c]`.
        window: `[b, k-1, c]` the `k-1` inputs before `xs`, oldest first; zeros if None.
        lengths: `[b]` valid steps; the returned window holds each sequence's last `k-1` valid
            inputs (outputs at padded steps are whatever; causality keeps them out of valid ones).
        resets: `[b, t]` True where a new segment starts: `x_s` enters `y_t` only if no reset
            lies in `(s, t]`; the window entries count as the segment before the first step.

    Returns:
        (`ys: [b, t, c]`, the next window `[b, k-1, c]`, or None when `k == 1`).
    """
    k = w.shape[0]
    batch, time, channels = xs.shape
    if k == 1:
        return xs * w[0].reshape(1, 1, channels) + b.reshape(1, 1, channels), None
    if window is None:
        window = jnp.zeros((batch, k - 1, channels), xs.dtype)
    full = jnp.concatenate([window.astype(xs.dtype), xs], axis=1)  # [b, k-1+t, c]
    segment = None
    if resets is not None:
        segment = jnp.cumsum(resets.astype(jnp.int32), axis=1)
        segment = jnp.concatenate([jnp.zeros((batch, k - 1), jnp.int32), segment], axis=1)
    ys = jnp.zeros_like(xs)
    for lag in range(k):  # x_{t-lag} sits at full[:, k-1-lag+t]
        start = k - 1 - lag
        shifted = full[:, start : start + time]
        if segment is not None:
            same = segment[:, start : start + time] == segment[:, k - 1 :]
            shifted = jnp.where(same[..., None], shifted, jnp.zeros_like(shifted))
        ys = ys + shifted * w[k - 1 - lag].reshape(1, 1, channels)
    ys = ys + b.reshape(1, 1, channels)
    ends = jnp.full((batch,), time, jnp.int32) if lengths is None else lengths.astype(jnp.int32)
    index = ends[:, None] + jnp.arange(k - 1, dtype=jnp.int32)[None, :]  # [b, k-1] into full
    new_window = jnp.take_along_axis(full, index[..., None], axis=1)
    if segment is not None:
        last = jnp.take_along_axis(segment, (ends + k - 2)[:, None], axis=1)  # x_{L-1}'s segment
        keep = jnp.take_along_axis(segment, index, axis=1) == last
        new_window = jnp.where(keep[..., None], new_window, jnp.zeros_like(new_window))
    return ys, new_window


def mask_steps(xs: Array, lengths: Array | None) -> Array:
    """Zero `xs: [b, t, d]` at steps `>= lengths`."""
    if lengths is None:
        return xs
    valid = lengths_to_mask(lengths, xs.shape[1])[..., None]
    return jnp.where(valid, xs, jnp.zeros_like(xs))


def slstm_forget_bias(head_size: int, index: int, num_blocks: int) -> Array:
    """xLSTM's "powerlaw_blockdependent" forget-gate bias of block `index` of `num_blocks`:
    `-(-5 + 12 (j / (d_h - 1))^(0.3 + 1.3 r))` over the units `j` of a head, `r` the block's
    relative depth: deeper blocks start with longer memories."""
    ratio = index / (num_blocks - 1) if num_blocks > 1 else 0.0
    position = jnp.arange(head_size, dtype=jnp.float32) / max(head_size - 1, 1)
    return -(-5.0 + 12.0 * position ** (0.3 + 1.3 * ratio))


def small_init(dim: int) -> nn.initializers.Initializer:
    """xLSTM's `small_init_init_`: N(0, 2 / (5 dim)) (Nguyen & Salazar 2019)."""
    return nn.initializers.normal(stddev=math.sqrt(2.0 / (5.0 * dim)))


def wang_init(dim: int, num_blocks: int) -> nn.initializers.Initializer:
    """xLSTM's `wang_init_` for output projections: N(0, (2 / num_blocks / sqrt(dim))^2)."""
    return nn.initializers.normal(stddev=2.0 / num_blocks / math.sqrt(dim))


def torch_init(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's default for the weight and the bias of a `Linear` or `Conv1d` of fan-in
    `fan_in` (`in_features`; `in_channels / groups * kernel_size`, so `k` for a depthwise
    convolution): U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -bound, bound
    )


def torch_dense(features: int, fan_in: int, name: str) -> nn.Dense:
    """An `nn.Dense` with a bias, both initialised as PyTorch's `nn.Linear(fan_in, features)`
    (`torch_init`); built inside the calling module's `nn.compact` method."""
    init = torch_init(fan_in)
    return nn.Dense(features, kernel_init=init, bias_init=init, name=name)


def fan_in_normal(scale: float = 1.0) -> nn.initializers.Initializer:
    """recurrentgemma's `variance_scaling(scale, "fan_in", "normal")` (truncated normal)."""
    return nn.initializers.variance_scaling(scale, "fan_in", "normal")


# ------------------------------------------------------------------------------ checks


def block_kinds(block: str, num_blocks: int, slstm_at: tuple[int, ...]) -> tuple[str, ...]:
    """The kind of every block: `block` repeated, or for "xlstm" mLSTM with sLSTM at
    `slstm_at`."""
    if block == "xlstm":
        return tuple("slstm" if i in slstm_at else "mlstm" for i in range(num_blocks))
    return (block,) * num_blocks


def conv_channels(kind: str, cell: Cell, width: int) -> int:
    """Width of the convolved branch of a block (0 for a block without a convolution)."""
    if kind in ("hawk", "mlstm"):
        return cell.hidden_size
    return width if kind in ("slstm", "minrnn") else 0


def check_blocks(
    owner: str,
    *,
    block: str,
    cell: Cell,
    width: int,
    num_blocks: int,
    conv_width: int,
    mlp_expansion: float | None,
    num_heads: int,
    slstm_at: tuple[int, ...],
    bidirectional: bool = False,
) -> None:
    """Raise a ValueError naming the field and the fix for block options that cannot work."""
    if block not in BLOCK_KINDS:
        raise ValueError(f"unknown {owner}.block {block!r}; choose one of {list(BLOCK_KINDS)}")
    if block == "none":
        if slstm_at:
            raise ValueError(f"{owner}.slstm_at={list(slstm_at)} needs block=xlstm")
        return
    if bidirectional:
        raise ValueError(
            f"{owner}.block={block!r} is causal (its convolution and recurrence read the past "
            "only): set bidirectional=false, or block=none for a bidirectional plain stack"
        )
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"{owner}.embed_dim (the blocks' width) must be a positive int")
    if isinstance(conv_width, bool) or not isinstance(conv_width, int) or conv_width < 1:
        raise ValueError(f"{owner}.conv_width must be an int >= 1, got {conv_width!r}")
    if mlp_expansion is not None and not mlp_expansion >= 0:
        raise ValueError(f"{owner}.mlp_expansion must be >= 0 or null, got {mlp_expansion}")
    if block == "xlstm":
        if not slstm_at or any(not 0 <= i < num_blocks for i in slstm_at):
            raise ValueError(
                f"{owner}.slstm_at={list(slstm_at)} must list block indices in "
                f"[0, num_layers={num_blocks}) for block=xlstm (block=mlstm for none)"
            )
        if len(set(slstm_at)) != len(slstm_at):
            raise ValueError(f"{owner}.slstm_at={list(slstm_at)} repeats an index")
    elif slstm_at:
        raise ValueError(
            f"{owner}.slstm_at={list(slstm_at)} is only for block=xlstm (got block={block!r})"
        )
    kinds = set(block_kinds(block, num_blocks, slstm_at))
    if "mlstm" in kinds:
        if not isinstance(cell, MLSTMCell):
            raise ValueError(
                f"{owner}.block={block!r} runs the mLSTM block: the cell must be an MLSTMCell "
                f"(model/cell=mlstm), got {type(cell).__name__}"
            )
        if cell.hidden_size % QKV_BLOCK_SIZE:
            raise ValueError(
                f"{owner}: the mLSTM block's inner width cell.hidden_size={cell.hidden_size} "
                f"must be a multiple of {QKV_BLOCK_SIZE} (its head-wise q/k/v blocks)"
            )
    if "slstm" in kinds:
        if block == "slstm" and not isinstance(cell, SLSTMCell):
            raise ValueError(
                f"{owner}.block='slstm' runs the sLSTM block: the cell must be an SLSTMCell "
                f"(model/cell=slstm), got {type(cell).__name__}"
            )
        if block == "slstm" and cell.hidden_size != width:
            raise ValueError(
                f"{owner}.block='slstm': the sLSTM runs at the blocks' width: set "
                f"cell.hidden_size={width} (= embed_dim), got {cell.hidden_size}"
            )
        if block == "xlstm" and width % num_heads:
            raise ValueError(
                f"{owner}: the sLSTM blocks' heads num_heads={num_heads} must divide "
                f"embed_dim={width}"
            )
    if block == "hawk" and isinstance(cell, RGLRUCell) and cell.hidden_size % num_heads:
        raise ValueError(
            f"{owner}: the RG-LRU's block-diagonal gates need num_heads={num_heads} to divide "
            f"cell.hidden_size={cell.hidden_size} (the lru_width)"
        )


# ------------------------------------------------------------- the blocks' structured cells


def as_block_cell(cls: type, cell: Cell) -> Cell:
    """`cell`'s settings on `cls`, one of the block cells below (a subclass of its class)."""
    return cls(**{f.name: getattr(cell, f.name) for f in dataclasses.fields(cell)})


@dataclasses.dataclass(frozen=True)
class HawkRGLRU(RGLRUCell):
    """The RG-LRU of Hawk's block: the gates' block-diagonal projections (`w_a`, `w_x`:
    `[heads, n/heads, n/heads]`, biases `b_a`, `b_x`) computed head-wise, and `u = x`, the
    convolved branch itself (no matmul); params `{w_ih: marker, w_a, b_a, w_x, b_x, a_param}`.
    Equal to the `RGLRUCell` with the dense fused `w_ih = [blockdiag(w_a); blockdiag(w_x); I]`."""

    linear_recurrence = True

    def project_inputs(self, params: Params, xs: Array, matmul_dtype: str = "float32") -> Array:
        r = headwise(xs, params["w_a"]) + along_last(params["b_a"], xs)
        i = headwise(xs, params["w_x"]) + along_last(params["b_x"], xs)
        return jnp.concatenate([r, i, xs], axis=-1)


@dataclasses.dataclass(frozen=True)
class BlockMLSTM(MLSTMCell):
    """The mLSTM of xLSTM's mLSTM block, reading `[c; u]` (convolved; plain branch): q, k from
    `c` and v from `u` through head-wise 4 x 4 blocks (`qkv`: `q, k, v: [inner/4, 4, 4]`), the
    output gate's pre-activation 0 (`sigma(0)`, undone by the block), and the scalar gates
    `i~ = w_i [q; k; v] + b_i`, `f~ = w_f [q; k; v] + b_f` (`gates`); params
    `{w_ih: marker, qkv, gates}`. Equal to the `MLSTMCell` with the dense fused `w_ih` that holds
    these blocks and zeros."""

    chunkwise = MLSTMCell.chunkwise

    def project_inputs(self, params: Params, xs: Array, matmul_dtype: str = "float32") -> Array:
        inner, qkv, gates = self.hidden_size, params["qkv"], params["gates"]
        c, u = xs[..., :inner], xs[..., inner:]
        q, k, v = headwise(c, qkv["q"]), headwise(c, qkv["k"]), headwise(u, qkv["v"])
        heads_in = jnp.concatenate([q, k, v], axis=-1)
        w = jnp.concatenate([gates["w_i"], gates["w_f"]])  # [2 heads, 3 inner]
        b = jnp.concatenate([gates["b_i"], gates["b_f"]])
        scalar_gates = heads_in @ w.T + along_last(b, heads_in)  # i~, f~
        return jnp.concatenate([heads_in, jnp.zeros_like(q), scalar_gates], axis=-1)


@dataclasses.dataclass(frozen=True)
class BlockSLSTM(SLSTMCell):
    """The sLSTM of xLSTM's sLSTM block, reading `[c; n]` (convolved; normed input): i and f
    from `c`, z and o from `n`, each through the head-wise `proj` blocks (`[heads, d_h, d_h]`,
    `x @ W` oriented), plus `b`; params `{w_ih: marker, proj, b, r or w_hh}`. Equal to the
    `SLSTMCell` with the dense fused `w_ih` that holds these blocks and zeros."""

    def project_inputs(self, params: Params, xs: Array, matmul_dtype: str = "float32") -> Array:
        d, proj = self.hidden_size, params["proj"]
        c, n = xs[..., :d], xs[..., d:]
        gates = [headwise(c, proj["i"]), headwise(c, proj["f"])]
        gates += [headwise(n, proj["z"]), headwise(n, proj["o"])]
        projected = jnp.concatenate(gates, axis=-1)
        return projected + along_last(params["b"], projected)


# ------------------------------------------------------------------------------ modules


class GatedMLP(nn.Module):
    """`W_down( act(W_gate u) * (W_up u) )`: Griffin's GeGLU MLP block, xLSTM's `ffn_gated`.

    Attributes:
        hidden: the expanded width.
        out: the output width.
        exact_gelu: erf GeLU (PyTorch's default, xLSTM) instead of the tanh approximation
            (`jax.nn.gelu`'s default, recurrentgemma).
        use_bias: biases on the three projections (Griffin: yes; xLSTM: no).
        up_init, down_init: kernel initialisers.
    """

    hidden: int
    out: int
    exact_gelu: bool = False
    use_bias: bool = True
    up_init: Any = nn.linear.default_kernel_init
    down_init: Any = nn.linear.default_kernel_init

    @nn.compact
    def __call__(self, u: Array) -> Array:
        dense = lambda n, init, name: nn.Dense(
            n, use_bias=self.use_bias, kernel_init=init, name=name
        )
        gate = dense(self.hidden, self.up_init, "gate")(u)
        gate = jax.nn.gelu(gate, approximate=not self.exact_gelu)
        up = dense(self.hidden, self.up_init, "up")(u)
        return dense(self.out, self.down_init, "down")(gate * up)


class FeedForward(nn.Module):
    """`W_2 GeLU(W_1 u)`: the plain Transformer MLP of Feng et al.'s block (lucidrains'
    `FeedForward`: `Linear`, `nn.GELU()` (exact erf), `Linear`), biases and PyTorch's default
    initialisation. Params: `up` (`[d, hidden]`), `down` (`[hidden, out]`).

    Attributes:
        hidden: the expanded width.
        out: the output width.
    """

    hidden: int
    out: int

    @nn.compact
    def __call__(self, u: Array) -> Array:
        up = torch_dense(self.hidden, u.shape[-1], "up")(u)
        return torch_dense(self.out, self.hidden, "down")(jax.nn.gelu(up, approximate=False))


class _Block(nn.Module):
    """What every block shares: its place in the stack and the options it runs under."""

    cell: Cell
    width: int
    conv_width: int = 4
    mlp_expansion: float = 0.0
    num_heads: int = 4
    dropout: float = 0.0
    options: recurrence.RecurrentOptions = recurrence.DEFAULT_OPTIONS
    index: int = 0
    num_blocks: int = 1

    def drop(self, xs: Array, train: bool) -> Array:
        if self.dropout == 0.0:
            return xs
        return nn.Dropout(self.dropout)(xs, deterministic=not train)

    def recur(
        self,
        cell: Cell,
        params: Params,
        xs: Array,
        lengths: Array | None,
        resets: Array | None,
        carry: Carry | None,
        train: bool,
        carry_deltas: list[Carry] | None = None,
        trace: bool = False,
    ) -> tuple[Carry, Array] | tuple[Carry, Array, list[Any]]:
        """One unidirectional layer of `rnnlab.recurrence` (recurrent dropout and zoneout from
        `options`, which need a `dropout` RNG when training).

        `carry_deltas` and `trace` are the diagnostics' view inside the block, as for a
        `RecurrentStack` of one layer (`rnnlab.diagnostics.gradflow`): a one-element list of
        carry perturbations, and with `trace` a third output, the one-element list of the
        layer's `Trace`."""
        options = self.options
        backend = recurrence.backend_of(cell, params, xs, options)
        if (self.index, repr(cell), backend) not in _LOGGED_BACKENDS:  # once per process
            _LOGGED_BACKENDS.add((self.index, repr(cell), backend))
            log.info("block_%d: %s", self.index, backend)
        stochastic = options.recurrent_dropout > 0 or options.zoneout > 0
        key = self.make_rng("dropout") if train and stochastic else None
        out = recurrence.run_layer(
            cell,
            params,
            xs,
            lengths=lengths,
            resets=resets,
            initial_carry=carry,
            options=options,
            key=key,
            carry_deltas=None if carry_deltas is None else carry_deltas[0],
            trace=trace,
        )
        if trace:
            carry, ys, layer_trace = out
            return carry, ys, [layer_trace]
        return out

    def conv(
        self,
        xs: Array,
        window: Array | None,
        lengths: Array | None,
        resets: Array | None,
        w_init: Any,
        b_init: Any,
    ) -> tuple[Array, Array | None]:
        channels = xs.shape[-1]
        w = self.param("conv_w", w_init, (self.conv_width, channels))
        b = self.param("conv_b", b_init, (channels,))
        return causal_conv(xs, w, b, window, lengths, resets)

    def expanded(self) -> int:
        return max(1, round(self.mlp_expansion * self.width))


def _split_carry(carry: dict[str, Any] | None) -> tuple[Array | None, Carry | None]:
    if carry is None:
        return None, None
    return carry.get("conv"), carry["cell"]


def _join_carry(window: Array | None, cell_carry: Carry) -> dict[str, Any]:
    return {"cell": cell_carry} if window is None else {"conv": window, "cell": cell_carry}


class HawkBlock(_Block):
    """Hawk's residual block (De et al. 2024, Figure 2; recurrentgemma's `ResidualBlock` with a
    `RecurrentBlock`). See the module docstring for the equations.

    With an `RGLRUCell` the recurrence is the paper's RG-LRU on the convolved branch `x`:
    `r = sigma(W_a x + b_a)`, `i = sigma(W_x x + b_x)` with block-diagonal `W_a`, `W_x`
    (`num_heads` blocks), `h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t)` (`HawkRGLRU`: the
    cell's `u` is `x` itself, no parameter and no matmul). Params: `rg_lru` =
    `{w_a, b_a, w_x, b_x, a_param}` (`w_*: [heads, n/heads, n/heads]`). Another cell gets
    `cell.init(key, lru_width)` under `cell`.
    """

    @nn.compact
    def __call__(
        self,
        x: Array,
        lengths: Array | None,
        resets: Array | None,
        carry: dict[str, Any] | None,
        train: bool,
    ) -> tuple[dict[str, Any], Array]:
        cell, d = self.cell, self.width
        lru = cell.hidden_size
        final_init = fan_in_normal(2.0 / self.num_blocks)  # Griffin: 2 / num_layers
        window, cell_carry = _split_carry(carry)
        normed = rms_norm(x, self.param("temporal_norm", nn.initializers.zeros, (d,)))
        gate = jax.nn.gelu(
            nn.Dense(cell.output_size, kernel_init=fan_in_normal(), name="linear_y")(normed)
        )
        branch = nn.Dense(lru, kernel_init=fan_in_normal(), name="linear_x")(normed)
        branch, window = self.conv(
            branch, window, lengths, resets, fan_in_normal(0.01), nn.initializers.zeros
        )
        if isinstance(cell, RGLRUCell):
            params = self.rg_lru_params(cell, lru)
            cell = as_block_cell(HawkRGLRU, cell)
        else:
            params = self.param("cell", cell.init, lru)
        cell_carry, ys = self.recur(cell, params, branch, lengths, resets, cell_carry, train)
        out = nn.Dense(d, kernel_init=final_init, name="linear_out")(ys * gate)
        x = x + self.drop(out, train)
        if self.mlp_expansion > 0:
            normed = rms_norm(x, self.param("channel_norm", nn.initializers.zeros, (d,)))
            mlp = GatedMLP(self.expanded(), d, down_init=final_init, name="mlp")
            x = x + self.drop(mlp(normed), train)
        return _join_carry(window, cell_carry), x

    def rg_lru_params(self, cell: RGLRUCell, lru: int) -> Params:
        """`HawkRGLRU`'s params: the block's RG-LRU (block-diagonal gates, `u = x`)."""
        heads = self.num_heads
        size = lru // heads

        def init(key: PRNGKey) -> Params:
            k_a, k_x, k_lambda = jax.random.split(key, 3)
            gate_init = fan_in_normal()
            return {
                "w_a": gate_init(k_a, (heads, size, size), jnp.float32),
                "b_a": jnp.zeros((lru,), jnp.float32),
                "w_x": gate_init(k_x, (heads, size, size), jnp.float32),
                "b_x": jnp.zeros((lru,), jnp.float32),
                "a_param": cell.init(k_lambda, lru)["a_param"],
            }

        p = self.param("rg_lru", init)
        return {"w_ih": projection_marker(lru, p["w_a"].dtype), **p}


class MLSTMBlock(_Block):
    """xLSTM's mLSTM block (Beck et al. 2024, Figure 10; the xLSTM code's `mLSTMLayer` inside
    `xLSTMBlock`). See the module docstring for the equations.

    The mLSTM (`BlockMLSTM`) reads `[c; u]` (convolved; plain): q, k from `c`, v from `u`
    (head-wise blocks of 4), the gates `i~ = w_i [q; k; v] + b_i` and `f~ = w_f [q; k; v] + b_f`,
    and an output gate held at `sigma(0) = 1/2` that the block undoes (times 2, exact): the
    block's output gate is `swish(z)`. Params: `proj_up`, `conv_w`/`conv_b`, `qkv` (`w_q, w_k, w_v:
    [inner/4, 4, 4]`), `gates` (`w_i, w_f: [heads, 3 inner]`, `b_i, b_f: [heads]`),
    `outnorm`, `skip`, `proj_down`, `norm`.
    """

    @nn.compact
    def __call__(
        self,
        x: Array,
        lengths: Array | None,
        resets: Array | None,
        carry: dict[str, Any] | None,
        train: bool,
    ) -> tuple[dict[str, Any], Array]:
        cell, d = self.cell, self.width
        inner, heads = cell.hidden_size, cell.num_heads
        window, cell_carry = _split_carry(carry)
        normed = layer_norm(x, self.param("norm", nn.initializers.zeros, (d,)))
        up = nn.Dense(2 * inner, use_bias=False, kernel_init=small_init(d), name="proj_up")(normed)
        u, z = up[..., :inner], up[..., inner:]
        conv_init = torch_init(self.conv_width)
        c, window = self.conv(u, window, lengths, resets, conv_init, conv_init)
        c = jax.nn.silu(c)
        cell_carry, h = self.recur(
            as_block_cell(BlockMLSTM, cell), self.cell_params(cell, d),
            jnp.concatenate([c, u], -1), lengths, resets, cell_carry, train,
        )  # fmt: skip
        h = head_norm(2.0 * h, self.param("outnorm", nn.initializers.zeros, (inner,)), heads)
        skip = self.param("skip", nn.initializers.ones, (inner,))
        h = (h + along_last(skip, c) * c) * jax.nn.silu(z)
        out = nn.Dense(
            d, use_bias=False, kernel_init=wang_init(d, self.num_blocks), name="proj_down"
        )(h)
        x = x + self.drop(out, train)
        if self.mlp_expansion > 0:
            x = x + self.drop(xlstm_mlp(self, x), train)
        return _join_carry(window, cell_carry), x

    def cell_params(self, cell: MLSTMCell, d: int) -> Params:
        inner, heads = cell.hidden_size, cell.num_heads
        blocks = inner // QKV_BLOCK_SIZE
        shape = (blocks, QKV_BLOCK_SIZE, QKV_BLOCK_SIZE)

        def qkv_init(key: PRNGKey) -> Params:
            keys = jax.random.split(key, 3)
            init = small_init(d)  # xLSTM: the embedding width, not the inner one
            return {name: init(k, shape, jnp.float32) for name, k in zip("qkv", keys, strict=True)}

        def gates_init(key: PRNGKey) -> Params:
            low, high = cell.forget_bias_range
            return {
                "w_i": jnp.zeros((heads, 3 * inner), jnp.float32),
                "b_i": 0.1 * jax.random.normal(key, (heads,), jnp.float32),
                "w_f": jnp.zeros((heads, 3 * inner), jnp.float32),
                "b_f": jnp.linspace(low, high, heads, dtype=jnp.float32),
            }

        qkv = self.param("qkv", qkv_init)
        gates = self.param("gates", gates_init)
        return {"w_ih": projection_marker(2 * inner, qkv["q"].dtype), "qkv": qkv, "gates": gates}


class SLSTMBlock(_Block):
    """xLSTM's sLSTM block (Beck et al. 2024, Figure 9; the xLSTM code's `sLSTMLayer` inside
    `xLSTMBlock` with its gated feed-forward). See the module docstring for the equations.

    The sLSTM (`BlockSLSTM`) reads `[c; n]` (convolved; normed input): i and f from `c`, z and o
    from `n` (head-wise, the cell's `num_heads` blocks, no bias); its block-diagonal recurrent
    matrices are the cell's own (`r`, or `w_hh` for one head), zeros at first as xLSTM's
    `recurrent_weight_init="zeros"`; its `b` the cell's bias (forget gate: `slstm_forget_bias`).
    Params: `norm`, `conv_w`/`conv_b`, `proj` (`i, f, z, o: [heads, d_h, d_h]`, `x @ W`
    oriented), `recurrent` (`[4, heads, d_h, d_h]`, each block `[out, in]` as the cell's `r`),
    `bias` (`[4 d]`), `group_norm`, `ffn_norm`, `mlp`.
    """

    @nn.compact
    def __call__(
        self,
        x: Array,
        lengths: Array | None,
        resets: Array | None,
        carry: dict[str, Any] | None,
        train: bool,
    ) -> tuple[dict[str, Any], Array]:
        cell, d = self.cell, self.width
        heads = cell.num_heads
        window, cell_carry = _split_carry(carry)
        normed = layer_norm(x, self.param("norm", nn.initializers.zeros, (d,)))
        conv_init = torch_init(self.conv_width)
        c, window = self.conv(normed, window, lengths, resets, conv_init, conv_init)
        c = jax.nn.silu(c)
        cell_carry, h = self.recur(
            as_block_cell(BlockSLSTM, cell), self.cell_params(cell, d),
            jnp.concatenate([c, normed], -1), lengths, resets, cell_carry, train,
        )  # fmt: skip
        h = head_norm(h, self.param("group_norm", nn.initializers.zeros, (d,)), heads)
        x = x + self.drop(h, train)
        if self.mlp_expansion > 0:
            x = x + self.drop(xlstm_mlp(self, x), train)
        return _join_carry(window, cell_carry), x

    def cell_params(self, cell: SLSTMCell, d: int) -> Params:
        heads = cell.num_heads
        size = d // heads

        def proj_init(key: PRNGKey) -> Params:
            init = small_init(d)
            keys = jax.random.split(key, 4)
            return {
                g: init(k, (heads, size, size), jnp.float32)
                for g, k in zip("ifzo", keys, strict=True)
            }

        def bias_init(key: PRNGKey) -> Array:
            forget = jnp.tile(slstm_forget_bias(size, self.index, self.num_blocks), heads)
            zeros = jnp.zeros((d,), jnp.float32)
            return jnp.concatenate([zeros, forget, zeros, zeros])

        proj = self.param("proj", proj_init)
        recurrent = self.param("recurrent", nn.initializers.zeros, (4, heads, size, size))
        bias = self.param("bias", bias_init)
        params = {"w_ih": projection_marker(2 * d, proj["i"].dtype), "proj": proj, "b": bias}
        if cell.recurrent_matrix:  # one head: the layer's dense recurrent matrix, gate-major rows
            params["w_hh"] = recurrent.reshape(4 * d, d)
        else:  # the cell's block-diagonal heads, `r: [4, heads, out, in]`
            params["r"] = recurrent
        return params


def xlstm_mlp(block: _Block, x: Array) -> Array:
    """The xLSTM block's feed-forward branch: `MLP(LN(x))`, exact GeLU, no biases."""
    d = block.width
    normed = layer_norm(x, block.param("ffn_norm", nn.initializers.zeros, (d,)))
    mlp = GatedMLP(
        block.expanded(),
        d,
        exact_gelu=True,
        use_bias=False,
        up_init=small_init(d),
        down_init=wang_init(d, block.num_blocks),
        parent=block,
        name="mlp",
    )
    return mlp(normed)


class PreNormBlock(_Block):
    """The generic pre-norm residual block: `x + W_out(cell(RMSNorm(x)))`, then
    `x + MLP(RMSNorm(x))` (how minGRU/minLSTM, Feng et al. 2024, and the LRU, Orvieto et al.
    2023, are stacked). Params: `norm`, `cell` (`cell.init(key, width)`), `out`,
    `channel_norm`, `mlp`. No convolution."""

    @nn.compact
    def __call__(
        self,
        x: Array,
        lengths: Array | None,
        resets: Array | None,
        carry: dict[str, Any] | None,
        train: bool,
    ) -> tuple[dict[str, Any], Array]:
        d = self.width
        _, cell_carry = _split_carry(carry)
        normed = rms_norm(x, self.param("norm", nn.initializers.zeros, (d,)))
        params = self.param("cell", self.cell.init, d)
        cell_carry, ys = self.recur(self.cell, params, normed, lengths, resets, cell_carry, train)
        x = x + self.drop(nn.Dense(d, name="out")(ys), train)
        if self.mlp_expansion > 0:
            normed = rms_norm(x, self.param("channel_norm", nn.initializers.zeros, (d,)))
            x = x + self.drop(GatedMLP(self.expanded(), d, name="mlp")(normed), train)
        return _join_carry(None, cell_carry), x


class MinRNNBlock(_Block):
    """Feng et al.'s residual block (BorealisAI/minRNNs `models/model.py`, one layer of `Model`)
    for any cell. See the module docstring for the equations and the differences.

    The convolution's window travels in the carry as Hawk's does (`causal_conv`), so pieces of a
    sequence, or tokens one by one, equal one run. Params: `conv_w` (`[k, width]`), `conv_b`
    and `pointwise` (only when `conv_width > 1`), `norm`, `cell` (`cell.init(key, width)`),
    `out` (`[cell.output_size, width]`), `channel_norm`, `mlp` (`FeedForward`).
    """

    @nn.compact
    def __call__(
        self,
        x: Array,
        lengths: Array | None,
        resets: Array | None,
        carry: dict[str, Any] | None,
        train: bool,
    ) -> tuple[dict[str, Any], Array]:
        cell, d = self.cell, self.width
        window, cell_carry = _split_carry(carry)
        if self.conv_width > 1:
            conv_init = torch_init(self.conv_width)  # depthwise: the fan-in is the taps
            c, window = self.conv(x, window, lengths, resets, conv_init, conv_init)
            x = x + torch_dense(d, d, "pointwise")(c)
        normed = rms_norm(x, self.param("norm", nn.initializers.zeros, (d,)))
        params = self.param("cell", cell.init, d)
        cell_carry, ys = self.recur(cell, params, normed, lengths, resets, cell_carry, train)
        x = x + torch_dense(d, cell.output_size, "out")(ys)
        if self.mlp_expansion > 0:
            normed = rms_norm(x, self.param("channel_norm", nn.initializers.zeros, (d,)))
            x = x + self.drop(FeedForward(self.expanded(), d, name="mlp")(normed), train)
        return _join_carry(window, cell_carry), x


BLOCKS: dict[str, type[_Block]] = {
    "hawk": HawkBlock,
    "mlstm": MLSTMBlock,
    "slstm": SLSTMBlock,
    "prenorm": PreNormBlock,
    "minrnn": MinRNNBlock,
}


class BlockStack(nn.Module):
    """`num_blocks` residual blocks of a kind (`BLOCK_KINDS`), a final norm, zeros at padding.

    The same call signature and carries-per-layer contract as `rnnlab.nn.RecurrentStack`
    (`(xs, lengths, resets, initial_carry, train) -> (carries, ys)`, `zero_carry`), so every
    model that builds its stack with `Backbone.make_stack` takes blocks unchanged.

    Attributes:
        cell: the recurrence inside the blocks (see the module docstring per kind).
        block: one of `BLOCK_KINDS` but "none".
        num_blocks: blocks in the stack.
        width: the residual stream's width (`Backbone.embed_dim`).
        conv_width: taps of the causal convolution (4 in Hawk's and xLSTM's papers; 1: a
            per-unit scale, or for minrnn no convolution).
        mlp_expansion: the MLP's width over `width`; None: the paper's (`MLP_EXPANSION`);
            0: no MLP.
        num_heads: block-diagonal heads of the RG-LRU's gates (hawk) and of the sLSTM blocks
            of an xLSTM mix (`block="slstm"` takes its cell's `num_heads`).
        slstm_at: indices of the sLSTM blocks when `block="xlstm"`.
        dropout: rate on every residual branch before its addition.
        options: the recurrence options every block's layer runs under.
    """

    cell: Cell
    block: str = "hawk"
    num_blocks: int = 1
    width: int = 64
    conv_width: int = 4
    mlp_expansion: float | None = None
    num_heads: int = 4
    slstm_at: tuple[int, ...] = ()
    dropout: float = 0.0
    options: recurrence.RecurrentOptions = recurrence.DEFAULT_OPTIONS

    def __post_init__(self) -> None:
        check_blocks(
            "BlockStack",
            block=self.block,
            cell=self.cell,
            width=self.width,
            num_blocks=self.num_blocks,
            conv_width=self.conv_width,
            mlp_expansion=self.mlp_expansion,
            num_heads=self.num_heads,
            slstm_at=tuple(self.slstm_at),
        )
        if self.block == "none":
            raise ValueError("BlockStack.block='none' is the plain stack: use RecurrentStack")
        super().__post_init__()

    @property
    def kinds(self) -> tuple[str, ...]:
        return block_kinds(self.block, self.num_blocks, tuple(self.slstm_at))

    @property
    def output_size(self) -> int:
        return self.width

    def block_cell(self, kind: str) -> Cell:
        """The cell a block of `kind` runs (the sLSTM blocks of an xLSTM mix their own:
        `SLSTMCell(width, num_heads)`)."""
        if kind == "slstm" and not isinstance(self.cell, SLSTMCell):
            return SLSTMCell(self.width, num_heads=self.num_heads)
        return self.cell

    def zero_carry(self, batch_size: int, dtype: Any = None) -> list[Carry]:
        """Zero carries, one per block: `{"conv": [b, k-1, c], "cell": ...}`."""
        dtype = jnp.float32 if dtype is None else dtype
        carries = []
        for kind in self.kinds:
            cell = self.block_cell(kind)
            channels = conv_channels(kind, cell, self.width)
            window = None
            if channels and self.conv_width > 1:
                window = jnp.zeros((batch_size, self.conv_width - 1, channels), dtype)
            carries.append(_join_carry(window, cell.initial_carry(batch_size, dtype)))
        return carries

    @nn.compact
    def __call__(
        self,
        xs: Array,
        lengths: Array | None = None,
        resets: Array | None = None,
        initial_carry: list[Carry] | None = None,
        train: bool = False,
    ) -> tuple[list[Carry], Array]:
        """`xs: [b, t, d]` -> (final carries per block, `ys: [b, t, width]`, zero at padding).

        With `train=True` and `dropout`, `recurrent_dropout` or `zoneout` > 0 the module needs a
        `dropout` RNG."""
        if xs.shape[-1] != self.width:
            xs = nn.Dense(self.width, name="input_projection")(xs)
        if resets is not None:
            resets = resets.astype(bool)
        carries = []
        for index, kind in enumerate(self.kinds):
            expansion = self.mlp_expansion
            if expansion is None:
                expansion = MLP_EXPANSION[kind]
            block = BLOCKS[kind](
                cell=self.block_cell(kind),
                width=self.width,
                conv_width=self.conv_width,
                mlp_expansion=float(expansion),
                num_heads=self.num_heads,
                dropout=self.dropout,
                options=self.options,
                index=index,
                num_blocks=self.num_blocks,
                name=f"block_{index}",
            )
            carry = None if initial_carry is None else initial_carry[index]
            carry, xs = block(xs, lengths, resets, carry, train)
            carries.append(carry)
        scale = self.param("final_norm", nn.initializers.zeros, (self.width,))
        if self.block in XLSTM_KINDS:
            xs = layer_norm(xs, scale)
        else:
            xs = rms_norm(xs, scale)
        return carries, mask_steps(xs, lengths)
