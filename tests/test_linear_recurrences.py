"""Linear recurrences (cells declaring `linear_recurrence`, found in conf/cell/): the associative
scan, and the log-space scan for the cells declaring `log_space`, equal the sequential scan with
every layer option, and each cell equals its paper's equations written as a plain loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rnnlab.cells.base import declared
from rnnlab.cells.lru import LRUCell
from rnnlab.cells.minimal import MinGRUCell, MinLSTMCell
from rnnlab.cells.rglru import RGLRUCell
from rnnlab.errors import ConfigError
from rnnlab.recurrence import RecurrentOptions, backend_of, run, zoneout_keep
from rnnlab.recurrence.associative import combine, log_combine
from tests.cell_configs import build_cell, cells_declaring

LINEAR = cells_declaring("linear_recurrence")
LOG_SPACE = [n for n in cells_declaring("log_space") if declared(build_cell(n, 4), "log_space")]
PARALLEL = [(n, "associative") for n in LINEAR] + [(n, "log_space") for n in LOG_SPACE]
B, T, D, H = 4, 9, 3, 5
LENGTHS = np.array([9, 5, 0, 3])
RESETS = np.zeros((B, T), np.float32)
RESETS[0, 4] = RESETS[1, 2] = RESETS[3, 1] = 1.0  # packed segments, one inside a padded row


def test_linear_cells_are_discovered() -> None:
    assert {"mingru", "minlstm", "rglru", "lru"} <= set(LINEAR)
    assert {"mingru", "minlstm"} <= set(LOG_SPACE) <= set(LINEAR)


def _inputs(cell, dtype):
    k_params, k_x, k_h, k_z = jax.random.split(jax.random.PRNGKey(0), 4)
    params = jax.tree_util.tree_map(lambda p: p.astype(dtype), cell.init(k_params, D))
    xs = jax.random.normal(k_x, (B, T, D), dtype)
    h0 = jax.random.normal(k_h, cell.initial_carry(B).shape, dtype)
    keep = zoneout_keep(k_z, 0.3, h0, T)
    return params, xs, h0, keep


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(("name", "backend"), PARALLEL)
def test_parallel_scans_equal_the_sequential_scan(
    name: str, backend: str, reverse: bool, dtype
) -> None:
    """Outputs, final carry and every gradient, with lengths (one empty sequence), packed
    resets, an initial carry of either sign (truncated BPTT) and zoneout masks (not for a
    complex state: `test_zoneout_on_a_complex_state_stays_sequential`), in both directions."""
    cell = build_cell(name, H)
    with jax.enable_x64(dtype == jnp.float64):
        params, xs, h0, keep = _inputs(cell, dtype)
        keep = None if cell.complex_state else keep

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
            grad(params, xs, h0, backend),
        )
    tol = {"rtol": 2e-5, "atol": 2e-6} if dtype == jnp.float32 else {"rtol": 1e-12, "atol": 1e-13}
    np.testing.assert_allclose(y_par, y_seq, **tol)
    np.testing.assert_allclose(c_par, c_seq, **tol)
    assert not np.any(y_par[2]) and np.allclose(c_par[2], h0[2])  # empty sequence: h0 kept
    for a, b in zip(
        jax.tree_util.tree_leaves(g_par), jax.tree_util.tree_leaves(g_seq), strict=True
    ):
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize(("name", "backend"), PARALLEL)
def test_parallel_scan_gradients_match_finite_differences_in_float64(
    name: str, backend: str
) -> None:
    cell = build_cell(name, H)
    with jax.enable_x64(True):
        params, xs, h0, _ = _inputs(cell, jnp.float64)

        def out(params, xs):
            carry, ys = run(
                cell, params, xs, lengths=jnp.asarray(LENGTHS), resets=jnp.asarray(RESETS),
                backend=backend,
            )  # fmt: skip
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


def paper_lru(w, xs, h, nu_log, theta_log, gamma_log):
    """Orvieto et al. (2023), Appendix A's forward pass with complex numbers, one step at a time:
    `x_k = Lambda x_(k-1) + B_norm u_k`, `B_norm = (B_re + i B_im) * exp(gamma_log)`; the carry
    and outputs as `[Re, Im]`."""
    lam = np.exp(-np.exp(nu_log) + 1j * np.exp(theta_log))
    b_re, b_im = np.split(w, 2)
    b_norm = (b_re + 1j * b_im) * np.exp(gamma_log)[:, None]
    state = h[:, : len(lam)] + 1j * h[:, len(lam) :]
    ys = []
    for u in np.moveaxis(xs, 1, 0):
        state = lam * state + u @ b_norm.T
        ys.append(np.concatenate([state.real, state.imag], -1))
    return ys[-1], np.stack(ys, 1)


PAPERS = [
    (MinGRUCell(H), paper_min_gru),
    (MinLSTMCell(H), paper_min_lstm),
    (RGLRUCell(H), paper_rg_lru),
    (LRUCell(H, r_min=0.5, r_max=0.99), paper_lru),
]


@pytest.mark.parametrize(
    ("cell", "paper", "backend"),
    [
        (cell, paper, backend)
        for cell, paper in PAPERS
        for backend in ("xla", "associative", "log_space")
        if backend != "log_space" or declared(cell, "log_space")
    ],
)
def test_cells_equal_the_papers_equations(cell, paper, backend: str) -> None:
    with jax.enable_x64(True):
        params, xs, h0, _ = _inputs(cell, jnp.float64)
        carry, ys = run(cell, params, xs, initial_carry=h0, backend=backend)
    numpy = {k: np.asarray(v) for k, v in params.items()}
    bias = () if "b" not in numpy else (numpy.pop("b"),)
    want_carry, want_ys = paper(numpy.pop("w_ih"), *bias, np.asarray(xs), np.asarray(h0), **numpy)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(carry, want_carry, rtol=1e-12, atol=1e-13)


def test_lru_initialisation_is_the_papers_ring() -> None:
    """Appendix A: |lambda| uniform on the ring [r_min, r_max] (its square is uniform), phases
    in [0, max_phase], gamma = sqrt(1 - |lambda|^2), B's entries with variance 1 / (2d)."""
    cell = LRUCell(4096, r_min=0.4, r_max=0.9, max_phase=1.5)
    params = cell.init(jax.random.PRNGKey(0), 32)
    modulus = np.abs(np.asarray(cell.eigenvalues(params)))
    assert 0.4 <= modulus.min() and modulus.max() <= 0.9
    squared = np.sort(modulus**2)  # uniform on [0.16, 0.81]: its mean and quartiles
    np.testing.assert_allclose(squared.mean(), (0.16 + 0.81) / 2, atol=0.01)
    np.testing.assert_allclose(np.quantile(squared, 0.25), 0.16 + 0.65 / 4, atol=0.02)
    phase = np.exp(np.asarray(params["theta_log"]))
    assert 0 <= phase.min() and phase.max() <= 1.5 and phase.mean() == pytest.approx(0.75, abs=0.03)
    np.testing.assert_allclose(np.exp(params["gamma_log"]), np.sqrt(1 - modulus**2), rtol=1e-5)
    np.testing.assert_allclose(np.var(np.asarray(params["w_ih"])), 1 / 64, rtol=0.05)
    with pytest.raises(ValueError, match="r_min < r_max"):
        LRUCell(4, r_min=0.9, r_max=0.5)


def test_the_lru_readout_is_a_linear_map_of_its_outputs() -> None:
    """The paper's `Re(C h)` equals `[C_re, -C_im] @ [Re h; Im h]`: the head that reads the
    cell's outputs can be the paper's readout exactly."""
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, H)) + 1j * rng.normal(size=(3, H))
    c = rng.normal(size=(2, H)) + 1j * rng.normal(size=(2, H))
    cell = LRUCell(H)
    outputs = np.asarray(cell.carry_of(jnp.asarray(h)))
    np.testing.assert_allclose(outputs @ np.concatenate([c.real, -c.imag], 1).T, (h @ c.T).real)
    np.testing.assert_allclose(np.asarray(cell.state(jnp.asarray(outputs))), h)


def test_zoneout_on_a_complex_state_stays_sequential() -> None:
    """Zoneout masks the real and imaginary parts apart (no complex-diagonal step): the
    associative scan refuses it with the reason, and `auto` runs it sequentially."""
    cell = LRUCell(H)
    params, xs, h0, keep = _inputs(cell, jnp.float32)
    with pytest.raises(ConfigError, match="zoneout on LRUCell's complex state"):
        run(cell, params, xs, zoneout_keep=keep, backend="associative")
    _, ys = run(cell, params, xs, zoneout_keep=keep)
    assert np.all(np.isfinite(ys))


def test_combine_is_associative() -> None:
    rng = np.random.default_rng(0)
    x, y, z = [(rng.normal(size=3), rng.normal(size=3)) for _ in range(3)]
    left, right = combine(combine(x, y), z), combine(x, combine(y, z))
    np.testing.assert_allclose(left, right, rtol=1e-12)
    left, right = log_combine(log_combine(x, y), z), log_combine(x, log_combine(y, z))
    np.testing.assert_allclose(left, right, rtol=1e-6)  # float32
    log_pair = lambda p: tuple(np.log(np.abs(v)) for v in p)  # combine in logs = log of combine
    positive = [tuple(np.abs(v) for v in p) for p in (x, y)]
    np.testing.assert_allclose(
        log_combine(log_pair(positive[0]), log_pair(positive[1])),
        log_pair(combine(*positive)),
        rtol=1e-6,
    )


def test_log_space_holds_over_long_sequences_in_float32() -> None:
    """Over 2048 steps of strong forgetting (a_t near 1e-3), the running log-products reach
    -1.4e4. The log-space scan stays within 1e-5 of a float64 run (measured 5e-7; the
    sequential float32 scan 5e-6), where Heinsen's closed form, which subtracts such sums,
    was measured 1e-3 off."""
    cell = MinGRUCell(H)
    params = cell.init(jax.random.PRNGKey(1), D)
    params = {**params, "b": params["b"].at[:H].set(7.0)}  # z near 1: a = 1 - z near 1e-3
    xs = jax.random.normal(jax.random.PRNGKey(2), (2, 2048, D))
    scan = jax.jit(lambda p, x, backend: run(cell, p, x, backend=backend)[1], static_argnums=2)
    got = scan(params, xs, "log_space")
    with jax.enable_x64(True):
        wide = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), params)
        want = scan(wide, xs.astype(jnp.float64), "xla")
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.all(np.asarray(got) > 0)


def test_log_space_needs_positive_coefficients() -> None:
    """Refused with the reason, and the fix, for a candidate that can be negative and for a
    cell whose gates read h_(t-1); `auto` never takes it."""
    xs = jnp.zeros((2, 3, D))
    cell = MinLSTMCell(H, positive_candidate=False)
    params = cell.init(jax.random.PRNGKey(0), D)
    with pytest.raises(ConfigError, match="positive_candidate=false can have b_t < 0"):
        run(cell, params, xs, backend="log_space")
    assert backend_of(cell, params, xs, RecurrentOptions(backend="associative")) == (
        "associative scan"
    )
    lstm = build_cell("lstm", H)
    with pytest.raises(ConfigError, match="LSTMCell has no log-space form"):
        run(lstm, lstm.init(jax.random.PRNGKey(0), D), xs, backend="log_space")
    cell = MinGRUCell(H)
    params = cell.init(jax.random.PRNGKey(0), D)
    assert backend_of(cell, params, xs, RecurrentOptions()).startswith("XLA scan")
    assert backend_of(cell, params, xs, RecurrentOptions(backend="log_space")) == "log-space scan"


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
