"""The NNX modules (`rnnlab.nnx`): they train, follow NNX's train/eval convention, and compute
bit for bit what the linen `rnnlab.nn.RecurrentStack` computes with the same params."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rnnlab import recurrence
from rnnlab.data.synthetic import adding_batch
from rnnlab.nn import RecurrentStack as LinenStack
from rnnlab.nnx import RecurrentLayer, RecurrentStack
from tests.cell_configs import build_cell

B, T, D, H = 3, 6, 2, 5
LENGTHS = jnp.array([6, 4, 1])
REGULARISED = recurrence.RecurrentOptions(dropout=0.3, recurrent_dropout=0.2, zoneout=0.1)


class AddingRegressor(nnx.Module):
    """A recurrent stack and a linear readout of its last step: `[b, t, 2] -> [b, 1]`."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        cell = build_cell("lstm", 8)
        self.stack = RecurrentStack(cell, 2, 2, options=REGULARISED, rngs=rngs)
        self.readout = nnx.Linear(self.stack.output_size, 1, rngs=rngs)

    def __call__(self, xs: jax.Array) -> jax.Array:
        _, ys = self.stack(xs)
        return self.readout(ys[:, -1])


def _mse(model: AddingRegressor, batch: dict[str, jax.Array]) -> jax.Array:
    return jnp.mean(jnp.square(model(batch["inputs"]) - batch["targets"]))


def _leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def test_nnx_model_trains_with_optax():
    model = AddingRegressor(rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)
    before = jax.tree_util.tree_map(np.asarray, nnx.state(model, nnx.Param))
    held_out = {k: jnp.asarray(v) for k, v in adding_batch(0, 0, 32, 8, stream=1).items()}

    @nnx.jit
    def train_step(model, optimizer, batch):
        loss, grads = nnx.value_and_grad(_mse)(model, batch)
        optimizer.update(model, grads)
        return loss

    model.eval()
    first = float(_mse(model, held_out))
    model.train()
    losses = [
        float(train_step(model, optimizer, {k: jnp.asarray(v) for k, v in batch.items()}))
        for batch in (adding_batch(0, step, 16, 8) for step in range(12))
    ]
    model.eval()
    last = float(_mse(model, held_out))
    assert np.all(np.isfinite(losses))
    assert last < 0.5 * first, (first, last)
    after = nnx.state(model, nnx.Param)
    for old, new in zip(_leaves(before), _leaves(after), strict=True):
        assert not np.array_equal(old, np.asarray(new))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_nnx_stack_equals_linen_stack_bit_for_bit(bidirectional):
    cell = build_cell("lstm", H)
    stack = RecurrentStack(
        cell, D, 2, bidirectional=bidirectional, options=REGULARISED, rngs=nnx.Rngs(1)
    )
    stack.eval()  # zoneout by its expectation, no dropout: the same in both
    linen = LinenStack(cell, num_layers=2, bidirectional=bidirectional, options=REGULARISED)
    names = [recurrence.layer_name(i) for i in range(2)]
    variables = {"params": dict(zip(names, stack.stack_params(), strict=True))}
    xs = jax.random.normal(jax.random.PRNGKey(2), (B, T, D))
    weights = jax.random.normal(jax.random.PRNGKey(3), (B, T, stack.output_size))

    def linen_loss(variables, xs):
        carries, ys = linen.apply(variables, xs, LENGTHS)
        return jnp.sum(ys * weights), (carries, ys)

    def nnx_loss(stack, xs):
        carries, ys = stack(xs, lengths=LENGTHS)
        return jnp.sum(ys * weights), (carries, ys)

    (loss_l, out_l), grads_l = jax.jit(jax.value_and_grad(linen_loss, has_aux=True))(variables, xs)
    (loss_n, out_n), grads_n = nnx.jit(nnx.value_and_grad(nnx_loss, has_aux=True))(stack, xs)
    assert float(loss_l) == float(loss_n)
    for ours, theirs in zip(_leaves(out_n), _leaves(out_l), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    layers = nnx.to_pure_dict(grads_n)["layers"]
    grads_n = [layers[i] for i in range(2)]
    grads_l = [grads_l["params"][name] for name in names]
    assert jax.tree_util.tree_structure(grads_n) == jax.tree_util.tree_structure(grads_l)
    for ours, theirs in zip(_leaves(grads_n), _leaves(grads_l), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_train_mode_draws_masks_and_eval_mode_is_deterministic():
    cell = build_cell("gru", H)
    stack = RecurrentStack(cell, D, 2, options=REGULARISED, rngs=nnx.Rngs(0))
    xs = jnp.ones((B, T, D))
    call = nnx.jit(lambda module, xs: module(xs)[1])
    first, second = call(stack, xs), call(stack, xs)  # training: a fresh key per call
    assert not np.array_equal(first, second)
    stack.eval()
    evaluated = call(stack, xs)
    expected = recurrence.run_stack(cell, stack.stack_params(), xs, options=REGULARISED)[1]
    np.testing.assert_array_equal(evaluated, expected)  # key=None: evaluation
    stack.train()
    np.testing.assert_array_equal(call(nnx.view(stack, deterministic=True), xs), evaluated)
    assert not stack.deterministic
    # Without any rate no dropout stream is needed (a params-only Rngs suffices).
    plain = RecurrentStack(cell, D, rngs=nnx.Rngs(params=0))
    np.testing.assert_array_equal(call(plain, xs), call(plain, xs))


def test_load_params_and_single_layer():
    cell = build_cell("lstmp", H)
    stack = RecurrentStack(cell, D, 2, bidirectional=True, rngs=nnx.Rngs(0))
    other = recurrence.init_stack(cell, jax.random.PRNGKey(5), D, 2, bidirectional=True)
    stack.load_params(other)
    for ours, theirs in zip(_leaves(stack.stack_params()), _leaves(other), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(ValueError, match="do not fit this stack"):
        stack.load_params(recurrence.init_stack(cell, jax.random.PRNGKey(5), D + 1, 2, True))

    layer = RecurrentLayer(cell, D, bidirectional=True, rngs=nnx.Rngs(0))
    layer.load_params(other[0])
    xs = jax.random.normal(jax.random.PRNGKey(6), (B, T, D))
    carry, ys = layer(xs, lengths=LENGTHS)
    carry_ref, ys_ref = recurrence.run_layer(
        cell, other[0], xs, bidirectional=True, lengths=LENGTHS
    )
    np.testing.assert_array_equal(ys, ys_ref)
    for ours, theirs in zip(_leaves(carry), _leaves(carry_ref), strict=True):
        np.testing.assert_array_equal(ours, theirs)
