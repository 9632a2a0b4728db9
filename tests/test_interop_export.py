"""rnnlab -> PyTorch: exported weights and converted states run in `torch.nn.LSTM`/`GRU`/`RNN` as
in rnnlab, and every conversion round-trips exactly (`rnnlab.interop`).

The cells are those of `conf/cell/` that declare a `torch_module`; PyTorch is a test-only
dependency, so these tests skip where it is absent."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab import interop, recurrence
from tests.cell_configs import build_cell, cells_declaring, cells_lacking

torch = pytest.importorskip("torch")

B, T, D, H = 3, 6, 3, 5
TORCH_CELLS = cells_declaring("torch_module", H)
OTHER_CELLS = cells_lacking("torch_module", H)
STACKS = [(1, False), (2, False), (2, True)]
RUN_STACKS = [(1, False), (2, True)]
"""Torch runs: one layer, and two bidirectional ones (layer and direction indexing both)."""


def _leaves_equal(ours, theirs) -> None:
    """Same pytree structure and every leaf bit for bit."""
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(theirs)
    for a, b in zip(
        jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _random_stack(cell, key, num_layers, bidirectional):
    """`init_stack` params with every leaf perturbed, so zero biases (and GRU's `b_hn`) cannot
    hide a mapping error."""
    params = recurrence.init_stack(cell, key, D, num_layers, bidirectional)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    noisy = [x + 0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def _random_carries(cell, key, num_layers, bidirectional):
    """Nonzero initial carries in `run_stack`'s layout."""
    zero = cell.initial_carry(B)
    leaves, treedef = jax.tree_util.tree_flatten(zero)

    def one(k):
        keys = jax.random.split(k, len(leaves))
        drawn = [jax.random.normal(kk, x.shape) for kk, x in zip(keys, leaves, strict=True)]
        return jax.tree_util.tree_unflatten(treedef, drawn)

    keys = jax.random.split(key, 2 * num_layers)
    if bidirectional:
        return [(one(keys[2 * i]), one(keys[2 * i + 1])) for i in range(num_layers)]
    return [one(keys[i]) for i in range(num_layers)]


def _tensors(state):
    return (
        tuple(map(torch.from_numpy, state))
        if isinstance(state, tuple)
        else (torch.from_numpy(state))
    )


@pytest.mark.parametrize("num_layers,bidirectional", RUN_STACKS)
@pytest.mark.parametrize("cell_name", TORCH_CELLS)
def test_exported_stack_runs_in_torch_as_in_rnnlab(cell_name, num_layers, bidirectional):
    cell = build_cell(cell_name, H)
    key = jax.random.PRNGKey(TORCH_CELLS.index(cell_name))
    params = _random_stack(cell, key, num_layers, bidirectional)
    carries0 = _random_carries(cell, jax.random.fold_in(key, 2), num_layers, bidirectional)
    xs = jax.random.normal(jax.random.fold_in(key, 3), (B, T, D))

    name, kwargs = interop.torch_module_args(cell, D, num_layers, bidirectional)
    module = getattr(torch.nn, name)(**kwargs, batch_first=True)
    state_dict = interop.stack_to_torch(cell, params, bidirectional)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)
    h0 = interop.carry_to_torch(cell, carries0, bidirectional)
    with torch.no_grad():
        out_t, state_t = module(torch.tensor(np.asarray(xs)), _tensors(h0))

    carries, ys = recurrence.run_stack(
        cell, params, xs, bidirectional=bidirectional, initial_carry=carries0
    )
    np.testing.assert_allclose(ys, out_t.numpy(), atol=1e-5)
    theirs = jax.tree_util.tree_map(lambda t: t.numpy(), state_t)
    ours = interop.carry_to_torch(cell, carries, bidirectional)
    for a, b in zip(
        jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-5)
    back = interop.carry_from_torch(cell, state_t, bidirectional)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(carries)
    for a, b in zip(
        jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(carries), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("num_layers,bidirectional", STACKS)
@pytest.mark.parametrize("cell_name", TORCH_CELLS)
def test_export_then_load_gives_the_params_back(cell_name, num_layers, bidirectional):
    cell = build_cell(cell_name, H)
    params = _random_stack(cell, jax.random.PRNGKey(7), num_layers, bidirectional)
    state_dict = interop.stack_to_torch(cell, params, bidirectional)
    _leaves_equal(interop.stack_from_torch(cell, state_dict, num_layers, bidirectional), params)


@pytest.mark.parametrize("num_layers,bidirectional", STACKS)
@pytest.mark.parametrize("cell_name", TORCH_CELLS)
def test_carry_conversion_round_trips(cell_name, num_layers, bidirectional):
    cell = build_cell(cell_name, H)
    carries = _random_carries(cell, jax.random.PRNGKey(3), num_layers, bidirectional)
    state = interop.carry_to_torch(cell, carries, bidirectional)
    back = interop.carry_from_torch(cell, state, bidirectional)
    _leaves_equal(back, carries)
    again = interop.carry_to_torch(cell, back, bidirectional)
    _leaves_equal(again, state)
    dirs = 2 if bidirectional else 1
    h = state[0] if isinstance(state, tuple) else state
    assert h.shape == (num_layers * dirs, B, cell.output_size)


@pytest.mark.parametrize("cell_name", OTHER_CELLS)
def test_cells_without_a_torch_module_refuse_export(cell_name):
    cell = build_cell(cell_name, H)
    params = recurrence.init_stack(cell, jax.random.PRNGKey(0), D)
    with pytest.raises(ValueError, match="torch_module"):
        interop.stack_to_torch(cell, params)
    with pytest.raises(ValueError, match="torch_module"):
        interop.carry_to_torch(cell, [cell.initial_carry(B)])


def test_export_refuses_what_torch_cannot_hold():
    cell = build_cell(TORCH_CELLS[0], H)
    summed = recurrence.init_stack(cell, jax.random.PRNGKey(0), D, 2, True, merge="sum")
    with pytest.raises(ValueError, match='merge="sum"'):
        interop.stack_to_torch(cell, summed, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional=True"):
        interop.stack_to_torch(cell, summed, bidirectional=False)
    one = [cell.initial_carry(B)]
    with pytest.raises(ValueError, match="forward"):
        interop.carry_to_torch(cell, one, bidirectional=True)
    state = interop.carry_to_torch(cell, one)
    with pytest.raises(ValueError, match="layers\\*2"):
        interop.carry_from_torch(cell, state, bidirectional=True)
    wrong_width = jax.tree_util.tree_map(lambda a: jnp.concatenate([a, a], axis=-1), state)
    with pytest.raises(ValueError, match="got shape"):
        interop.carry_from_torch(cell, wrong_width)
