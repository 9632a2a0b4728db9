"""Tests for `rnnlab.models`: shapes, padding invariance, carry threading, sampling, attention.

Tiny shapes and one jitted `apply` reused across tests (`_apply` caches per model and shapes),
so the whole file stays fast on a small CPU.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnlab import attention as att
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell
from rnnlab.models import (
    LanguageModel,
    Seq2Seq,
    SequenceClassifier,
    SequenceTagger,
    count_params,
    generate,
    greedy_decode,
    sample_logits,
)

B, T, D, H, V, C = 2, 5, 3, 8, 11, 3
SHORT = 3
LENGTHS = jnp.array([T, SHORT])  # the second sequence is padded; alone it is [1, SHORT]
CELLS = {"lstm": LSTMCell(H), "gru": GRUCell(H), "elman": ElmanCell(H)}
KEY = jax.random.PRNGKey(0)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("method", "train"))
def _apply(model, variables, *args, method=None, train=False, rngs=None):
    """`model.apply` under jit, returning (outputs, sown intermediates)."""
    kwargs = {"train": train} if method is None else {}
    return model.apply(
        variables, *args, **kwargs, method=method, rngs=rngs, mutable=["intermediates"]
    )


def _init(model, *args):
    # Only the initialisers run (no forward pass); they compile once per shape for all models.
    shapes = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), args)
    return model.lazy_init(KEY, *shapes)


def _tokens(seed, shape, vocab=V):
    return jax.random.randint(jax.random.PRNGKey(seed), shape, 0, vocab)


def _features(seed, shape):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _garbage_padding(xs, lengths, seed=99):
    """Replace padded steps by other random values: nothing there may leak into valid results."""
    valid = att.lengths_to_mask(lengths, xs.shape[1])
    if jnp.issubdtype(xs.dtype, jnp.integer):
        return jnp.where(valid, xs, _tokens(seed, xs.shape))
    noise = 1e3 * _features(seed, xs.shape)
    return jnp.where(valid[..., None], xs, noise)


def _close(a, b, atol=2e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=1e-5)


# ------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS.values(), ids=CELLS.keys())
def test_classifier_and_tagger_shapes(cell, bidirectional):
    tokens, features = _tokens(0, (B, T)), _features(1, (B, T, D))
    classifier = SequenceClassifier(
        cell=cell, bidirectional=bidirectional, num_outputs=C, vocab_size=V, embed_dim=4
    )
    outputs, _ = _apply(classifier, _init(classifier, tokens, LENGTHS), tokens, LENGTHS)
    assert outputs.shape == (B, C)
    tagger = SequenceTagger(cell=cell, bidirectional=bidirectional, num_outputs=C)
    outputs, _ = _apply(tagger, _init(tagger, features), features, LENGTHS)
    assert outputs.shape == (B, T, C)
    assert np.all(np.isfinite(outputs))


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS.values(), ids=CELLS.keys())
def test_seq2seq_shapes(cell, bidirectional):
    source, targets = _features(0, (B, T, D)), _tokens(1, (B, 4))
    model = Seq2Seq(
        cell=cell,
        bidirectional=bidirectional,
        num_layers=2 if bidirectional else 1,  # the bridge: one Dense per layer and carry leaf
        attention="dot",
        output_size=V,
        target_vocab_size=V,
        embed_dim=4,
    )
    outputs, state = _apply(model, _init(model, source, LENGTHS, targets), source, LENGTHS, targets)
    assert outputs.shape == (B, 4, V)
    assert state["intermediates"]["attention_weights"][0].shape == (B, 4, T)


@pytest.mark.parametrize("cell", CELLS.values(), ids=CELLS.keys())
def test_language_model_shapes_and_carry(cell):
    model = LanguageModel(cell=cell, num_layers=2, vocab_size=V, embed_dim=4)
    tokens = _tokens(0, (B, T))
    (logits, carry), _ = _apply(model, _init(model, tokens), tokens)
    assert logits.shape == (B, T, V)
    zero = model.zero_carry(B)
    assert jax.tree_util.tree_structure(carry) == jax.tree_util.tree_structure(zero)
    for got, want in zip(
        jax.tree_util.tree_leaves(carry), jax.tree_util.tree_leaves(zero), strict=True
    ):
        assert got.shape == want.shape and got.dtype == want.dtype


# ------------------------------------------------------------------------- padding invariance

CLASSIFIER_HEADS = [(pooling, "none") for pooling in att.POOLING_KINDS] + [
    ("last", kind) for kind in (*att.CROSS_ATTENTION_KINDS, "self")
]


@pytest.mark.parametrize(
    ("pooling", "attention"), CLASSIFIER_HEADS, ids=[f"{p}-{a}" for p, a in CLASSIFIER_HEADS]
)
def test_classifier_padding_invariance(pooling, attention):
    model = SequenceClassifier(
        cell=GRUCell(H),
        bidirectional=True,
        pooling=pooling,
        attention=attention,
        num_heads=2,
        attention_size=6,
        num_outputs=C,
        vocab_size=V,
        embed_dim=4,
    )
    tokens = _garbage_padding(_tokens(0, (B, T)), LENGTHS)
    variables = _init(model, tokens, LENGTHS)
    batched, state = _apply(model, variables, tokens, LENGTHS)
    alone, _ = _apply(model, variables, tokens[1:, :SHORT], None)
    _close(batched[1], alone[0])
    if attention in att.CROSS_ATTENTION_KINDS or pooling == "attention":
        weights = state["intermediates"]["attention_weights"][0]  # [b, t]
        _close(weights.sum(-1), jnp.ones(B))
        assert np.all(np.asarray(weights[1, SHORT:]) == 0.0)


@pytest.mark.parametrize("attention", ["none", "self"])
def test_tagger_padding_invariance(attention):
    model = SequenceTagger(
        cell=LSTMCell(H), bidirectional=True, attention=attention, num_heads=2, num_outputs=C
    )
    features = _garbage_padding(_features(0, (B, T, D)), LENGTHS)
    variables = _init(model, features, LENGTHS)
    batched, _ = _apply(model, variables, features, LENGTHS)
    alone, _ = _apply(model, variables, features[1:, :SHORT], None)
    _close(batched[1, :SHORT], alone[0])


def _seq2seq(**fields):
    defaults = dict(
        cell=LSTMCell(H),
        bidirectional=True,
        attention="additive",
        attention_size=6,
        output_size=V,
        source_vocab_size=V,
        target_vocab_size=V,
        embed_dim=4,
    )
    return Seq2Seq(**(defaults | fields))


def test_seq2seq_padding_invariance_and_attention_weights():
    model = _seq2seq()
    source = _garbage_padding(_tokens(0, (B, T)), LENGTHS)
    targets = _tokens(1, (B, 4))
    variables = _init(model, source, LENGTHS, targets)
    batched, state = _apply(model, variables, source, LENGTHS, targets)
    alone, _ = _apply(model, variables, source[1:, :SHORT], None, targets[1:])
    _close(batched[1], alone[0])
    weights = state["intermediates"]["attention_weights"][0]  # [b, t_out, s]
    _close(weights.sum(-1), jnp.ones((B, 4)))
    valid = np.asarray(att.lengths_to_mask(LENGTHS, T))[:, None, :]
    assert np.all(np.asarray(weights)[np.broadcast_to(~valid, weights.shape)] == 0.0)
    assert np.all(np.asarray(weights)[np.broadcast_to(valid, weights.shape)] > 0.0)


# ------------------------------------------------------------------------------ language model


@pytest.mark.parametrize("cell", [CELLS["lstm"], CELLS["gru"]], ids=["lstm", "gru"])
def test_language_model_carry_threading(cell):
    """Running [b, 2t] at once equals two [b, t] halves with the carry passed along (TBPTT)."""
    model = LanguageModel(cell=cell, num_layers=2, vocab_size=V, embed_dim=4)
    tokens = _tokens(0, (B, 2 * T))
    resets = jnp.zeros((B, 2 * T), bool).at[1, 7].set(True)
    variables = _init(model, tokens)
    (whole, carry_whole), _ = _apply(model, variables, tokens, model.zero_carry(B), resets)
    (first, carry), _ = _apply(model, variables, tokens[:, :T], model.zero_carry(B), resets[:, :T])
    (second, carry), _ = _apply(model, variables, tokens[:, T:], carry, resets[:, T:])
    _close(whole, jnp.concatenate([first, second], axis=1))
    for a, b in zip(
        jax.tree_util.tree_leaves(carry_whole), jax.tree_util.tree_leaves(carry), strict=True
    ):
        _close(a, b)


def _unused_row_gradient(tie_weights):
    """|d loss / d embedding| on the rows of tokens absent from the input."""
    model = LanguageModel(cell=GRUCell(H), vocab_size=V, embed_dim=H, tie_weights=tie_weights)
    tokens = jnp.array([[0, 1, 2, 3, 4]] * B)
    params = _init(model, tokens)["params"]

    def loss(params):
        logits, _ = model.apply({"params": params}, tokens)
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens).mean()

    grads = jax.jit(jax.grad(loss))(params)
    return params, np.abs(np.asarray(grads["embed"]["embedding"][5:])).sum()


def test_language_model_tied_weights_share_the_embedding():
    tied, tied_gradient = _unused_row_gradient(True)
    untied, untied_gradient = _unused_row_gradient(False)
    assert "output" not in tied and "tie_projection" not in tied and "output" in untied
    assert count_params(untied) - count_params(tied) == H * V
    # Rows of tokens never fed in are still trained when they are the output matrix.
    assert tied_gradient > 0.0 and untied_gradient == 0.0


def test_language_model_tied_projection_when_sizes_differ():
    model = LanguageModel(cell=ElmanCell(H), vocab_size=V, embed_dim=4, tie_weights=True)
    tokens = _tokens(0, (B, T))
    variables = _init(model, tokens)
    assert variables["params"]["tie_projection"]["kernel"].shape == (H, 4)
    (logits, _), _ = _apply(model, variables, tokens)
    assert logits.shape == (B, T, V)


def test_generate():
    model = LanguageModel(cell=LSTMCell(H), vocab_size=V, embed_dim=4)
    prompt = _tokens(0, (B, 3))
    params = _init(model, prompt)["params"]
    sampled = generate(model, params, prompt, 6, jax.random.PRNGKey(1))
    assert sampled.shape == (B, 6) and sampled.dtype == jnp.int32
    assert np.all((np.asarray(sampled) >= 0) & (np.asarray(sampled) < V))
    np.testing.assert_array_equal(
        sampled, generate(model, params, prompt, 6, jax.random.PRNGKey(1))
    )
    # top_k=1 is greedy: each token is the argmax of the logits after everything before it.
    greedy = generate(model, {"params": params}, prompt, 6, jax.random.PRNGKey(2), top_k=1)
    (logits, _), _ = _apply(model, {"params": params}, jnp.concatenate([prompt, greedy], 1))
    np.testing.assert_array_equal(greedy, jnp.argmax(logits[:, 2:-1], axis=-1))


def test_sample_logits_temperature_and_top_k():
    logits = _features(0, (64, V))
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    greedy = jnp.argmax(logits, axis=-1)
    np.testing.assert_array_equal(sample_logits(keys[0], logits, temperature=0.0), greedy)
    np.testing.assert_array_equal(sample_logits(keys[1], logits, top_k=1), greedy)
    top2 = sample_logits(keys[2], logits, temperature=10.0, top_k=2)
    best_two = np.asarray(jax.lax.top_k(logits, 2)[1])
    assert np.all(np.any(best_two == np.asarray(top2)[:, None], axis=-1))
    assert np.any(np.asarray(top2) != np.asarray(greedy))  # hot enough to pick the second
    anything = sample_logits(keys[3], logits, temperature=10.0)
    assert np.any(~np.any(best_two == np.asarray(anything)[:, None], axis=-1))


# ---------------------------------------------------------------------------------- seq2seq


def test_greedy_decode_matches_teacher_forcing_on_its_own_output():
    model = _seq2seq(attention="general", bidirectional=False)
    source = _tokens(0, (B, T))
    params = _init(model, source, LENGTHS, _tokens(1, (B, 4)))["params"]
    decoded = greedy_decode(model, params, source, LENGTHS, 0, 4)
    assert decoded.shape == (B, 4)
    fed = jnp.concatenate([jnp.zeros((B, 1), decoded.dtype), decoded[:, :-1]], axis=1)
    outputs, _ = _apply(model, {"params": params}, source, LENGTHS, fed)
    np.testing.assert_array_equal(decoded, jnp.argmax(outputs, axis=-1))


def test_seq2seq_float_inputs_without_attention():
    """Forecasting shape: float source, float decoder placeholders, decoder from the carry only."""
    model = Seq2Seq(cell=GRUCell(H), attention="none", output_size=1)
    source, placeholders = _features(0, (B, T, D)), jnp.zeros((B, 4, 2))
    variables = _init(model, source, None, placeholders)
    outputs, state = _apply(model, variables, source, None, placeholders)
    assert outputs.shape == (B, 4, 1) and "attention" not in variables["params"]
    assert state == {}


# ----------------------------------------------------------------------------- regularisation


def test_dropout_only_when_training():
    model = SequenceClassifier(
        cell=LSTMCell(H),
        num_layers=2,
        dropout=0.5,
        word_dropout=0.2,
        recurrent_dropout=0.3,
        zoneout=0.2,
        num_outputs=C,
        vocab_size=V,
        embed_dim=4,
    )
    tokens = _tokens(0, (B, T))
    variables = _init(model, tokens, LENGTHS)
    evaluation, _ = _apply(model, variables, tokens, LENGTHS)
    again, _ = _apply(model, variables, tokens, LENGTHS)
    np.testing.assert_array_equal(evaluation, again)
    rngs = {"dropout": jax.random.PRNGKey(1)}
    train, _ = _apply(model, variables, tokens, LENGTHS, train=True, rngs=rngs)
    train_again, _ = _apply(model, variables, tokens, LENGTHS, train=True, rngs=rngs)
    other, _ = _apply(
        model, variables, tokens, LENGTHS, train=True, rngs={"dropout": jax.random.PRNGKey(2)}
    )
    np.testing.assert_array_equal(train, train_again)
    assert not np.allclose(train, evaluation) and not np.allclose(train, other)


@pytest.mark.parametrize("model_class", [SequenceClassifier, LanguageModel, Seq2Seq])
def test_word_dropout_zeroes_whole_tokens_only_when_training(model_class) -> None:
    """Each token's embedding is kept whole (scaled by 1 / (1 - rate)) or zeroed whole, about
    `rate` of them zeroed; evaluation is the identity; every model that embeds tokens has it."""
    fields = {
        SequenceClassifier: {"num_outputs": C, "vocab_size": V},
        LanguageModel: {"vocab_size": V},
        Seq2Seq: {"source_vocab_size": V, "target_vocab_size": V, "output_size": V},
    }[model_class]
    model = model_class(cell=GRUCell(H), word_dropout=0.25, embed_dim=4, **fields)
    xs = _features(0, (4, 100, 4))
    drop = nn.apply(lambda m, x, train: m.drop_words(x, train), model)
    dropped = drop({}, xs, True, rngs={"dropout": jax.random.PRNGKey(3)})
    zeroed = np.all(np.asarray(dropped) == 0.0, axis=-1)
    np.testing.assert_allclose(
        np.asarray(dropped)[~zeroed], np.asarray(xs)[~zeroed] / 0.75, rtol=1e-6
    )
    assert 0.18 < zeroed.mean() < 0.32  # 400 tokens at rate 0.25
    np.testing.assert_array_equal(drop({}, xs, False), xs)
    with pytest.raises(ValueError, match="word_dropout must be in"):
        model_class(cell=GRUCell(H), word_dropout=1.0, **fields)


def test_classifier_loss_falls():
    """A tiny adding-problem-like regression: 30 Adam steps must reduce the loss a lot."""
    model = SequenceClassifier(cell=GRUCell(H), pooling="mean", num_outputs=1)
    inputs = _features(0, (8, T, 2))
    targets = inputs[:, :, 0].sum(axis=1, keepdims=True)
    params = _init(model, inputs)["params"]
    optimizer = optax.adam(3e-2)

    def loss_fn(params):
        return jnp.mean(jnp.square(model.apply({"params": params}, inputs) - targets))

    @jax.jit
    def update(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    losses = []
    for _ in range(30):
        params, opt_state, loss = update(params, opt_state)
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < 0.3 * losses[0]


# ---------------------------------------------------------------------------------- errors


def test_count_params():
    model = SequenceClassifier(cell=ElmanCell(H), num_outputs=C)
    params = _init(model, _features(0, (B, T, D)))["params"]
    assert count_params(params) == (H * D + H * H + H) + (H * C + C)


def test_bidirectional_language_model_raises():
    with pytest.raises(ValueError, match="bidirectional"):
        LanguageModel(cell=GRUCell(H), bidirectional=True, vocab_size=V)


@pytest.mark.parametrize(
    ("build", "options"),
    [
        (lambda: SequenceClassifier(cell=GRUCell(H), num_outputs=C, attention="luong"), "general"),
        (lambda: SequenceClassifier(cell=GRUCell(H), num_outputs=C, pooling="sum"), "max"),
        (lambda: SequenceTagger(cell=GRUCell(H), num_outputs=C, attention="dot"), "self"),
        (lambda: Seq2Seq(cell=GRUCell(H), output_size=C, attention="self"), "additive"),
        (lambda: LanguageModel(cell=GRUCell(H), vocab_size=V, attention="dot"), "none"),
    ],
    ids=["classifier-attention", "pooling", "tagger-attention", "seq2seq-attention", "lm"],
)
def test_unknown_kind_raises_naming_the_options(build, options):
    with pytest.raises(ValueError, match=f"choose one of .*'{options}'"):
        build()


def test_wrong_inputs_raise():
    model = SequenceClassifier(cell=GRUCell(H), num_outputs=C, vocab_size=V)
    with pytest.raises(ValueError, match="int token ids"):
        model.init(KEY, _features(0, (B, T, D)))
