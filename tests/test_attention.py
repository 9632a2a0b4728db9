"""Tests for `rnnlab.attention`: masking, padding invariance, known answers, jit/vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab import attention as att

B, S, Q, D, A = 2, 5, 3, 4, 6
LENGTHS = jnp.array([5, 3])
PAD_VALUE = 1e4  # padded positions hold large garbage: it must never leak into results


def _normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


def _pad_garbage(xs: jax.Array, lengths: jax.Array) -> jax.Array:
    mask = att.lengths_to_mask(lengths, xs.shape[-2])[..., None]
    return jnp.where(mask, xs, PAD_VALUE)


def _perturbed(params: dict, seed: int) -> dict:
    """Random non-zero values for every leaf (biases are initialised to zero)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    leaves = [
        0.5 * jax.random.normal(k, leaf.shape, leaf.dtype)
        for k, leaf in zip(keys, leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


@pytest.fixture
def cross_inputs():
    queries = _normal(0, (B, Q, D))
    keys = _pad_garbage(_normal(1, (B, S, D)), LENGTHS)
    values = _pad_garbage(_normal(2, (B, S, D)), LENGTHS)
    return queries, keys, values


def _cross_params(kind: str) -> dict:
    params = att.init_cross_attention(kind, jax.random.PRNGKey(3), D, D, A)
    return _perturbed(params, 4)


# ----------------------------------------------------------------------------- masked softmax


def test_lengths_to_mask():
    mask = att.lengths_to_mask(jnp.array([3, 0, 5]), 5)
    expected = np.arange(5)[None, :] < np.array([3, 0, 5])[:, None]
    assert mask.dtype == jnp.bool_
    np.testing.assert_array_equal(mask, expected)


def test_masked_softmax_fully_masked_row_is_zero_and_grad_finite():
    scores = _normal(5, (3, S))
    mask = att.lengths_to_mask(jnp.array([S, 2, 0]), S)
    weights = att.masked_softmax(scores, mask)
    np.testing.assert_array_equal(weights[2], 0.0)
    np.testing.assert_array_equal(weights[1, 2:], 0.0)
    np.testing.assert_allclose(jnp.sum(weights[:2], axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(weights[0], jax.nn.softmax(scores[0]), rtol=1e-6)

    target = _normal(6, (3, S))
    grad = jax.grad(lambda e: jnp.sum(att.masked_softmax(e, mask) * target))(scores)
    assert bool(jnp.all(jnp.isfinite(grad)))
    np.testing.assert_array_equal(grad[2], 0.0)
    np.testing.assert_array_equal(grad[1, 2:], 0.0)


def test_masked_softmax_ignores_extreme_masked_scores():
    scores = jnp.array([[1.0, 2.0, 3e38, -3e38]])
    mask = jnp.array([[True, True, False, False]])
    weights = att.masked_softmax(scores, mask)
    np.testing.assert_allclose(weights[0, :2], jax.nn.softmax(jnp.array([1.0, 2.0])), rtol=1e-6)
    np.testing.assert_array_equal(weights[0, 2:], 0.0)


# ----------------------------------------------------------------------------- cross attention


@pytest.mark.parametrize("kind", att.CROSS_ATTENTION_KINDS)
def test_cross_attention_weights_sum_to_one_and_zero_on_padding(kind, cross_inputs):
    queries, keys, values = cross_inputs
    context, weights = att.cross_attention(
        kind, _cross_params(kind), queries, keys, values, LENGTHS
    )
    assert context.shape == (B, Q, D)
    assert weights.shape == (B, Q, S)
    mask = att.lengths_to_mask(LENGTHS, S)[:, None, :]
    np.testing.assert_allclose(jnp.sum(weights, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(jnp.where(mask, 0.0, weights), 0.0)
    assert bool(jnp.all(jnp.isfinite(context)))


@pytest.mark.parametrize("kind", att.CROSS_ATTENTION_KINDS)
def test_cross_attention_padding_invariance(kind, cross_inputs):
    queries, keys, values = cross_inputs
    params = _cross_params(kind)
    context, weights = att.cross_attention(kind, params, queries, keys, values, LENGTHS)
    for i, length in enumerate(LENGTHS.tolist()):
        alone_context, alone_weights = att.cross_attention(
            kind, params, queries[i : i + 1], keys[i : i + 1, :length], values[i : i + 1, :length]
        )
        np.testing.assert_allclose(context[i], alone_context[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weights[i, :, :length], alone_weights[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", att.CROSS_ATTENTION_KINDS)
def test_cross_attention_jit_vmap_and_grad(kind, cross_inputs):
    queries, keys, values = cross_inputs
    params = _cross_params(kind)
    expected = att.cross_attention(kind, params, queries, keys, values, LENGTHS)

    jitted = jax.jit(att.cross_attention, static_argnums=0)
    got = jitted(kind, params, queries, keys, values, LENGTHS)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)

    per_example = jax.vmap(
        lambda q, k, v, n: att.cross_attention(kind, params, q, k, v, n), in_axes=0
    )(queries, keys, values, LENGTHS)
    for e, g in zip(expected, per_example, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)

    def loss(p, q):
        context, _ = att.cross_attention(kind, p, q, keys, values, jnp.array([5, 0]))
        return jnp.sum(context**2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, queries)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))


def test_fully_masked_keys_give_zero_context(cross_inputs):
    queries, keys, values = cross_inputs
    context, weights = att.cross_attention("dot", {}, queries, keys, values, jnp.array([0, 3]))
    np.testing.assert_array_equal(context[0], 0.0)
    np.testing.assert_array_equal(weights[0], 0.0)


def test_dot_and_scaled_dot_differ_by_sqrt_d(cross_inputs):
    queries, keys, _ = cross_inputs
    keys = _normal(1, (B, S, D))
    dot = att.dot_scores(queries, keys)
    scaled = att.dot_scores(queries, keys, scaled=True)
    np.testing.assert_allclose(dot, scaled * np.sqrt(D), rtol=1e-6)
    np.testing.assert_allclose(
        dot, np.einsum("bqd,bsd->bqs", np.asarray(queries), np.asarray(keys)), rtol=1e-5
    )


def test_additive_scores_match_numpy_loop():
    dq, dk = 3, 5
    params = _perturbed(att.init_additive(jax.random.PRNGKey(0), dq, dk, A), 1)
    queries, keys = _normal(2, (B, Q, dq)), _normal(3, (B, S, dk))
    scores = att.additive_scores(params, queries, keys)
    p = {name: np.asarray(x, np.float64) for name, x in params.items()}
    q, k = np.asarray(queries, np.float64), np.asarray(keys, np.float64)
    expected = np.zeros((B, Q, S))
    for b in range(B):
        for i in range(Q):
            for j in range(S):
                hidden = np.tanh(p["w_q"] @ q[b, i] + p["w_k"] @ k[b, j] + p["b"])
                expected[b, i, j] = p["v"] @ hidden
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_general_scores_match_numpy():
    dq, dk = 3, 5
    params = att.init_general(jax.random.PRNGKey(0), dq, dk)
    queries, keys = _normal(2, (B, Q, dq)), _normal(3, (B, S, dk))
    expected = np.einsum(
        "bqi,ij,bsj->bqs", np.asarray(queries), np.asarray(params["w"]), np.asarray(keys)
    )
    np.testing.assert_allclose(
        att.general_scores(params, queries, keys), expected, rtol=1e-5, atol=1e-6
    )


def test_init_cross_attention_shapes():
    assert att.init_cross_attention("dot", jax.random.PRNGKey(0), D, D) == {}
    assert att.init_cross_attention("scaled_dot", jax.random.PRNGKey(0), D, D) == {}
    additive = att.init_cross_attention("additive", jax.random.PRNGKey(0), 3, 5, A)
    assert {k: v.shape for k, v in additive.items()} == {
        "w_q": (A, 3),
        "w_k": (A, 5),
        "b": (A,),
        "v": (A,),
    }
    general = att.init_cross_attention("general", jax.random.PRNGKey(0), 3, 5)
    assert general["w"].shape == (3, 5)


def test_bad_kinds_raise():
    with pytest.raises(ValueError, match="additive"):
        att.init_cross_attention("bahdanau", jax.random.PRNGKey(0), D, D, A)
    with pytest.raises(ValueError, match="scaled_dot"):
        att.cross_attention("bahdanau", {}, _normal(0, (B, Q, D)), _normal(1, (B, S, D)), None)
    with pytest.raises(ValueError, match="attention"):
        att.pool("sum", {}, _normal(0, (B, S, D)))
    with pytest.raises(ValueError, match="max"):
        att.init_pooling("sum", jax.random.PRNGKey(0), D, A)
    with pytest.raises(ValueError, match="query_size"):
        att.init_cross_attention("dot", jax.random.PRNGKey(0), 3, 5)
    with pytest.raises(ValueError, match="divisible"):
        att.init_multi_head(jax.random.PRNGKey(0), D, 6, 4)


# ------------------------------------------------------------------------------ self attention


def _mha_params(seed: int = 0, input_size: int = D, model_size: int = D, heads: int = 2) -> dict:
    params = att.init_multi_head(jax.random.PRNGKey(seed), input_size, model_size, heads)
    return _perturbed(params, seed + 1)


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_padding_invariance(causal):
    params = _mha_params(input_size=3, model_size=D)
    xs = _pad_garbage(_normal(7, (B, S, 3)), LENGTHS)
    outputs, weights = att.multi_head_self_attention(params, xs, LENGTHS, 2, causal)
    assert outputs.shape == (B, S, D)
    assert weights.shape == (B, 2, S, S)
    for i, length in enumerate(LENGTHS.tolist()):
        alone_out, alone_w = att.multi_head_self_attention(
            params, xs[i : i + 1, :length], None, 2, causal
        )
        np.testing.assert_allclose(outputs[i, :length], alone_out[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            weights[i, :, :length, :length], alone_w[0], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_array_equal(outputs[i, length:], 0.0)
        np.testing.assert_array_equal(weights[i, :, :, length:], 0.0)
        np.testing.assert_array_equal(weights[i, :, length:, :], 0.0)
        np.testing.assert_allclose(jnp.sum(weights[i, :, :length], axis=-1), 1.0, rtol=1e-5)
    if causal:
        future = jnp.triu(jnp.ones((S, S), bool), k=1)[None, None]
        np.testing.assert_array_equal(jnp.where(future, weights, 0.0), 0.0)


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_torch(causal):
    torch = pytest.importorskip("torch")
    heads = 2
    params = _mha_params(heads=heads)
    xs = _normal(8, (B, S, D))

    mha = torch.nn.MultiheadAttention(D, heads, batch_first=True, dtype=torch.float32).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.from_numpy(np.array(params["w_qkv"])))
        mha.in_proj_bias.copy_(torch.from_numpy(np.array(params["b_qkv"])))
        mha.out_proj.weight.copy_(torch.from_numpy(np.array(params["w_o"])))
        mha.out_proj.bias.copy_(torch.from_numpy(np.array(params["b_o"])))
        x = torch.from_numpy(np.array(xs))
        padding = torch.from_numpy(~np.asarray(att.lengths_to_mask(LENGTHS, S)))
        causal_mask = torch.triu(torch.ones(S, S, dtype=torch.bool), 1) if causal else None
        expected, expected_weights = mha(
            x,
            x,
            x,
            key_padding_mask=padding,
            attn_mask=causal_mask,
            need_weights=True,
            average_attn_weights=True,
        )

    outputs, weights = att.multi_head_self_attention(params, xs, LENGTHS, heads, causal)
    mean_weights = jnp.mean(weights, axis=1)
    for i, length in enumerate(LENGTHS.tolist()):
        np.testing.assert_allclose(
            outputs[i, :length], expected[i, :length].numpy(), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            mean_weights[i, :length], expected_weights[i, :length].numpy(), rtol=1e-5, atol=1e-5
        )


def test_self_attention_jit_vmap_and_grad():
    params = _mha_params()
    xs = _pad_garbage(_normal(9, (B, S, D)), LENGTHS)
    expected = att.multi_head_self_attention(params, xs, LENGTHS, 2, True)
    got = jax.jit(att.multi_head_self_attention, static_argnums=(3, 4))(
        params, xs, LENGTHS, 2, True
    )
    per_example = jax.vmap(lambda x, n: att.multi_head_self_attention(params, x, n, 2, True))(
        xs, LENGTHS
    )
    for e, g, v in zip(expected, got, per_example, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(v, e, rtol=1e-5, atol=1e-6)

    def loss(p):
        outputs, _ = att.multi_head_self_attention(p, xs, jnp.array([5, 0]), 2)
        return jnp.sum(outputs**2)

    grads = jax.jit(jax.grad(loss))(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))


# ------------------------------------------------------------------------------------- pooling


def _pool_params(kind: str) -> dict:
    return _perturbed(att.init_pooling(kind, jax.random.PRNGKey(10), D, A), 11)


@pytest.mark.parametrize("kind", att.POOLING_KINDS)
def test_pooling_padding_invariance(kind):
    params = _pool_params(kind)
    xs = _pad_garbage(_normal(12, (B, S, D)), LENGTHS)
    pooled, weights = att.pool(kind, params, xs, LENGTHS)
    assert pooled.shape == (B, D)
    for i, length in enumerate(LENGTHS.tolist()):
        alone, alone_weights = att.pool(kind, params, xs[i : i + 1, :length], None)
        np.testing.assert_allclose(pooled[i], alone[0], rtol=1e-5, atol=1e-6)
        if kind == "attention":
            np.testing.assert_allclose(weights[i, :length], alone_weights[0], rtol=1e-5)
            np.testing.assert_array_equal(weights[i, length:], 0.0)
            np.testing.assert_allclose(jnp.sum(weights[i]), 1.0, rtol=1e-5)
        else:
            assert weights is None and alone_weights is None


@pytest.mark.parametrize("kind", att.POOLING_KINDS)
def test_pooling_jit_vmap_grad_and_empty(kind):
    params = _pool_params(kind)
    xs = _pad_garbage(_normal(13, (B, S, D)), LENGTHS)
    expected, _ = att.pool(kind, params, xs, LENGTHS)
    got, _ = jax.jit(att.pool, static_argnums=0)(kind, params, xs, LENGTHS)
    per_example, _ = jax.vmap(lambda x, n: att.pool(kind, params, x, n))(xs, LENGTHS)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(per_example, expected, rtol=1e-5, atol=1e-6)

    empty, _ = att.pool(kind, params, xs, jnp.array([0, 3]))
    np.testing.assert_array_equal(empty[0], 0.0)
    grads = jax.grad(lambda p, x: jnp.sum(att.pool(kind, p, x, jnp.array([0, 3]))[0]), (0, 1))(
        params, xs
    )
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))


def test_pooling_known_answers():
    xs = _normal(14, (B, S, D))
    x = np.asarray(xs)
    np.testing.assert_allclose(att.last_pooling(xs, LENGTHS), x[[0, 1], [4, 2]], rtol=1e-6)
    np.testing.assert_allclose(att.last_pooling(xs), x[:, -1], rtol=1e-6)
    np.testing.assert_allclose(att.mean_pooling(xs, LENGTHS)[1], x[1, :3].mean(0), rtol=1e-5)
    np.testing.assert_allclose(att.mean_pooling(xs), x.mean(1), rtol=1e-5)

    params = _pool_params("attention")
    p = {name: np.asarray(v, np.float64) for name, v in params.items()}
    scores = np.tanh(x[1, :3] @ p["w"].T + p["b"]) @ p["u"]
    weights = np.exp(scores - scores.max())
    weights /= weights.sum()
    pooled, _ = att.attention_pooling(params, xs, LENGTHS)
    np.testing.assert_allclose(pooled[1], weights @ x[1, :3], rtol=1e-5, atol=1e-6)


def test_max_pooling_ignores_large_padded_values():
    xs = -jnp.abs(_normal(15, (B, S, D))) - 1.0  # valid values all negative
    padded = _pad_garbage(xs, LENGTHS)  # padded steps hold +1e4
    pooled = att.max_pooling(padded, LENGTHS)
    np.testing.assert_allclose(pooled[1], np.asarray(xs)[1, :3].max(0), rtol=1e-6)
    np.testing.assert_allclose(pooled[0], np.asarray(xs)[0].max(0), rtol=1e-6)
    assert bool(jnp.all(pooled < 0.0))
