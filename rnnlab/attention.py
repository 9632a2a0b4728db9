"""Attention over RNN states as pure JAX functions: masks, scores, cross/self attention, pooling.

No Flax here. Parameters are plain dicts of arrays made by the `init_*` functions, weight matrices
in PyTorch's `[out, in]` layout (as the cells), so `x @ w.T` is a linear layer and the multi-head
parameters copy to and from `torch.nn.MultiheadAttention` without transposes.

Shapes (see `rnnlab.typing`): `b` batch, `q` query time, `s` source (key) time, `t` time,
`d*` feature sizes, `a` attention size, `n` heads. Every function also accepts any number of
leading batch axes in place of `[b]` (including none), so calling it on one example under
`jax.vmap` gives the same result as calling it on the batch.

Masks are boolean with `True` = valid. Padded keys receive exactly zero weight; a row whose keys
are all padded gets all-zero weights (and so a zero context) rather than NaN, with finite
gradients. Nothing here loops over time in Python; everything is `jit`-able with the string
`kind` arguments, `num_heads` and `causal` static.

Initialisation (documented once, used throughout): weight matrices `glorot_uniform` (Glorot &
Bengio 2010; on the fused `[3m, d]` `w_qkv` exactly as PyTorch's `xavier_uniform_` on
`in_proj_weight`), biases zeros, and the learned score vectors (`v` of additive attention, the
context vector `u` of attention pooling) `normal(stddev=0.1)`: small, so initial attention is
close to uniform, yet non-zero, so the score has a gradient with respect to the projections.

References:
    Bahdanau, Cho & Bengio (2015), Neural Machine Translation by Jointly Learning to Align and
    Translate. Luong, Pham & Manning (2015), Effective Approaches to Attention-based Neural Machine
    Translation. Vaswani et al. (2017), Attention Is All You Need. Yang et al. (2016), Hierarchical
    Attention Networks for Document Classification. Lin et al. (2017), A Structured Self-attentive
    Sentence Embedding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from rnnlab.typing import Array, Params, PRNGKey

_matrix_init = jax.nn.initializers.glorot_uniform()
_vector_init = jax.nn.initializers.normal(stddev=0.1)

CROSS_ATTENTION_KINDS = ("additive", "dot", "scaled_dot", "general")
POOLING_KINDS = ("last", "mean", "max", "attention")


def _unknown(what: str, kind: str, known: tuple[str, ...]) -> ValueError:
    return ValueError(f"unknown {what} kind {kind!r}; choose one of {list(known)}")


def _linear(w: Array, b: Array | None, x: Array) -> Array:
    """`x @ w.T + b` for `w: [out, in]`, `x: [..., in]`."""
    y = jnp.einsum("...i,oi->...o", x, w)
    return y if b is None else y + jnp.reshape(b, (1,) * (y.ndim - 1) + b.shape)


# --------------------------------------------------------------------------------------- masks


def lengths_to_mask(lengths: Array, max_len: int) -> Array:
    """Boolean validity mask from sequence lengths.

    Args:
        lengths: `[b]` integer lengths (any leading shape `[...]`).
        max_len: the padded time length `t` (static).

    Returns:
        `[b, t]` bool, `mask[i, j] = j < lengths[i]`.

    Example:
        >>> lengths_to_mask(jnp.array([2, 0]), 3).tolist()
        [[True, True, False], [False, False, False]]
    """
    steps = jnp.arange(max_len).reshape((1,) * jnp.ndim(lengths) + (max_len,))
    return steps < jnp.expand_dims(lengths, -1)


def masked_softmax(scores: Array, mask: Array | None = None) -> Array:
    """Softmax over the last axis that ignores masked positions.

    `weights_j = mask_j exp(e_j) / sum_k mask_k exp(e_k)`. Masked scores are replaced by the most
    negative finite value of the dtype before the softmax (not `-inf`, whose `inf - inf` in the
    max-subtraction would give NaN for a fully masked row), and masked weights are then set to
    exactly zero. A fully masked row therefore returns zeros, and since both steps are `where`s
    the gradient never flows into masked scores: no NaN forward or backward.

    Args:
        scores: `[..., s]` floating scores.
        mask: `[..., s]` bool, `True` = valid; same rank as `scores` (size-1 axes broadcast).
            `None` means all valid.

    Returns:
        `[..., s]` weights, summing to 1 over valid positions (0 for a fully masked row).
    """
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    safe_scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    return jnp.where(mask, jax.nn.softmax(safe_scores, axis=-1), 0.0)


# ------------------------------------------------------------------------------ score functions


def init_additive(key: PRNGKey, query_size: int, key_size: int, attention_size: int) -> Params:
    """Parameters of additive (Bahdanau) attention.

    Returns:
        `{"w_q": [a, dq], "w_k": [a, dk], "b": [a], "v": [a]}`.
    """
    key_q, key_k, key_v = jax.random.split(key, 3)
    return {
        "w_q": _matrix_init(key_q, (attention_size, query_size), jnp.float32),
        "w_k": _matrix_init(key_k, (attention_size, key_size), jnp.float32),
        "b": jnp.zeros((attention_size,), jnp.float32),
        "v": _vector_init(key_v, (attention_size,), jnp.float32),
    }


def additive_scores(params: Params, queries: Array, keys: Array) -> Array:
    """Additive ("concat") scores (Bahdanau, Cho & Bengio 2015; Luong et al. 2015's `concat`).

    `e_ij = v^T tanh(W_q q_i + W_k k_j + b)`.

    The key projection `W_k k` is computed once for all queries (in decoding, the encoder states
    are projected once per sequence). The `[b, q, s, a]` tanh argument is inherent to the
    additive form and is materialised.

    Args:
        params: from `init_additive`.
        queries: `[b, q, dq]`.
        keys: `[b, s, dk]`.

    Returns:
        `[b, q, s]` scores.
    """
    projected_queries = _linear(params["w_q"], params["b"], queries)  # [b, q, a]
    projected_keys = _linear(params["w_k"], None, keys)  # [b, s, a]
    hidden = jnp.tanh(
        jnp.expand_dims(projected_queries, -2) + jnp.expand_dims(projected_keys, -3)
    )  # [b, q, s, a]
    return jnp.einsum("...qsa,a->...qs", hidden, params["v"])


def dot_scores(queries: Array, keys: Array, scaled: bool = False) -> Array:
    """Dot-product scores (Luong et al. 2015's `dot`; scaled as Vaswani et al. 2017).

    `e_ij = q_i . k_j`, divided by `sqrt(d)` when `scaled`.

    Args:
        queries: `[b, q, d]`.
        keys: `[b, s, d]` (same feature size as the queries).
        scaled: divide by `sqrt(d)`, keeping the score variance ~1 for unit-variance inputs.

    Returns:
        `[b, q, s]` scores.

    Raises:
        ValueError: if queries and keys have different feature sizes.
    """
    if queries.shape[-1] != keys.shape[-1]:
        raise ValueError(
            f"dot scores need equal query and key sizes, got {queries.shape[-1]} and "
            f"{keys.shape[-1]}; use 'general' or 'additive' attention instead"
        )
    scores = jnp.einsum("...qd,...sd->...qs", queries, keys)
    return scores / math.sqrt(queries.shape[-1]) if scaled else scores


def init_general(key: PRNGKey, query_size: int, key_size: int) -> Params:
    """Parameters of general (bilinear) attention.

    Returns:
        `{"w": [dq, dk]}`.
    """
    return {"w": _matrix_init(key, (query_size, key_size), jnp.float32)}


def general_scores(params: Params, queries: Array, keys: Array) -> Array:
    """General (bilinear) scores (Luong, Pham & Manning 2015).

    `e_ij = q_i^T W k_j`.

    Args:
        params: from `init_general`.
        queries: `[b, q, dq]`.
        keys: `[b, s, dk]`.

    Returns:
        `[b, q, s]` scores.
    """
    # Project the queries (q rows), not the keys: in decoding q is usually 1 while s is long.
    projected_queries = jnp.einsum("...qi,ij->...qj", queries, params["w"])
    return jnp.einsum("...qj,...sj->...qs", projected_queries, keys)


# ------------------------------------------------------------------------------ cross attention


def attend(scores: Array, values: Array, key_mask: Array | None = None) -> tuple[Array, Array]:
    """Masked softmax over keys, then the weighted sum of values.

    `a_ij = softmax_j(e_ij)` over valid `j`; `c_i = sum_j a_ij v_j`.

    Args:
        scores: `[b, q, s]`.
        values: `[b, s, dv]`.
        key_mask: `[b, s]` bool, `True` = valid key; `None` means all valid.

    Returns:
        `(context [b, q, dv], weights [b, q, s])`; a query with no valid key gets zeros.
    """
    mask = None if key_mask is None else jnp.expand_dims(key_mask, -2)
    weights = masked_softmax(scores, mask)
    context = jnp.einsum("...qs,...sv->...qv", weights, values)
    return context, weights


def _init_dot(key: PRNGKey, query_size: int, key_size: int, attention_size: int | None) -> Params:
    """The dot kinds have no parameters; check the sizes early, at init time."""
    if query_size != key_size:
        raise ValueError(
            f"dot attention needs query_size == key_size, got {query_size} and {key_size}"
        )
    return {}


_CROSS_INITS: dict[str, Callable[..., Params]] = {
    "additive": lambda key, dq, dk, a: init_additive(key, dq, dk, a),
    "dot": _init_dot,
    "scaled_dot": _init_dot,
    "general": lambda key, dq, dk, a: init_general(key, dq, dk),
}

_CROSS_SCORES: dict[str, Callable[[Params, Array, Array], Array]] = {
    "additive": additive_scores,
    "dot": lambda params, queries, keys: dot_scores(queries, keys, scaled=False),
    "scaled_dot": lambda params, queries, keys: dot_scores(queries, keys, scaled=True),
    "general": general_scores,
}


def init_cross_attention(
    kind: str,
    key: PRNGKey,
    query_size: int,
    key_size: int,
    attention_size: int | None = None,
) -> Params:
    """Parameters for `cross_attention(kind, ...)`.

    Args:
        kind: one of `CROSS_ATTENTION_KINDS` ("additive", "dot", "scaled_dot", "general").
        key: PRNG key.
        query_size: `dq`.
        key_size: `dk`.
        attention_size: `a`, the hidden size of additive attention (required there, unused
            otherwise).

    Returns:
        `init_additive(...)`, `init_general(...)`, or `{}` for the parameter-free dot kinds.

    Raises:
        ValueError: unknown kind, additive without `attention_size`, or dot kinds with
            `query_size != key_size`.
    """
    if kind not in _CROSS_INITS:
        raise _unknown("cross-attention", kind, CROSS_ATTENTION_KINDS)
    if kind == "additive" and attention_size is None:
        raise ValueError("additive attention needs attention_size")
    return _CROSS_INITS[kind](key, query_size, key_size, attention_size)


def cross_attention(
    kind: str,
    params: Params,
    queries: Array,
    keys: Array,
    values: Array,
    key_lengths: Array | None = None,
) -> tuple[Array, Array]:
    """Attention of queries (e.g. decoder states) over keys/values (e.g. encoder states).

    `e = score_kind(q, k)`, `a = masked_softmax(e)` over the first `key_lengths` keys,
    `c_i = sum_j a_ij v_j`. In RNN encoder-decoders `keys` and `values` are usually the same
    encoder states (Bahdanau et al. 2015; Luong et al. 2015).

    Args:
        kind: one of `CROSS_ATTENTION_KINDS`; static under `jit`.
        params: from `init_cross_attention(kind, ...)`.
        queries: `[b, q, dq]`.
        keys: `[b, s, dk]`.
        values: `[b, s, dv]`.
        key_lengths: `[b]` number of valid keys per example; `None` means all `s` valid.

    Returns:
        `(context [b, q, dv], weights [b, q, s])`, weights exactly 0 on padded keys.

    Raises:
        ValueError: unknown kind.
    """
    if kind not in _CROSS_SCORES:
        raise _unknown("cross-attention", kind, CROSS_ATTENTION_KINDS)
    scores = _CROSS_SCORES[kind](params, queries, keys)
    key_mask = None if key_lengths is None else lengths_to_mask(key_lengths, keys.shape[-2])
    return attend(scores, values, key_mask)


# ------------------------------------------------------------------------------- self attention


def init_multi_head(key: PRNGKey, input_size: int, model_size: int, num_heads: int) -> Params:
    """Parameters of multi-head self-attention, in `torch.nn.MultiheadAttention`'s layout.

    Args:
        key: PRNG key.
        input_size: `d`.
        model_size: `m`, the total width over heads (each head has `m / num_heads`).
        num_heads: `n`.

    Returns:
        `{"w_qkv": [3m, d], "b_qkv": [3m], "w_o": [m, m], "b_o": [m]}` with the fused rows in
        q, k, v order (torch's `in_proj_weight`, `in_proj_bias`, `out_proj.weight`,
        `out_proj.bias` when `d == m`).

    Raises:
        ValueError: if `model_size` is not divisible by `num_heads`.
    """
    _head_size(model_size, num_heads)
    key_qkv, key_o = jax.random.split(key)
    return {
        "w_qkv": _matrix_init(key_qkv, (3 * model_size, input_size), jnp.float32),
        "b_qkv": jnp.zeros((3 * model_size,), jnp.float32),
        "w_o": _matrix_init(key_o, (model_size, model_size), jnp.float32),
        "b_o": jnp.zeros((model_size,), jnp.float32),
    }


def _head_size(model_size: int, num_heads: int) -> int:
    if num_heads < 1 or model_size % num_heads:
        raise ValueError(f"model_size ({model_size}) must be divisible by num_heads ({num_heads})")
    return model_size // num_heads


def multi_head_self_attention(
    params: Params,
    xs: Array,
    lengths: Array | None = None,
    num_heads: int = 1,
    causal: bool = False,
) -> tuple[Array, Array]:
    """Scaled dot-product multi-head self-attention (Vaswani et al. 2017).

    For each head `h`: `Q_h, K_h, V_h = X W_q^h + b, X W_k^h + b, X W_v^h + b`,
    `A_h = masked_softmax(Q_h K_h^T / sqrt(d_head))`, `H_h = A_h V_h`; then
    `Y = concat_h(H_h) W_o^T + b_o`. Keys at or beyond an example's length are masked; with
    `causal`, query `i` also sees only keys `j <= i`. Padded query rows (`i >= length`) give
    zero outputs and zero weights.

    Args:
        params: from `init_multi_head`.
        xs: `[b, t, d]`.
        lengths: `[b]` valid steps per example; `None` means all `t` valid.
        num_heads: `n` (static); must divide the model size.
        causal: mask future keys (static).

    Returns:
        `(outputs [b, t, m], weights [b, n, t, t])`.

    Raises:
        ValueError: if the model size is not divisible by `num_heads`.
    """
    model_size = params["w_o"].shape[0]
    head_size = _head_size(model_size, num_heads)
    time = xs.shape[-2]
    batch_shape = xs.shape[:-2]
    rank = len(batch_shape)

    qkv = _linear(params["w_qkv"], params["b_qkv"], xs)  # [b, t, 3m]
    qkv = qkv.reshape(batch_shape + (time, 3, num_heads, head_size))
    q, k, v = (qkv[..., i, :, :] for i in range(3))  # each [b, t, n, e]

    mask = jnp.ones((1,) * rank + (1, time, time), bool)
    if causal:
        mask = mask & jnp.tril(jnp.ones((time, time), bool)).reshape(mask.shape)
    if lengths is not None:
        valid = lengths_to_mask(lengths, time)  # [b, t]
        mask = mask & valid[..., None, None, :] & valid[..., None, :, None]
    # The library op takes one batch axis: flatten any number of them (none under vmap).
    flat = [x.reshape((-1, time, num_heads, head_size)) for x in (q, k, v)]
    flat_mask = mask.reshape((-1, 1, time, time))
    heads = jax.nn.dot_product_attention(*flat, mask=flat_mask).reshape(q.shape)
    # `dot_product_attention` does not return its weights, which are part of this function's
    # result (models sow them for `rnnlab.diagnostics`): the same softmax once more, explicitly.
    # It is dead code that XLA removes wherever a caller ignores the weights (training).
    # `masked_softmax` gives a fully masked (padded) query row zero weights; the library op
    # averages it uniformly, but those rows' outputs are zeroed below either way.
    scores = jnp.einsum("...qne,...sne->...nqs", q, k) / math.sqrt(head_size)
    weights = masked_softmax(scores, mask)  # [b, n, t, t]
    outputs = _linear(params["w_o"], params["b_o"], heads.reshape(batch_shape + (time, -1)))
    if lengths is not None:
        outputs = jnp.where(valid[..., None], outputs, 0.0)
    return outputs, weights


# ------------------------------------------------------------------------------------- pooling


def _valid_mask(xs: Array, lengths: Array | None) -> Array | None:
    return None if lengths is None else lengths_to_mask(lengths, xs.shape[-2])


def init_attention_pooling(key: PRNGKey, input_size: int, attention_size: int) -> Params:
    """Parameters of attention pooling.

    Returns:
        `{"w": [a, d], "b": [a], "u": [a]}`; `u` is the learned context vector.
    """
    key_w, key_u = jax.random.split(key)
    return {
        "w": _matrix_init(key_w, (attention_size, input_size), jnp.float32),
        "b": jnp.zeros((attention_size,), jnp.float32),
        "u": _vector_init(key_u, (attention_size,), jnp.float32),
    }


def attention_pooling(
    params: Params, xs: Array, lengths: Array | None = None
) -> tuple[Array, Array]:
    """Attention pooling of a sequence into one vector (Yang et al. 2016; Lin et al. 2017).

    `u_t = tanh(W x_t + b)`, `a_t = softmax_t(u_t . u_w)` over valid steps,
    `pooled = sum_t a_t x_t`, with `u_w` a learned context vector ("what is informative").
    Lin et al. (2017) use the same form with several context vectors (`r` hops).

    Args:
        params: from `init_attention_pooling`.
        xs: `[b, t, d]` (e.g. RNN outputs).
        lengths: `[b]` valid steps; `None` means all valid.

    Returns:
        `(pooled [b, d], weights [b, t])`; an empty sequence pools to zeros.
    """
    hidden = jnp.tanh(_linear(params["w"], params["b"], xs))  # [b, t, a]
    scores = jnp.einsum("...ta,a->...t", hidden, params["u"])
    weights = masked_softmax(scores, _valid_mask(xs, lengths))
    return jnp.einsum("...t,...td->...d", weights, xs), weights


def mean_pooling(xs: Array, lengths: Array | None = None) -> Array:
    """Mean over valid steps: `sum_{t < len} x_t / len` (zeros for an empty sequence).

    Args:
        xs: `[b, t, d]`.
        lengths: `[b]` valid steps; `None` means all valid.

    Returns:
        `[b, d]`.
    """
    if lengths is None:
        return jnp.mean(xs, axis=-2)
    mask = _valid_mask(xs, lengths)
    total = jnp.sum(jnp.where(mask[..., None], xs, 0.0), axis=-2)
    count = jnp.maximum(lengths, 1).astype(xs.dtype)
    return total / count[..., None]


def max_pooling(xs: Array, lengths: Array | None = None) -> Array:
    """Elementwise max over valid steps; padded steps never win (zeros for an empty sequence).

    Args:
        xs: `[b, t, d]`.
        lengths: `[b]` valid steps; `None` means all valid.

    Returns:
        `[b, d]`.
    """
    if lengths is None:
        return jnp.max(xs, axis=-2)
    mask = _valid_mask(xs, lengths)[..., None]  # [b, t, 1]
    pooled = jnp.max(jnp.where(mask, xs, jnp.finfo(xs.dtype).min), axis=-2)
    return jnp.where((lengths > 0)[..., None], pooled, 0.0)


def last_pooling(xs: Array, lengths: Array | None = None) -> Array:
    """Each sequence's output at its own last valid step, `x_{len - 1}`.

    The usual unidirectional-RNN summary: with padding, `xs[:, -1]` would be a padded step.
    An empty sequence gives zeros.

    Args:
        xs: `[b, t, d]`.
        lengths: `[b]` valid steps; `None` means the last step `t - 1`.

    Returns:
        `[b, d]`.
    """
    if lengths is None:
        return xs[..., -1, :]
    index = jnp.clip(lengths - 1, 0, xs.shape[-2] - 1)[..., None, None]  # [b, 1, 1]
    last = jnp.take_along_axis(xs, index, axis=-2)[..., 0, :]
    return jnp.where((lengths > 0)[..., None], last, 0.0)


def init_pooling(
    kind: str, key: PRNGKey, input_size: int, attention_size: int | None = None
) -> Params:
    """Parameters for `pool(kind, ...)`: `init_attention_pooling(...)` or `{}`.

    Args:
        kind: one of `POOLING_KINDS` ("last", "mean", "max", "attention").
        key: PRNG key.
        input_size: `d`.
        attention_size: `a` for attention pooling (required there, unused otherwise).

    Raises:
        ValueError: unknown kind, or attention pooling without `attention_size`.
    """
    if kind not in POOLING_KINDS:
        raise _unknown("pooling", kind, POOLING_KINDS)
    if kind != "attention":
        return {}
    if attention_size is None:
        raise ValueError("attention pooling needs attention_size")
    return init_attention_pooling(key, input_size, attention_size)


_POOLS: dict[str, Callable[[Array, Array | None], Array]] = {
    "last": last_pooling,
    "mean": mean_pooling,
    "max": max_pooling,
}


def pool(
    kind: str, params: Params, xs: Array, lengths: Array | None = None
) -> tuple[Array, Array | None]:
    """Sequence-to-vector pooling, one entry point for all kinds.

    Args:
        kind: one of `POOLING_KINDS`; static under `jit`.
        params: from `init_pooling(kind, ...)` (`{}` for the parameter-free kinds).
        xs: `[b, t, d]`.
        lengths: `[b]` valid steps; `None` means all valid.

    Returns:
        `(pooled [b, d], weights [b, t] for "attention", else None)`.

    Raises:
        ValueError: unknown kind.
    """
    if kind == "attention":
        return attention_pooling(params, xs, lengths)
    if kind not in _POOLS:
        raise _unknown("pooling", kind, POOLING_KINDS)
    return _POOLS[kind](xs, lengths), None
