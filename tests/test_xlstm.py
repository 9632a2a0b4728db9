"""sLSTM and mLSTM against the xLSTM paper's equations written as plain loops; mLSTM's
recurrent and parallel forms against each other."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab.cells.mlstm import MLSTMCell, parallel
from rnnlab.cells.slstm import SLSTMCell
from rnnlab.errors import ConfigError
from rnnlab.recurrence import RecurrentOptions, backend_of, run

B, T, D, H = 3, 7, 4, 5


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def paper_slstm(w_ih, w_hh, b, xs):
    """Beck et al. (2024) eqs. 8-13, unstabilised: exponential input gate, sigmoid forget gate,
    c and n from zero, h_t = o_t c_t / n_t."""
    c = n = h = np.zeros((xs.shape[0], w_hh.shape[1]))
    ys = []
    for x in np.moveaxis(xs, 1, 0):
        i_t, f_t, z_t, o_t = np.split(x @ w_ih.T + h @ w_hh.T + b, 4, axis=-1)
        i, f = np.exp(i_t), _sigmoid(f_t)
        c = f * c + i * np.tanh(z_t)
        n = f * n + i
        h = _sigmoid(o_t) * c / n
        ys.append(h)
    return np.stack(ys, 1)


def block_diagonal(r):
    """The dense `[4h, h]` recurrent matrix of per-gate, per-head blocks `r: [4, H, k, k]`:
    head n's units read only head n's units (Beck et al. 2024, Section 2.2, "heads")."""
    gates, heads, k, _ = r.shape
    dense = np.zeros((gates, heads * k, heads * k))
    for n in range(heads):
        dense[:, n * k : (n + 1) * k, n * k : (n + 1) * k] = r[:, n]
    return dense.reshape(gates * heads * k, heads * k)


@pytest.mark.parametrize(("hidden", "heads"), [(H, 1), (6, 3)])
def test_slstm_equals_the_papers_unstabilised_equations(hidden: int, heads: int) -> None:
    """The stabiliser m rescales c and n alike: h is the unstabilised equations' h; with heads,
    the recurrent matrix is block-diagonal (one dense head: the layer-owned `w_hh`)."""
    cell = SLSTMCell(hidden, num_heads=heads)
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(
            lambda p: p.astype(jnp.float64), cell.init(jax.random.PRNGKey(0), D)
        )
        xs = jax.random.normal(jax.random.PRNGKey(1), (B, T, D), jnp.float64)
        carry, ys = run(cell, params, xs)
    numpy = {k: np.asarray(v) for k, v in params.items()}
    w_hh = numpy["w_hh"] if heads == 1 else block_diagonal(numpy["r"])
    assert ("w_hh" in numpy) == (heads == 1)
    want = paper_slstm(numpy["w_ih"], w_hh, numpy["b"], np.asarray(xs))
    np.testing.assert_allclose(ys, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(carry.h, want[:, -1], rtol=1e-10, atol=1e-12)
    # Stabilised: the largest scale seen is folded into m, c and n stay bounded.
    assert np.all(np.asarray(carry.n) <= T + 1e-9) and np.all(np.isfinite(carry.c))


def test_slstm_stays_finite_where_the_unstabilised_form_overflows() -> None:
    """Large input-gate pre-activations: exp(i~) overflows float32, the stabilised cell not."""
    cell = SLSTMCell(H)
    params = cell.init(jax.random.PRNGKey(0), D)
    params["b"] = params["b"].at[:H].set(200.0)  # i~ around 200: exp(200) > float32 max
    xs = jax.random.normal(jax.random.PRNGKey(1), (B, T, D))
    assert np.exp(200.0) > np.finfo(np.float32).max
    carry, ys = run(cell, params, xs)
    assert np.all(np.isfinite(ys)) and np.all(np.isfinite(carry.m))
    grads = jax.grad(lambda p: jnp.sum(run(cell, p, xs)[1]))(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


def test_slstm_heads_do_not_mix_and_bad_head_counts_are_refused() -> None:
    """Perturbing one head's units at t = 0 changes no other head's outputs at t = 1; a head
    count that does not divide the units names both sizes."""
    cell = SLSTMCell(6, num_heads=2)
    params = cell.init(jax.random.PRNGKey(0), D)
    params["w_ih"] = jnp.zeros_like(params["w_ih"])  # only the recurrence carries the change
    h0 = cell.initial_carry(1)._replace(h=jnp.zeros((1, 6)).at[0, 0].set(1.0))
    xs = jnp.zeros((1, 1, D))
    ys = run(cell, params, xs, initial_carry=h0)[1] - run(cell, params, xs)[1]
    assert np.any(ys[0, 0, :3]) and not np.any(ys[0, 0, 3:])
    with pytest.raises(ValueError, match=r"hidden_size \(6\) must be a multiple of num_heads"):
        SLSTMCell(6, num_heads=4)


def paper_mlstm(cell, projected):
    """Beck et al. (2024) eqs. 19-27, unstabilised, per head: C_t = f C + i v k^T (here stored
    key x value), n_t = f n + i k, h~ = C^T q / max(|n.q|, 1), h = sigma(o~) h~."""
    q, k, v, o_tilde, i_tilde, f_tilde = (np.asarray(a) for a in cell.split(projected))
    b, t, heads, dk = q.shape
    C = np.zeros((b, heads, dk, dk))
    n = np.zeros((b, heads, dk))
    ys = []
    for s in range(t):
        i, f = np.exp(i_tilde[:, s]), _sigmoid(f_tilde[:, s])
        C = f[..., None, None] * C + i[..., None, None] * np.einsum(
            "bhk,bhv->bhkv", k[:, s], v[:, s]
        )
        n = f[..., None] * n + i[..., None] * k[:, s]
        num = np.einsum("bhkv,bhk->bhv", C, q[:, s])
        den = np.maximum(np.abs(np.sum(n * q[:, s], -1)), 1.0)
        ys.append(_sigmoid(o_tilde[:, s]) * (num / den[..., None]).reshape(b, -1))
    return np.stack(ys, 1)


def test_mlstm_recurrent_and_parallel_forms_equal_the_papers_equations() -> None:
    cell = MLSTMCell(8, num_heads=2)
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(
            lambda p: p.astype(jnp.float64), cell.init(jax.random.PRNGKey(0), D)
        )
        xs = 2.0 * jax.random.normal(jax.random.PRNGKey(1), (B, T, D), jnp.float64)
        _, recurrent = run(cell, params, xs)
        parallel_ys = parallel(cell, params, xs)
        _, chunkwise_ys = run(cell, params, xs, backend="chunkwise")
        want = paper_mlstm(cell, cell.project_inputs(params, xs))
    np.testing.assert_allclose(recurrent, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(parallel_ys, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(chunkwise_ys, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 3, 16])
def test_mlstm_chunkwise_form_equals_the_recurrent_step(chunk_size: int, reverse: bool) -> None:
    """`backend="chunkwise"` against the sequential scan: outputs, final carry and gradients
    (params, inputs, initial carry), with lengths (one empty sequence), an initial carry (a
    large stabiliser among it) and chunks that do not divide the time axis; float32."""
    cell = MLSTMCell(8, num_heads=2, chunk_size=chunk_size)
    params = cell.init(jax.random.PRNGKey(0), D)
    xs = jax.random.normal(jax.random.PRNGKey(1), (B, T, D))
    lengths = jnp.array([T, 4, 0])
    leaves = jax.tree_util.tree_leaves(cell.initial_carry(B))
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    noise = [
        0.5 * jax.random.normal(key, leaf.shape) for key, leaf in zip(keys, leaves, strict=True)
    ]
    carry0 = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(cell.initial_carry(B)), noise
    )
    carry0 = carry0._replace(m=jnp.abs(carry0.m).at[0].add(30.0))

    def loss(params, xs, carry0, backend):
        carry, ys = run(
            cell, params, xs, lengths=lengths, initial_carry=carry0, reverse=reverse,
            backend=backend,
        )  # fmt: skip
        weights = jnp.arange(ys.size, dtype=ys.dtype).reshape(ys.shape) / ys.size
        total = jnp.sum(ys * weights) + sum(jnp.sum(jnp.sin(c)) for c in carry)
        return total, (carry, ys)

    grad = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)
    (g_seq, (c_seq, y_seq)), (g_chunk, (c_chunk, y_chunk)) = (
        grad(params, xs, carry0, "xla"),
        grad(params, xs, carry0, "chunkwise"),
    )
    tol = {"rtol": 2e-5, "atol": 2e-6}
    np.testing.assert_allclose(y_chunk, y_seq, **tol)
    assert not np.any(y_chunk[2])
    for a, b in zip(c_chunk, c_seq, strict=True):
        np.testing.assert_allclose(a, b, **tol)
    np.testing.assert_allclose(c_chunk.C[2], carry0.C[2])  # empty sequence: its carry kept
    for a, b in zip(
        jax.tree_util.tree_leaves(g_chunk), jax.tree_util.tree_leaves(g_seq), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_the_chunkwise_backend_refuses_what_it_cannot_run() -> None:
    """Resets and zoneout stay on the sequential scan (named in the error of an explicit
    choice); a cell without a chunkwise form is refused by name."""
    cell = MLSTMCell(8, num_heads=2)
    params = cell.init(jax.random.PRNGKey(0), D)
    xs = jnp.zeros((B, T, D))
    resets = jnp.zeros((B, T)).at[0, 2].set(1.0)
    with pytest.raises(ConfigError, match="packed-sequence resets run on the XLA scan"):
        run(cell, params, xs, resets=resets, backend="chunkwise")
    slstm = SLSTMCell(H)
    with pytest.raises(ConfigError, match="SLSTMCell has no chunkwise form"):
        run(slstm, slstm.init(jax.random.PRNGKey(0), D), xs, backend="chunkwise")


def test_mlstm_parallel_form_matches_in_float32_and_differentiates() -> None:
    cell = MLSTMCell(8, num_heads=2)
    params = cell.init(jax.random.PRNGKey(0), D)
    xs = jax.random.normal(jax.random.PRNGKey(1), (B, T, D))
    np.testing.assert_allclose(
        parallel(cell, params, xs), run(cell, params, xs)[1], rtol=2e-5, atol=2e-6
    )
    g_par = jax.grad(lambda p: jnp.sum(parallel(cell, p, xs) ** 2))(params)
    g_rec = jax.grad(lambda p: jnp.sum(run(cell, p, xs)[1] ** 2))(params)
    for a, b in zip(
        jax.tree_util.tree_leaves(g_par), jax.tree_util.tree_leaves(g_rec), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_auto_takes_the_chunkwise_form_where_it_can() -> None:
    """Measured faster on CPU (README), so `auto` runs mLSTM chunkwise; with resets (which the
    chunkwise form has not) it runs the XLA scan, with the same results."""
    cell = MLSTMCell(8, num_heads=2)
    params = cell.init(jax.random.PRNGKey(0), D)
    xs = jax.random.normal(jax.random.PRNGKey(1), (B, T, D))
    assert backend_of(cell, params, xs, RecurrentOptions()).startswith("chunkwise form")
    resets = jnp.zeros((B, T)).at[0, 2].set(1.0)
    np.testing.assert_array_equal(
        run(cell, params, xs, resets=resets)[1],
        run(cell, params, xs, resets=resets, backend="xla")[1],
    )
