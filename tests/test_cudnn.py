"""cuDNN's fused LSTM (`rnnlab.kernels.cudnn`) against the `lax.scan` path it replaces on CUDA.

The layout and eligibility checks run everywhere; the parity tests need an NVIDIA GPU (they are
skipped elsewhere, CI included: run them there with
`JAX_PLATFORMS=cuda,cpu pytest tests/test_cudnn.py`, as conftest otherwise pins the CPU) and
compare `backend="cudnn"` with `backend="xla"` under
`jax.default_matmul_precision("highest")` (no TF32 on either side): outputs, final carries and
every gradient, with lengths (an empty sequence too), reverse, initial carries and a
bidirectional 2-layer stack."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab import recurrence
from rnnlab.cells import GRUCell, LSTMCell
from rnnlab.kernels import cudnn
from tests.kernel_checks import weighted_loss

B, T, D, H = 3, 7, 4, 5
LENGTHS = jnp.array([7, 4, 0])
TOL = 2e-5

on_gpu = pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs an NVIDIA GPU")


def test_flat_weights_follow_cudnn_layout():
    from jax.experimental import rnn

    cell = LSTMCell(H)
    params = cell.init(jax.random.PRNGKey(0), D)
    params["b"] = jnp.arange(4 * H, dtype=jnp.float32)
    flat = cudnn.flat_weights(params)
    assert flat.size == rnn.get_num_params_in_lstm(D, H, 1, False)
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(flat, D, H, 1, False)
    np.testing.assert_array_equal(w_ih[0], params["w_ih"])
    np.testing.assert_array_equal(w_hh[0], params["w_hh"])
    np.testing.assert_array_equal(b_ih[0] + b_hh[0], params["b"])


def test_unsupported_reasons(monkeypatch):
    monkeypatch.setattr(cudnn, "cuda_present", lambda: True)
    xs = jnp.zeros((B, T, D))
    plain = {
        "resets": None,
        "recurrent_mask": None,
        "zoneout_keep": None,
        "vjp": "custom",
        "input_projection": "hoisted",
    }
    assert cudnn.unsupported_reason(LSTMCell(H), xs, **plain) is None
    for cell, change in [
        (GRUCell(H), {}),
        (LSTMCell(H, peephole=True), {}),
        (LSTMCell(H, proj_size=2), {}),
        (LSTMCell(H), {"resets": jnp.zeros((B, T))}),
        (LSTMCell(H), {"recurrent_mask": jnp.ones((B, H))}),
        (LSTMCell(H), {"vjp": "autodiff"}),
        (LSTMCell(H), {"input_projection": "per_step"}),
    ]:
        assert cudnn.unsupported_reason(cell, xs, **(plain | change)) is not None
    assert "float32" in cudnn.unsupported_reason(LSTMCell(H), xs.astype(jnp.bfloat16), **plain)
    monkeypatch.setattr(cudnn, "cuda_present", lambda: False)
    assert "CUDA" in cudnn.unsupported_reason(LSTMCell(H), xs, **plain)
    params = LSTMCell(H).init(jax.random.PRNGKey(0), D)
    with pytest.raises(ValueError, match="cudnn"):
        recurrence.run(LSTMCell(H), params, xs, backend="cudnn")


def _compare(loss, *args):
    argnums = tuple(range(len(args)))
    with jax.default_matmul_precision("highest"):
        results = []
        for backend in ("cudnn", "xla"):
            fn = jax.jit(
                jax.value_and_grad(lambda *a, k=backend: loss(*a, k), argnums=argnums, has_aux=True)
            )
            results.append(fn(*args))
        hlo = fn.lower(*args).as_text()
        assert "cudnn" not in hlo  # the "xla" program has no cuDNN call ...
        fused = jax.jit(jax.value_and_grad(lambda *a: loss(*a, "cudnn"), argnums=0, has_aux=True))
        assert "cudnn" in fused.lower(*args).as_text().lower()  # ... and "cudnn" has one
    for a, b in zip(*(jax.tree_util.tree_leaves(r) for r in results), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=TOL, rtol=TOL)


@on_gpu
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_run_matches_scan(reverse, lengths):
    cell = LSTMCell(H)
    k_p, k_b, k_x, k_c, k_h = jax.random.split(jax.random.PRNGKey(0), 5)
    params = cell.init(k_p, D)
    params["b"] = 0.5 * jax.random.normal(k_b, params["b"].shape)
    xs = jax.random.normal(k_x, (B, T, D))
    carry0 = type(cell.initial_carry(B))(
        jax.random.normal(k_c, (B, H)), jax.random.normal(k_h, (B, H))
    )

    def loss(params, xs, carry0, backend):
        carry, ys = recurrence.run(
            cell,
            params,
            xs,
            initial_carry=carry0,
            lengths=lengths,
            reverse=reverse,
            backend=backend,
        )
        return weighted_loss(ys, carry), (carry, ys)

    _compare(loss, params, xs, carry0)


@on_gpu
def test_bidirectional_stack_matches_scan():
    cell = LSTMCell(32)
    params = recurrence.init_stack(cell, jax.random.PRNGKey(1), D, num_layers=2, bidirectional=True)
    xs = jax.random.normal(jax.random.PRNGKey(2), (B, T, D))

    def loss(params, xs, backend):
        options = recurrence.RecurrentOptions(backend=backend)
        carries, ys = recurrence.run_stack(
            cell, params, xs, bidirectional=True, lengths=LENGTHS, options=options
        )
        return weighted_loss(ys, carries), (carries, ys)

    _compare(loss, params, xs)
