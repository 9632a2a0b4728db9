"""Contract tests generated from conf/cell/*.yaml: every cell obeys the same rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rnnlab import interop, kernels, recurrence
from rnnlab.cells import Cell, apply_cell, step
from rnnlab.cells.base import declared, with_recurrent_matrix
from tests.cell_configs import CELL_NAMES, build_cell

B, T, D, H = 2, 5, 3, 4


@pytest.fixture(scope="module", params=CELL_NAMES)
def setup(request):
    cell = build_cell(request.param, H)
    key_p, key_x, key_n = jax.random.split(jax.random.PRNGKey(0), 3)
    params = cell.init(key_p, D)
    # Non-trivial values for zero-initialised option params (peepholes, layer-norm biases).
    leaves, tree = jax.tree_util.tree_flatten(params)
    noise = jax.random.split(key_n, len(leaves))
    params = jax.tree_util.tree_unflatten(
        tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, noise, strict=True)]
    )
    xs = jax.random.normal(key_x, (B, T, D))
    return cell, params, xs


def python_loop(cell, params, xs, lengths=None):
    """Reference: the plain Python loop over `step` that the scan must equal."""
    carry = cell.initial_carry(xs.shape[0])
    projected = cell.project_inputs(params, xs)
    ys = []
    for t in range(xs.shape[1]):
        new, y = step(cell, params, carry, projected[:, t])
        if lengths is not None:
            valid = t < lengths  # [b], broadcast over each carry leaf's own trailing axes
            rows = lambda leaf, v=valid: v.reshape(v.shape + (1,) * (leaf.ndim - 1))  # noqa: E731
            new = jax.tree_util.tree_map(lambda n, o, r=rows: jnp.where(r(n), n, o), new, carry)
            y = jnp.where(rows(y), y, 0.0)
        carry = new
        ys.append(y)
    return carry, jnp.stack(ys, axis=1)


def assert_trees_close(a, b, atol=1e-5):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-5)


def test_unknown_cell_config_is_a_clear_error():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="lstmx"):
        build_cell("lstmx")
    with pytest.raises(Exception, match="no_such_field"):
        build_cell("lstm", no_such_field=1)


def test_is_hashable_cell(setup):
    cell, _, _ = setup
    assert isinstance(cell, Cell)
    hash(cell)
    with pytest.raises(AttributeError):
        cell.hidden_size = 7


def test_declared_capabilities_name_what_exists(setup):
    """What a cell declares (`rnnlab.cells.base`) is a native kernel kind, a `torch.nn` module and
    a `flax.linen` cell that `rnnlab.interop` can load; the references' own outputs are compared
    with the cell's in `tests/test_benchmark.py`, the kernel's in `tests/test_native_kernel.py`."""
    cell, _, _ = setup
    kind = declared(cell, "native_kernel")
    assert kind is None or kind in kernels.KINDS
    assert (kernels.cell_kind(cell) is None) == (kind is None)
    for capability, known in (
        ("torch_module", interop.TORCH_MODULES),
        ("flax_cell", tuple(interop.FLAX_GATES)),
    ):
        reference = declared(cell, capability)
        if reference is not None:
            name, kwargs = reference
            assert name in known and isinstance(kwargs, dict), (capability, reference)


def test_only_a_cells_own_class_declares_its_capabilities():
    """A subclass may change the math: it runs on the scan and loads no foreign weights until it
    declares again; a declaration that names nothing known is an error, not a silent fallback."""
    from rnnlab.cells import LSTMCell

    class Changed(LSTMCell):
        pass

    class Misspelt(LSTMCell):
        native_kernel = "lsmt"

    assert kernels.cell_kind(LSTMCell(H)) == kernels.LSTM
    assert kernels.cell_kind(Changed(H)) is None
    assert all(declared(Changed(H), c) is None for c in ("torch_module", "flax_cell"))
    with pytest.raises(ValueError, match="no PyTorch equivalent"):
        interop.params_from_torch(Changed(H), {})
    with pytest.raises(ValueError, match="no flax.linen equivalent"):
        interop.params_from_flax(Changed(H), {})
    with pytest.raises(ValueError, match="'lsmt', not a native kernel kind"):
        kernels.cell_kind(Misspelt(H))


def test_shapes(setup):
    cell, params, xs = setup
    projected = cell.project_inputs(params, xs)
    assert projected.shape[:2] == (B, T)
    carry, ys = recurrence.run(cell, params, xs)
    assert ys.shape == (B, T, cell.output_size)
    assert jax.tree_util.tree_structure(carry) == jax.tree_util.tree_structure(
        cell.initial_carry(B)
    )
    assert cell.feedback(carry).shape == (B, cell.output_size)


def test_pointwise_does_not_read_layer_matmul_params(setup):
    cell, params, xs = setup
    small = {k: v for k, v in params.items() if k not in recurrence.LAYER_OWNED}
    carry = cell.initial_carry(B)
    recurrent = cell.feedback(carry) @ with_recurrent_matrix(cell, params)["w_hh"].T
    cell.pointwise(small, carry, cell.project_inputs(params, xs)[:, 0], recurrent)


@pytest.mark.parametrize("with_lengths", [False, True])
def test_scan_equals_python_loop(setup, with_lengths):
    cell, params, xs = setup
    lengths = jnp.array([T, 2]) if with_lengths else None
    expected = python_loop(cell, params, xs, lengths)
    assert_trees_close(recurrence.run(cell, params, xs, lengths=lengths), expected)


def test_apply_cell_matches_first_step(setup):
    cell, params, xs = setup
    carry, y = apply_cell(cell, params, cell.initial_carry(B), xs[:, 0])
    _, ys = recurrence.run(cell, params, xs)
    np.testing.assert_allclose(y, ys[:, 0], atol=1e-6)


def test_batched_equals_vmap(setup):
    cell, params, xs = setup
    single = lambda x: recurrence.run(cell, params, x[None])  # noqa: E731
    carry_v, ys_v = jax.vmap(single)(xs)
    carry, ys = recurrence.run(cell, params, xs)
    np.testing.assert_allclose(ys_v[:, 0], ys, atol=1e-6)
    assert_trees_close(jax.tree_util.tree_map(lambda c: c[:, 0], carry_v), carry, atol=1e-6)


def test_padding_never_changes_a_result(setup):
    cell, params, xs = setup
    lengths = jnp.array([T, 3])
    padded = xs.at[1, 3:].set(100.0)
    carry, ys = recurrence.run(cell, params, padded, lengths=lengths)
    alone_carry, alone_ys = recurrence.run(cell, params, xs[1:2, :3])
    np.testing.assert_allclose(ys[1, :3], alone_ys[0], atol=1e-6)
    np.testing.assert_array_equal(ys[1, 3:], 0.0)
    assert_trees_close(jax.tree_util.tree_map(lambda c: c[1:2], carry), alone_carry, atol=1e-6)


def test_carry_dtype_preserved(setup):
    cell, params, xs = setup
    params16 = jax.tree_util.tree_map(lambda p: p.astype(jnp.bfloat16), params)
    carry, ys = recurrence.run(cell, params16, xs.astype(jnp.bfloat16), vjp="autodiff")
    assert ys.dtype == jnp.bfloat16
    assert all(c.dtype == jnp.bfloat16 for c in jax.tree_util.tree_leaves(carry))


def test_jit_grad_finite_and_custom_equals_autodiff(setup):
    cell, params, xs = setup
    lengths = jnp.array([T, 3])

    def loss(p, x, vjp):
        carry, ys = recurrence.run(cell, p, x, lengths=lengths, vjp=vjp)
        final = sum(jnp.sum(jnp.sin(c)) for c in jax.tree_util.tree_leaves(carry))
        return jnp.sum(ys**2) + final

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    custom, auto = grad(params, xs, "custom"), grad(params, xs, "autodiff")
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(custom))
    assert_trees_close(custom, auto)


def test_check_grads_numerical(setup):
    cell, params, xs = setup
    lengths = jnp.array([T, 3])
    with jax.enable_x64(True):
        params64 = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float64), params)
        x64 = jnp.asarray(xs, jnp.float64)
        for vjp, modes in (("autodiff", ("fwd", "rev")), ("custom", ("rev",))):
            fn = lambda p, x, v=vjp: recurrence.run(  # noqa: E731
                cell, p, x, lengths=lengths, vjp=v
            )[1]
            check_grads(  # jitted: eager dispatch of the scan's ops dominated this test
                jax.jit(fn), (params64, x64), order=1, modes=modes, atol=1e-5, rtol=1e-5
            )
