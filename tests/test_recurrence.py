"""Layer semantics: direction, packing resets, truncated BPTT, dropout, zoneout, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab import recurrence
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell
from rnnlab.cells.base import with_recurrent_matrix
from rnnlab.recurrence import RecurrentOptions
from tests.cell_configs import CELL_NAMES, build_cell

B, T, D, H = 2, 6, 3, 4


def leaves_close(a, b, atol=1e-5):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-5)


def rows(carry, index):
    return jax.tree_util.tree_map(lambda c: c[index], carry)


@pytest.fixture(params=CELL_NAMES)
def setup(request):
    """Every cell of `conf/cell/` (a projection of 3 units where the cell has one)."""
    cell = build_cell(request.param, H)
    seed = CELL_NAMES.index(request.param)
    params = cell.init(jax.random.PRNGKey(seed), D)
    xs = jax.random.normal(jax.random.PRNGKey(10 + seed), (B, T, D))
    return cell, params, xs


def test_reverse_padded_is_within_length_and_an_involution():
    xs = jnp.arange(2 * 5, dtype=jnp.float32).reshape(2, 5)[..., None]
    lengths = jnp.array([5, 3])
    rev = recurrence.reverse_padded(xs, lengths)
    np.testing.assert_array_equal(rev[0, :, 0], [4, 3, 2, 1, 0])
    # Padding stays after the sequence (flax's `flip_sequences` reverses it among itself).
    np.testing.assert_array_equal(rev[1, :, 0], [7, 6, 5, 9, 8])
    np.testing.assert_array_equal(recurrence.reverse_padded(rev, lengths), xs)


def test_reverse_equals_running_the_flipped_sequence(setup):
    cell, params, xs = setup
    lengths = jnp.array([T, 4])
    carry, ys = recurrence.run(cell, params, xs, lengths=lengths, reverse=True)
    alone_carry, alone = recurrence.run(cell, params, jnp.flip(xs[1:2, :4], axis=1))
    np.testing.assert_allclose(ys[1, :4], jnp.flip(alone[0], axis=0), atol=1e-6)
    np.testing.assert_array_equal(ys[1, 4:], 0.0)
    leaves_close(rows(carry, slice(1, 2)), alone_carry)


@pytest.mark.parametrize("reverse", [False, True])
def test_resets_equal_separate_sequences(setup, reverse):
    """Two sequences packed in one row with a reset flag equal the two run alone."""
    cell, params, xs = setup
    split = 2
    resets = jnp.zeros((B, T), bool).at[:, split].set(True)
    _, packed = recurrence.run(cell, params, xs, resets=resets, reverse=reverse)
    _, first = recurrence.run(cell, params, xs[:, :split], reverse=reverse)
    _, second = recurrence.run(cell, params, xs[:, split:], reverse=reverse)
    np.testing.assert_allclose(packed, jnp.concatenate([first, second], axis=1), atol=1e-6)


def test_truncated_bptt_carry_continues_the_sequence(setup):
    cell, params, xs = setup
    whole_carry, whole = recurrence.run(cell, params, xs)
    carry, first = recurrence.run(cell, params, xs[:, :3])
    carry = jax.lax.stop_gradient(carry)
    last_carry, second = recurrence.run(cell, params, xs[:, 3:], initial_carry=carry)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), whole, atol=1e-6)
    leaves_close(last_carry, whole_carry)


def test_unroll_does_not_change_results(setup):
    cell, params, xs = setup
    leaves_close(recurrence.run(cell, params, xs, unroll=3), recurrence.run(cell, params, xs))


def test_custom_backward_equals_autodiff_with_every_option(setup):
    cell, params, xs = setup
    lengths = jnp.array([T, 4])
    resets = jnp.zeros((B, T), bool).at[0, 2].set(True)
    key = jax.random.PRNGKey(3)
    options = {
        v: RecurrentOptions(recurrent_dropout=0.3, zoneout=0.2, vjp=v) for v in recurrence.VJPS
    }

    def loss(params, xs, vjp):
        carry, ys = recurrence.run_layer(
            cell,
            params,
            xs,
            bidirectional=True,
            lengths=lengths,
            resets=resets,
            options=options[vjp],
            key=key,
        )
        return jnp.sum(jnp.tanh(ys)) + sum(jnp.sum(c**2) for c in jax.tree_util.tree_leaves(carry))

    bi_params = {"forward": params, "backward": jax.tree_util.tree_map(lambda p: -p, params)}
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    leaves_close(grad(bi_params, xs, "custom"), grad(bi_params, xs, "autodiff"))


@pytest.mark.parametrize("vjp", recurrence.VJPS)
def test_per_step_projection_equals_hoisted(setup, vjp):
    cell, params, xs = setup
    lengths = jnp.array([T, 4])

    def loss(params, xs, input_projection):
        carry, ys = recurrence.run(
            cell,
            params,
            xs,
            lengths=lengths,
            reverse=True,
            vjp=vjp,
            input_projection=input_projection,
        )
        return jnp.sum(jnp.tanh(ys)) + sum(jnp.sum(c**2) for c in jax.tree_util.tree_leaves(carry))

    grad = jax.grad(loss, argnums=(0, 1))
    leaves_close(grad(params, xs, "per_step"), grad(params, xs, "hoisted"))


def test_bidirectional_merge_modes(setup):
    cell, params, xs = setup
    bi = {"forward": params, "backward": params}
    _, concat = recurrence.run_layer(cell, bi, xs, bidirectional=True)
    _, summed = recurrence.run_layer(cell, bi, xs, bidirectional=True, merge="sum")
    o = cell.output_size
    assert concat.shape == (B, T, 2 * o)
    np.testing.assert_allclose(summed, concat[..., :o] + concat[..., o:], atol=1e-6)


def test_recurrent_dropout_mask_is_one_per_sequence():
    mask = recurrence.recurrent_dropout_mask(jax.random.PRNGKey(0), 0.5, (64, 32), jnp.float32)
    assert set(np.unique(np.asarray(mask))) <= {0.0, 2.0}
    assert 0.35 < float(jnp.mean(mask > 0)) < 0.65


def test_zero_recurrent_mask_cuts_the_recurrent_path(setup):
    cell, params, xs = setup
    mask = jnp.zeros((B, cell.output_size))
    _, masked = recurrence.run(cell, params, xs, recurrent_mask=mask)
    full = with_recurrent_matrix(cell, params)  # a linear recurrence has none of its own
    no_recurrence = dict(full, w_hh=jnp.zeros_like(full["w_hh"]))
    _, expected = recurrence.run(cell, no_recurrence, xs)
    np.testing.assert_allclose(masked, expected, atol=1e-6)


def test_zoneout_rate_one_keeps_the_initial_state(setup):
    cell, params, xs = setup
    keep = recurrence.zoneout_keep(jax.random.PRNGKey(0), 1.0, cell.initial_carry(B), T)
    carry, _ = recurrence.run(cell, params, xs, zoneout_keep=keep)
    leaves_close(carry, cell.initial_carry(B))


def test_zoneout_eval_uses_the_expectation(setup):
    cell, params, xs = setup
    options = RecurrentOptions(zoneout=0.25)
    a = recurrence.run_layer(cell, params, xs, options=options)
    b = recurrence.run_layer(cell, params, xs, options=options)
    leaves_close(a, b)
    plain = recurrence.run_layer(cell, params, xs)
    assert not np.allclose(a[1], plain[1])


def test_stack_dropout_only_in_training(setup):
    cell, params, xs = setup
    stack = recurrence.init_stack(cell, jax.random.PRNGKey(0), D, num_layers=2)
    options = RecurrentOptions(dropout=0.5)
    _, eval_a = recurrence.run_stack(cell, stack, xs, options=options)
    _, eval_plain = recurrence.run_stack(cell, stack, xs)
    np.testing.assert_array_equal(eval_a, eval_plain)
    _, train_a = recurrence.run_stack(cell, stack, xs, options=options, key=jax.random.PRNGKey(1))
    _, train_b = recurrence.run_stack(cell, stack, xs, options=options, key=jax.random.PRNGKey(2))
    assert not np.allclose(train_a, eval_a) and not np.allclose(train_a, train_b)


def test_init_stack_sizes_follow_the_merge_mode():
    cell = GRUCell(H)
    for merge, width in (("concat", 2 * H), ("sum", H)):
        stack = recurrence.init_stack(cell, jax.random.PRNGKey(0), D, 2, True, merge)
        assert stack[1]["forward"]["w_ih"].shape == (3 * H, width)
        _, ys = recurrence.run_stack(
            cell, stack, jnp.ones((B, T, D)), bidirectional=True, merge=merge
        )
        assert ys.shape == (B, T, width)


def test_zoneout_output_is_the_zoned_out_state(setup):
    cell, params, xs = setup
    carry, ys = recurrence.run_layer(cell, params, xs, options=RecurrentOptions(zoneout=0.3))
    np.testing.assert_allclose(ys[:, -1], cell.feedback(carry), atol=1e-6)


def test_whole_layer_jits():
    cell = LSTMCell(H)
    stack = recurrence.init_stack(cell, jax.random.PRNGKey(0), D, num_layers=2, bidirectional=True)
    fn = jax.jit(lambda p, x, n: recurrence.run_stack(cell, p, x, bidirectional=True, lengths=n)[1])
    xs = jnp.ones((B, T, D))
    assert fn(stack, xs, jnp.array([T, 2])).shape == (B, T, 2 * H)


@pytest.mark.parametrize(
    "xs_shape,lengths,message",
    [
        ((T, D), None, "rank 3"),
        ((B, T, D + 1), None, "input_size"),
        ((B, T, D), [T + 1, 1], "<= the time axis"),
        ((B, T, D), [-1, 1], ">= 0"),
        ((B, T, D), [1.0, 2.0], "integers"),
        ((B, T, D), [1, 2, 3], "shape"),
    ],
)
def test_bad_input_is_a_clear_error(xs_shape, lengths, message):
    cell = LSTMCell(H)
    params = cell.init(jax.random.PRNGKey(0), D)
    lengths = None if lengths is None else jnp.asarray(lengths)
    with pytest.raises(ValueError, match=message):
        recurrence.run(cell, params, jnp.ones(xs_shape), lengths=lengths)


def test_bad_options_are_clear_errors():
    cell = LSTMCell(H)
    params = cell.init(jax.random.PRNGKey(0), D)
    with pytest.raises(ValueError, match="vjp"):
        recurrence.run(cell, params, jnp.ones((B, T, D)), vjp="magic")
    with pytest.raises(ValueError, match="input_projection"):
        recurrence.run(cell, params, jnp.ones((B, T, D)), input_projection="lazy")
    with pytest.raises(ValueError, match="merge"):
        recurrence.run_layer(cell, params, jnp.ones((B, T, D)), merge="avg")
    with pytest.raises(ValueError, match="proj_size"):
        LSTMCell(4, proj_size=4)
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        GRUCell(0)
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        ElmanCell("64")
    with pytest.raises(ValueError, match="initializer"):
        LSTMCell(4, input_init="nope").init(jax.random.PRNGKey(0), 3)
