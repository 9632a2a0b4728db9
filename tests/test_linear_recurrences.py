"""Linear recurrences (cells declaring `linear_recurrence`, found in conf/cell/): the associative
scan equals the sequential scan with every layer option, and each cell equals its paper's
equations written as a plain loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rnnlab.cells.minimal import MinGRUCell, MinLSTMCell
from rnnlab.cells.rglru import RGLRUCell
from rnnlab.errors import ConfigError
from rnnlab.recurrence import RecurrentOptions, backend_of, run, zoneout_keep
from rnnlab.recurrence.associative import combine
from tests.cell_configs import build_cell, cells_declaring

LINEAR = cells_declaring("linear_recurrence")
B, T, D, H = 4, 9, 3, 5
LENGTHS = np.array([9, 5, 0, 3])
RESETS = np.zeros((B, T), np.float32)
RESETS[0, 4] = RESETS[1, 2] = RESETS[3, 1] = 1.0  # packed segments, one inside a padded row


def test_linear_cells_are_discovered() -> None:
    assert {"mingru", "minlstm", "rglru"} <= set(LINEAR)


def _inputs(cell, dtype):
    k_params, k_x, k_h, k_z = jax.random.split(jax.random.PRNGKey(0), 4)
    params = jax.tree_util.tree_map(lambda p: p.astype(dtype), cell.init(k_params, D))
    xs = jax.random.normal(k_x, (B, T, D), dtype)
    h0 = jax.random.normal(k_h, (B, H), dtype)
    keep = zoneout_keep(k_z, 0.3, h0, T)
    return params, xs, h0, keep


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", LINEAR)
def test_associative_scan_equals_the_sequential_scan(name: str, reverse: bool, dtype) -> None:
    """Outputs, final carry and every gradient, with lengths (one empty sequence), packed
    resets, an initial carry (truncated BPTT) and zoneout masks, in both directions."""
    cell = build_cell(name, H)
    with jax.enable_x64(dtype == jnp.float64):
        params, xs, h0, keep = _inputs(cell, dtype)

        def loss(params, xs, h0, backend):
            carry, ys = run(
                cell, params, xs, lengths=jnp.asarray(LENGTHS), resets=jnp.asarray(RESETS),
                initial_carry=h0, reverse=reverse, zoneout_keep=keep, backend=backend,
            )  # fmt: skip
            weights = jnp.arange(ys.size, dtype=dtype).reshape(ys.shape) / ys.size
            return jnp.sum(ys * weights) + jnp.sum(jnp.sin(carry)), (carry, ys)

        grad = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)
        (g_seq, (c_seq, y_seq)), (g_par, (c_par, y_par)) = (
            grad(params, xs, h0, "xla"),
            grad(params, xs, h0, "associative"),
        )
    tol = {"rtol": 2e-5, "atol": 2e-6} if dtype == jnp.float32 else {"rtol": 1e-12, "atol": 1e-13}
    np.testing.assert_allclose(y_par, y_seq, **tol)
    np.testing.assert_allclose(c_par, c_seq, **tol)
    assert not np.any(y_par[2]) and np.allclose(c_par[2], h0[2])  # empty sequence: h0 kept
    for a, b in zip(
        jax.tree_util.tree_leaves(g_par), jax.tree_util.tree_leaves(g_seq), strict=True
    ):
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("name", LINEAR)
def test_associative_gradients_match_finite_differences_in_float64(name: str) -> None:
    cell = build_cell(name, H)
    with jax.enable_x64(True):
        params, xs, h0, _ = _inputs(cell, jnp.float64)

        def out(params, xs):
            carry, ys = run(cell, params, xs, lengths=jnp.asarray(LENGTHS), backend="associative")
            return jnp.sum(ys**2) + jnp.sum(carry)

        check_grads(out, (params, xs), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _g(x):
    return np.where(x >= 0, x + 0.5, _sigmoid(x))


def paper_min_gru(w, b, xs, h):
    """Feng et al. (2024), Section 3.1 and Appendix B, one step at a time: `w: [2h, d]`."""
    ys = []
    w_z, w_h = np.split(w, 2)
    b_z, b_h = np.split(b, 2)
    for x in np.moveaxis(xs, 1, 0):
        z = _sigmoid(x @ w_z.T + b_z)
        h_tilde = _g(x @ w_h.T + b_h)
        h = (1 - z) * h + z * h_tilde
        ys.append(h)
    return h, np.stack(ys, 1)


def paper_min_lstm(w, b, xs, h):
    """Feng et al. (2024), Section 3.2 (normalised gates) and Appendix B: `w: [3h, d]`."""
    ys = []
    w_f, w_i, w_h = np.split(w, 3)
    b_f, b_i, b_h = np.split(b, 3)
    for x in np.moveaxis(xs, 1, 0):
        f, i = _sigmoid(x @ w_f.T + b_f), _sigmoid(x @ w_i.T + b_i)
        f, i = f / (f + i), i / (f + i)
        h = f * h + i * _g(x @ w_h.T + b_h)
        ys.append(h)
    return h, np.stack(ys, 1)


def paper_rg_lru(w, b, xs, h, a_param, c=8.0):
    """De et al. (2024), Section 2.4 eqs. 1-4 with a = sigma(-Lambda), on u_t = W_u x_t."""
    ys = []
    w_a, w_x, w_u = np.split(w, 3)
    b_a, b_x, b_u = np.split(b, 3)
    a = _sigmoid(-a_param)
    for x in np.moveaxis(xs, 1, 0):
        r, i = _sigmoid(x @ w_a.T + b_a), _sigmoid(x @ w_x.T + b_x)
        a_t = a ** (c * r)
        h = a_t * h + np.sqrt(1 - a_t**2) * (i * (x @ w_u.T + b_u))
        ys.append(h)
    return h, np.stack(ys, 1)


@pytest.mark.parametrize(
    ("cell", "paper"),
    [
        (MinGRUCell(H), paper_min_gru),
        (MinLSTMCell(H), paper_min_lstm),
        (RGLRUCell(H), paper_rg_lru),
    ],
)
@pytest.mark.parametrize("backend", ["xla", "associative"])
def test_cells_equal_the_papers_equations(cell, paper, backend: str) -> None:
    with jax.enable_x64(True):
        params, xs, h0, _ = _inputs(cell, jnp.float64)
        carry, ys = run(cell, params, xs, initial_carry=h0, backend=backend)
    numpy = {k: np.asarray(v) for k, v in params.items()}
    want_carry, want_ys = paper(
        numpy.pop("w_ih"), numpy.pop("b"), np.asarray(xs), np.asarray(h0), **numpy
    )
    np.testing.assert_allclose(ys, want_ys, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(carry, want_carry, rtol=1e-12, atol=1e-13)


def test_combine_is_associative() -> None:
    rng = np.random.default_rng(0)
    x, y, z = [(rng.normal(size=3), rng.normal(size=3)) for _ in range(3)]
    left, right = combine(combine(x, y), z), combine(x, combine(y, z))
    np.testing.assert_allclose(left, right, rtol=1e-12)


def test_associative_scan_is_chosen_explicitly_and_an_lstm_cannot_take_it() -> None:
    """`auto` keeps the sequential scan (faster on CPU, measured); the associative scan is an
    explicit choice, refused with the reason for a cell whose gates read h_(t-1)."""
    xs = jnp.zeros((2, 3, D))
    cell = MinGRUCell(H)
    params = cell.init(jax.random.PRNGKey(0), D)
    assert backend_of(cell, params, xs, RecurrentOptions()).startswith("XLA scan")
    options = RecurrentOptions(backend="associative")
    assert backend_of(cell, params, xs, options) == "associative scan"
    lstm = build_cell("lstm", H)
    params = lstm.init(jax.random.PRNGKey(0), D)
    with pytest.raises(
        ConfigError, match=r"LSTMCell is not a linear recurrence .*backend=\"auto\""
    ):
        run(lstm, params, xs, backend="associative")


def test_a_min_gru_model_trains_on_the_associative_scan(tmp_path) -> None:
    from tests.test_train import run as train_run
    from tests.test_train import train_losses

    results = train_run(tmp_path, ["model=mingru", "model.backend=associative", "trainer.steps=30"])
    assert results["status"] == "completed"
    losses = train_losses(tmp_path)
    assert losses[-1] < losses[0]
