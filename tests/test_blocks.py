"""Residual block stacks (`rnnlab.blocks`): each block against its paper's equations written as
plain NumPy loops with the module's params copied in; padding, packed sequences and carries
(halves equal one run, token by token equals the full forward); gradients; construction errors;
and every block kind training a few steps through the real runner.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from rnnlab import cli
from rnnlab.blocks import BlockStack, causal_conv
from rnnlab.blocks import headwise as headwise_jax
from rnnlab.cells.gru import GRUCell
from rnnlab.cells.lru import LRUCell
from rnnlab.cells.lstm import LSTMCell
from rnnlab.cells.minimal import MinGRUCell, MinLSTMCell
from rnnlab.cells.mlstm import MLSTMCell
from rnnlab.cells.rglru import RGLRUCell
from rnnlab.cells.slstm import SLSTMCell
from rnnlab.distributed import make_mesh
from rnnlab.errors import ConfigError
from rnnlab.models import LanguageModel, Seq2Seq, SequenceClassifier, generate
from rnnlab.train import init_state
from tests import test_train

B, T, W, HEADS, V = 2, 9, 8, 2, 11
KEY = jax.random.PRNGKey(0)

STACKS = {
    "hawk": dict(block="hawk", cell=RGLRUCell(8)),
    "hawk_gru": dict(block="hawk", cell=GRUCell(6)),  # another cell in Hawk's block
    "mlstm": dict(block="mlstm", cell=MLSTMCell(16, num_heads=2)),
    "slstm": dict(block="slstm", cell=SLSTMCell(W, num_heads=HEADS)),
    "slstm_1head": dict(block="slstm", cell=SLSTMCell(W, num_heads=1)),
    "xlstm": dict(block="xlstm", cell=MLSTMCell(16, num_heads=2), slstm_at=(1,)),
    "prenorm_mingru": dict(block="prenorm", cell=MinGRUCell(6)),
    "prenorm_minlstm": dict(block="prenorm", cell=MinLSTMCell(6)),
    "prenorm_lru": dict(block="prenorm", cell=LRUCell(4)),  # complex state, [Re h, Im h] out
    "minrnn_mingru": dict(block="minrnn", cell=MinGRUCell(6)),
    "minrnn_minlstm": dict(block="minrnn", cell=MinLSTMCell(6), conv_width=1),  # no convolution
    "minrnn_lstm": dict(block="minrnn", cell=LSTMCell(6)),  # the LSTM in the minGRU's block
}
# The grids below take one stack per code path, to keep the suite short: the mix runs both xLSTM
# blocks; every cell shares the pre-norm block's code (the LRU: a complex state besides); another
# cell in Hawk's block and the 1-head sLSTM are checked against the equations only. The minRNN
# block shares Hawk's convolution code (`causal_conv`, lengths included): it is checked against
# its equations (with and without the convolution), packed sequences and generation (with an
# LSTM: a two-part carry beside the convolution's window), not the whole grid.
GRID = ["hawk", "xlstm", "prenorm_lru"]


@functools.partial(jax.jit, static_argnums=0, static_argnames="train")
def apply(module, variables, *args, **kwargs):
    """`module.apply` under jit (one compilation per module and shapes; eager is far slower)."""
    return module.apply(variables, *args, **kwargs)


@functools.partial(jax.jit, static_argnums=0)
def init(module, *args):
    return module.init(KEY, *args)


def make_stack(name: str, **kwargs) -> BlockStack:
    """One block of a kind (the xLSTM mix: two); the stacking itself is the mix's test."""
    blocks = 2 if name == "xlstm" else 1
    fields = dict(num_blocks=blocks, width=W, num_heads=HEADS, **STACKS[name])
    return BlockStack(**{**fields, **kwargs})


def perturbed(params, scale: float = 0.2, seed: int = 1):
    """Every leaf moved off its initialisation (zero-initialised gates, norms and recurrent
    blocks would hide a wrongly wired weight)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    moved = [
        x + scale * jax.random.normal(k, x.shape, x.dtype)
        for x, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, moved)


def features(seed: int, shape=(B, T, W)):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


def init_stack(stack: BlockStack, xs):
    return perturbed(init(stack, xs)["params"])


# ------------------------------------------------------------------ the papers, in NumPy


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def silu(x):
    return x * sigmoid(x)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def gelu_erf(x):
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def dense(x, p):
    return x @ p["kernel"] + (p["bias"] if "bias" in p else 0.0)


def rms(x, scale, eps=1e-6):
    return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps) * (1.0 + scale)


def ln(x, weight, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * (1.0 + weight)


def group_norm(x, weight, heads, eps=1e-5):
    size = x.shape[-1] // heads
    parts = [ln(x[..., j * size : (j + 1) * size], 0.0, eps) for j in range(heads)]
    return np.concatenate(parts, -1) * (1.0 + weight)


def headwise(x, blocks):
    """xLSTM's LinearHeadwiseExpand / Griffin's BlockDiagonalLinear: block j on slice j."""
    n, i, _ = blocks.shape
    return np.concatenate([x[..., j * i : (j + 1) * i] @ blocks[j] for j in range(n)], -1)


def recurrent_heads(h, blocks):
    """Head j's `[out, in]` block times head j's slice of `h` (sLSTM's memory mixing)."""
    return headwise(h, np.swapaxes(blocks, -1, -2))


def conv(x, w, b):
    """Causal depthwise convolution from zeros: y_t = b + sum_j w[k-1-j] x_{t-j}."""
    k, y = w.shape[0], np.zeros_like(x) + b
    for t in range(x.shape[1]):
        for j in range(min(k, t + 1)):
            y[:, t] += w[k - 1 - j] * x[:, t - j]
    return y


def hawk_block(p, x, c=8.0):
    """De et al. (2024), Figure 2 and eqs. 1-4 (RG-LRU on the convolved branch)."""
    normed = rms(x, p["temporal_norm"])
    gate = gelu_tanh(dense(normed, p["linear_y"]))
    u = conv(dense(normed, p["linear_x"]), p["conv_w"], p["conv_b"])
    g = p["rg_lru"]
    r = sigmoid(headwise(u, g["w_a"]) + g["b_a"])
    i = sigmoid(headwise(u, g["w_x"]) + g["b_x"])
    a = sigmoid(-g["a_param"]) ** (c * r)  # a_t = a^(c r_t), a = sigma(-Lambda)
    h, hs = np.zeros_like(u[:, 0]), []
    for t in range(u.shape[1]):
        h = a[:, t] * h + np.sqrt(1.0 - a[:, t] ** 2) * (i[:, t] * u[:, t])
        hs.append(h)
    x = x + dense(np.stack(hs, 1) * gate, p["linear_out"])
    normed = rms(x, p["channel_norm"])
    m = p["mlp"]
    return x + dense(gelu_tanh(dense(normed, m["gate"])) * dense(normed, m["up"]), m["down"])


def mlstm_block(p, x, heads):
    """Beck et al. (2024), Figure 10 and eqs. 19-27, unstabilised: C_t = f C + i v k^T,
    n_t = f n + i k, h~ = C q / max(|n . q|, 1)."""
    inner = p["skip"].shape[0]
    up = ln(x, p["norm"]) @ p["proj_up"]["kernel"]
    u, z = up[..., :inner], up[..., inner:]
    cv = silu(conv(u, p["conv_w"], p["conv_b"]))
    q, k, v = headwise(cv, p["qkv"]["q"]), headwise(cv, p["qkv"]["k"]), headwise(u, p["qkv"]["v"])
    g = p["gates"]
    i_pre = np.concatenate([q, k, v], -1) @ g["w_i"].T + g["b_i"]
    f_pre = np.concatenate([q, k, v], -1) @ g["w_f"].T + g["b_f"]
    dk = inner // heads
    out = np.zeros_like(q)
    for b in range(x.shape[0]):
        for hd in range(heads):
            s = slice(hd * dk, (hd + 1) * dk)
            C, n = np.zeros((dk, dk)), np.zeros(dk)
            for t in range(x.shape[1]):
                kt = k[b, t, s] / math.sqrt(dk)
                i, f = np.exp(i_pre[b, t, hd]), sigmoid(f_pre[b, t, hd])
                C = f * C + i * np.outer(v[b, t, s], kt)
                n = f * n + i * kt
                out[b, t, s] = C @ q[b, t, s] / max(abs(n @ q[b, t, s]), 1.0)
    h = (group_norm(out, p["outnorm"], heads) + p["skip"] * cv) * silu(z)
    return x + h @ p["proj_down"]["kernel"]


def slstm_block(p, x, heads):
    """Beck et al. (2024), Figure 9 and eqs. 8-13, unstabilised, head-wise recurrence."""
    normed = ln(x, p["norm"])
    cv = silu(conv(normed, p["conv_w"], p["conv_b"]))
    pr, rec = p["proj"], p["recurrent"]
    bi, bf, bz, bo = np.split(p["bias"], 4)
    h = c = n = np.zeros_like(x[:, 0])
    hs = []
    for t in range(x.shape[1]):
        i = np.exp(headwise(cv[:, t], pr["i"]) + recurrent_heads(h, rec[0]) + bi)
        f = sigmoid(headwise(cv[:, t], pr["f"]) + recurrent_heads(h, rec[1]) + bf)
        z = np.tanh(headwise(normed[:, t], pr["z"]) + recurrent_heads(h, rec[2]) + bz)
        o = sigmoid(headwise(normed[:, t], pr["o"]) + recurrent_heads(h, rec[3]) + bo)
        c, n = f * c + i * z, f * n + i
        h = o * c / n
        hs.append(h)
    x = x + group_norm(np.stack(hs, 1), p["group_norm"], heads)
    normed = ln(x, p["ffn_norm"])
    m = p["mlp"]
    return (
        x
        + (gelu_erf(normed @ m["gate"]["kernel"]) * (normed @ m["up"]["kernel"]))
        @ m["down"]["kernel"]
    )


def min_rnn(cell, p, xs):
    """Feng et al. (2024), Section 3: minGRU and minLSTM (normalised gates), from zero."""
    size = cell.hidden_size
    pre = xs @ p["w_ih"].T + p["b"]
    g = lambda x: np.where(x >= 0, x + 0.5, sigmoid(x))
    h, hs = np.zeros(xs.shape[:1] + (size,)), []
    for t in range(xs.shape[1]):
        if isinstance(cell, MinGRUCell):
            z, cand = sigmoid(pre[:, t, :size]), g(pre[:, t, size:])
            h = (1 - z) * h + z * cand
        else:
            f, i = sigmoid(pre[:, t, :size]), sigmoid(pre[:, t, size : 2 * size])
            h = f / (f + i) * h + i / (f + i) * g(pre[:, t, 2 * size :])
        hs.append(h)
    return np.stack(hs, 1)


def prenorm_block(p, x, cell):
    """x + W_out(cell(RMSNorm(x))), then x + GeGLU MLP of RMSNorm(x)."""
    x = x + dense(min_rnn(cell, p["cell"], rms(x, p["norm"])), p["out"])
    normed = rms(x, p["channel_norm"])
    m = p["mlp"]
    return x + dense(gelu_tanh(dense(normed, m["gate"])) * dense(normed, m["up"]), m["down"])


def minrnn_block(p, x, cell):
    """Feng et al.'s code (BorealisAI/minRNNs `Model`; lucidrains' conv and FeedForward):
    x + PW(DepthwiseConv(x)), x + W_out(cell(RMSNorm(x))), x + W_2 GELU(W_1 RMSNorm(x))."""
    if "conv_w" in p:
        x = x + dense(conv(x, p["conv_w"], p["conv_b"]), p["pointwise"])
    x = x + dense(min_rnn(cell, p["cell"], rms(x, p["norm"])), p["out"])
    m = p["mlp"]
    return x + dense(gelu_erf(dense(rms(x, p["channel_norm"]), m["up"])), m["down"])


def paper_stack(stack: BlockStack, params, x):
    for index, kind in enumerate(stack.kinds):
        p = params[f"block_{index}"]
        if kind == "hawk":
            x = hawk_block(p, x, stack.cell.c)
        elif kind == "mlstm":
            x = mlstm_block(p, x, stack.cell.num_heads)
        elif kind == "slstm":
            x = slstm_block(p, x, stack.block_cell(kind).num_heads)
        elif kind == "minrnn":
            x = minrnn_block(p, x, stack.cell)
        else:
            x = prenorm_block(p, x, stack.cell)
    final = ln if stack.block in ("mlstm", "slstm", "xlstm") else rms
    return final(x, params["final_norm"])


@pytest.mark.parametrize(
    "name",
    ["hawk", "slstm_1head", "xlstm", "prenorm_mingru", "prenorm_minlstm", "minrnn_mingru",
     "minrnn_minlstm"],
)  # fmt: skip
def test_each_block_equals_its_papers_equations(name: str) -> None:
    stack = make_stack(name)
    with jax.enable_x64(True):
        xs = features(0).astype(jnp.float64)
        params = jax.tree_util.tree_map(
            lambda x: jnp.asarray(x, jnp.float64), init_stack(stack, xs.astype(jnp.float32))
        )
        _, ys = apply(stack, {"params": params}, xs)
        expected = paper_stack(stack, jax.tree_util.tree_map(np.asarray, params), np.asarray(xs))
    np.testing.assert_allclose(np.asarray(ys), expected, rtol=1e-9, atol=1e-9)


def test_headwise_projection_and_causal_conv_match_their_loops() -> None:
    blocks = np.asarray(features(3, (3, 2, 4)))
    xs = np.asarray(features(4, (B, T, 6)))
    np.testing.assert_allclose(headwise_jax(jnp.asarray(xs), blocks), headwise(xs, blocks), 1e-5)
    w, b = np.asarray(features(5, (4, 6))), np.asarray(features(6, (6,)))
    ys, window = causal_conv(jnp.asarray(xs), jnp.asarray(w), jnp.asarray(b))
    np.testing.assert_allclose(ys, conv(xs, w, b), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(window, xs[:, -3:])


# ------------------------------------------------------------------ padding, resets, carries


@pytest.mark.parametrize("name", GRID)
def test_padding_is_invisible_and_padded_steps_are_zero(name: str) -> None:
    stack = make_stack(name)
    xs = features(1)
    params = {"params": init_stack(stack, xs)}
    short = 5
    garbage = xs.at[1, short:].set(100.0)  # what lies past a sequence's end must not matter
    carries, ys = apply(stack, params, garbage, lengths=jnp.array([T, short]))
    alone_carries, alone = apply(stack, params, xs[1:, :short])
    np.testing.assert_allclose(ys[1, :short], alone[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ys[1, short:], 0.0)
    for got, want in zip(
        jax.tree_util.tree_leaves(carries), jax.tree_util.tree_leaves(alone_carries), strict=True
    ):
        np.testing.assert_allclose(got[1], want[0], rtol=1e-5, atol=1e-5)
    _, full = apply(stack, params, xs[:1])
    np.testing.assert_allclose(ys[0], full[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", GRID)
def test_two_halves_with_the_carry_equal_one_run(name: str) -> None:
    stack = make_stack(name)
    xs = features(2)
    params = {"params": init_stack(stack, xs)}
    carries, ys = apply(stack, params, xs)
    first_carry, first = apply(stack, params, xs[:, :4])
    last_carry, second = apply(stack, params, xs[:, 4:], initial_carry=first_carry)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), ys, rtol=1e-5, atol=1e-5)
    for got, want in zip(
        jax.tree_util.tree_leaves(last_carry), jax.tree_util.tree_leaves(carries), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["hawk", "xlstm", "prenorm_mingru", "minrnn_mingru"])
def test_packed_sequences_never_mix_not_even_across_a_split(name: str) -> None:
    """A reset restarts the convolution's window too: the segment after it equals a run of its
    own, and a split whose carried window straddles the reset changes nothing."""
    stack = make_stack(name)
    xs = features(3)
    params = {"params": init_stack(stack, xs)}
    resets = jnp.zeros((B, T), bool).at[:, 3].set(True)
    _, ys = apply(stack, params, xs, resets=resets)
    _, head = apply(stack, params, xs[:, :3])
    _, tail = apply(stack, params, xs[:, 3:])
    np.testing.assert_allclose(ys[:, :3], head, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ys[:, 3:], tail, rtol=1e-5, atol=1e-5)
    carry, first = apply(stack, params, xs[:, :5], resets=resets[:, :5])  # window: x2 | x3 x4
    _, second = apply(stack, params, xs[:, 5:], resets=resets[:, 5:], initial_carry=carry)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), ys, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["hawk", "prenorm_minlstm", "minrnn_lstm"])
def test_language_model_token_by_token_equals_the_full_forward(name: str) -> None:
    kw = STACKS[name]
    layers = 2 if name == "xlstm" else 1
    model = LanguageModel(vocab_size=V, embed_dim=W, num_layers=layers, num_heads=HEADS, **kw)
    tokens = jax.random.randint(jax.random.PRNGKey(4), (B, 6), 0, V)
    variables = {"params": perturbed(init(model, tokens, model.zero_carry(B))["params"])}
    logits, carry = apply(model, variables, tokens)
    state, steps = model.zero_carry(B), []
    for t in range(tokens.shape[1]):
        step_logits, state = apply(model, variables, tokens[:, t : t + 1], state)
        steps.append(step_logits)
    np.testing.assert_allclose(jnp.concatenate(steps, 1), logits, rtol=1e-4, atol=1e-5)
    for got, want in zip(
        jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(carry), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # `generate` (jitted, the model a static argument) continues greedily as the full forward.
    generated = generate(model, variables, tokens[:, :3], 3, KEY, temperature=0.0)
    context = jnp.concatenate([tokens[:, :3], generated[:, :-1]], 1)
    again, _ = apply(model, variables, context)
    np.testing.assert_array_equal(jnp.argmax(again[:, 2:], -1), generated)


@pytest.mark.parametrize("name", GRID)
def test_gradients_are_finite_and_reach_every_parameter(name: str) -> None:
    kw = STACKS[name]
    layers = 2 if name == "xlstm" else 1
    model = SequenceClassifier(num_outputs=3, embed_dim=W, num_layers=layers, num_heads=HEADS, **kw)
    xs, lengths = features(5, (B, T, 3)), jnp.array([T, 4])
    params = perturbed(init(model, xs, lengths)["params"])
    loss = lambda p: jnp.sum(model.apply({"params": p}, xs, lengths) ** 2)
    grads = jax.jit(jax.grad(loss))(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), path
        assert np.any(g != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"


def test_dropout_recurrent_dropout_and_zoneout_act_only_when_training() -> None:
    model = SequenceClassifier(
        num_outputs=2, embed_dim=W, num_heads=HEADS, dropout=0.3,
        recurrent_dropout=0.2, zoneout=0.1, **STACKS["slstm"],
    )  # fmt: skip
    xs = features(6, (B, T, 3))
    variables = init(model, xs)
    evaluation = apply(model, variables, xs)
    rngs = {"dropout": jax.random.PRNGKey(7)}
    trained = apply(model, variables, xs, train=True, rngs=rngs)
    assert not np.allclose(trained, evaluation)
    np.testing.assert_array_equal(trained, apply(model, variables, xs, train=True, rngs=rngs))


# ------------------------------------------------------------------ construction


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(block="hawk", cell=RGLRUCell(8), bidirectional=True), "bidirectional"),
        (dict(block="mlstm", cell=LSTMCell(8)), "MLSTMCell"),
        (dict(block="slstm", cell=SLSTMCell(6, num_heads=2)), "cell.hidden_size=8"),
        (dict(block="xlstm", cell=MLSTMCell(16, num_heads=2)), "slstm_at"),
        (dict(block="hawk", cell=RGLRUCell(8), slstm_at=(0,)), "slstm_at"),
        (dict(block="hawk", cell=RGLRUCell(9)), "num_heads"),
        (dict(block="hawk", cell=RGLRUCell(8), conv_width=0), "conv_width"),
        (dict(block="transformer", cell=RGLRUCell(8)), "block"),
    ],
)
def test_impossible_blocks_stop_at_construction(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SequenceClassifier(num_outputs=2, embed_dim=W, num_heads=HEADS, num_layers=2, **fields)


def test_seq2seq_attention_refuses_a_width_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="attention=none"):
        Seq2Seq(output_size=1, embed_dim=W, attention="general", **STACKS["mlstm"])
    model = Seq2Seq(output_size=1, embed_dim=W, num_heads=HEADS, **STACKS["hawk"])
    source, decoder = features(8, (B, 6, 3)), features(9, (B, 4, 3))
    outputs = apply(model, init(model, source, None, decoder), source, None, decoder)
    assert outputs.shape == (B, 4, 1) and np.all(np.isfinite(outputs))


def test_a_config_error_names_the_field() -> None:
    cfg = test_train.compose_train(["model=hawk", "model.bidirectional=true"])
    with pytest.raises(ConfigError, match="bidirectional"):
        cli.build_task_and_model(cfg)


def test_the_plain_stack_is_unchanged_by_default() -> None:
    """`block: none` (every existing config): the same module tree, so old checkpoints load."""
    model = SequenceClassifier(num_outputs=2, cell=LSTMCell(4))
    params = model.init(KEY, features(0, (1, 3, 2)))["params"]
    assert set(params["stack"]) == {"layer_0"} and set(params) == {"stack", "head"}


def test_runs_saved_before_the_block_fields_still_resume() -> None:
    """A run directory saved without `model.block`, `conv_width`, `mlp_expansion`, `slstm_at`
    (all of them, before this module) compares equal to today's config of the same run."""
    current = cli.config_snapshot(test_train.compose_train([]))
    new = ("model.block", "model.conv_width", "model.mlp_expansion", "model.slstm_at")
    saved = {k: v for k, v in current.items() if k not in new}
    assert cli.compare_configs(saved, current) == ([], [])


# ------------------------------------------------------------------ the real runner

RUNS = [  # every block kind (mlstm, slstm: in the xlstm mix) through every model class
    ("hawk", "char_lm", []),
    ("xlstm", "sentiment", []),
    ("mingru_block", "copy", []),  # minrnn
    ("minlstm_block", "adding", ["model.block=prenorm"]),
    (  # attention reads the encoder's states (without it the last encoder block's output and
        # the final norm are unused: the decoder starts from the encoder's carries only)
        "lru_block",
        "ett",
        ["model.block=slstm", "cell@model.cell=slstm", "model.attention=dot"],
    ),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return test_train.make_tiny_data(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize(("model", "task", "extra"), RUNS)
def test_every_block_kind_trains_through_the_runner(
    tmp_path: Path, data_dir: Path, model: str, task: str, extra: list[str]
) -> None:
    steps = 40  # tiny batches: a few steps are noise, forty show the loss falling
    overrides = [
        f"model={model}",
        f"task={task}",
        f"trainer.steps={steps}",
        f"trainer.eval_every={steps}",
        f"trainer.checkpoint_every={steps}",
        "optim.learning_rate=0.01",
        *extra,
    ]
    results = test_train.run(tmp_path, overrides, data_dir)
    assert results["status"] == "completed"
    losses = test_train.train_losses(tmp_path)
    assert len(losses) == steps and np.all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.9 * np.mean(losses[:10]), losses
    final = test_train.saved_state(tmp_path)["params"]
    cfg = test_train.compose_train(
        test_train.FAST + test_train.TASK_OVERRIDES[task] + [f"data_dir={data_dir}", *overrides]
    )
    parts = cli.build(cfg)
    start = init_state(parts["task"], parts["model"], parts["optimizer"], cfg.seed, make_mesh())
    assert "block_0" in str(jax.tree_util.tree_structure(start["params"]))
    leaves = zip(
        jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(start["params"]), strict=True
    )
    unchanged = [i for i, (a, b) in enumerate(leaves) if np.array_equal(a, b)]
    assert not unchanged, f"{len(unchanged)} parameter leaves never changed"
