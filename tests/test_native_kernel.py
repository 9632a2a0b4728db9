"""The optional native CPU kernel (`rnnlab.kernels`) against the XLA scan path it replaces.

Outputs, final carries and every gradient (params, inputs, initial carry) must agree to 1e-5 with
`backend="xla"` under lengths, resets, reverse, bidirectional layers, recurrent dropout, zoneout and
stacks. Skipped when the library is not built, unless `RNNLAB_REQUIRE_NATIVE=1` (then missing it
fails). The kernels run on the best ISA the CPU has; `RNNLAB_NATIVE_ISA=avx2` (or `scalar`) runs
this file on another path, with the same tolerance (`tests/test_kernel_isa.py` runs a subset under
every ISA)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab import kernels, recurrence
from rnnlab.cells import GRUCell, LSTMCell
from rnnlab.cells.base import declared
from tests.cell_configs import build_cell, cells_declaring, cells_lacking
from tests.kernel_checks import weighted_loss

B, T, D, H = 3, 7, 4, 5
LENGTHS = jnp.array([7, 4, 1])
TOL = 1e-5

needs_native = pytest.mark.skipif(
    not kernels.available(), reason=f"native kernel unavailable: {kernels.unavailable_reason()}"
)

NATIVE = cells_declaring("native_kernel")
"""Every `conf/cell/` cell whose class declares a native kernel (`native_kernel`)."""
IN_KERNEL_BIAS = [n for n in NATIVE if kernels.cell_kind(build_cell(n)) != kernels.GRU]
"""Those whose kernel adds the input bias itself (all but the GRU's, see `kernels.forward`)."""


def test_native_is_available_when_required():
    if os.environ.get("RNNLAB_REQUIRE_NATIVE") != "1":
        pytest.skip("set RNNLAB_REQUIRE_NATIVE=1 to require the native kernel")
    assert kernels.available(), kernels.unavailable_reason()


def _random_params(cell, key, input_size):
    """Params with non-trivial biases (so b_hn and the forget bias matter)."""
    params = cell.init(key, input_size)
    keys = iter(jax.random.split(jax.random.fold_in(key, 1), len(params)))
    return {
        k: (0.5 * jax.random.normal(next(keys), v.shape) if k.startswith("b") else v)
        for k, v in params.items()
    }


def _random_carry(cell, key, batch=B):
    leaves, treedef = jax.tree_util.tree_flatten(cell.initial_carry(batch))
    keys = jax.random.split(key, len(leaves))
    draws = [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    return treedef.unflatten(draws)


def _assert_close(native, xla):
    for a, b in zip(jax.tree_util.tree_leaves(native), jax.tree_util.tree_leaves(xla), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=TOL, rtol=TOL)


def _compare(loss, *args):
    """Value, aux outputs and gradients of `loss(*args, backend)` for both backends."""
    argnums = tuple(range(len(args)))
    results = [
        jax.jit(
            jax.value_and_grad(lambda *a, k=backend: loss(*a, k), argnums=argnums, has_aux=True)
        )(*args)
        for backend in ("native", "xla")
    ]
    _assert_close(*results)


OPTIONS = {
    "plain": {},
    "lengths-resets": {"lengths": True, "resets": True},
    "reverse": {"reverse": True, "lengths": True, "resets": True},
    "dropout-zoneout": {"recurrent_mask": True, "zoneout": True, "lengths": True},
}


@needs_native
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("name", NATIVE)
def test_run_matches_scan(name, options):
    cell = build_cell(name, H)
    key = jax.random.PRNGKey(0)
    k_p, k_x, k_c, k_m, k_z, k_r = jax.random.split(key, 6)
    params = _random_params(cell, k_p, D)
    xs = jax.random.normal(k_x, (B, T, D))
    carry0 = _random_carry(cell, k_c)
    kwargs = {}
    if options.get("lengths"):
        kwargs["lengths"] = LENGTHS
    if options.get("resets"):
        kwargs["resets"] = jax.random.bernoulli(k_r, 0.25, (B, T))
    if options.get("reverse"):
        kwargs["reverse"] = True
    if options.get("recurrent_mask"):
        kwargs["recurrent_mask"] = recurrence.recurrent_dropout_mask(k_m, 0.3, (B, H), xs.dtype)
    if options.get("zoneout"):
        kwargs["zoneout_keep"] = recurrence.zoneout_keep(k_z, 0.4, cell.initial_carry(B), T)

    def loss(params, xs, carry0, backend):
        carry, ys = recurrence.run(
            cell, params, xs, initial_carry=carry0, backend=backend, **kwargs
        )
        return weighted_loss(ys, carry), (carry, ys)

    _compare(loss, params, xs, carry0)


@needs_native
@pytest.mark.parametrize("name", NATIVE)
def test_packed_kernel_sizes_match_scan(name):
    """Hidden sizes that are multiples of 32 take the packed AVX-512 product (on that path);
    11 rows exercise the 8-row blocks and their remainder."""
    cell = build_cell(name, 32)
    batch, time, size = 11, 5, 8
    k_p, k_x, k_c, k_m, k_r = jax.random.split(jax.random.PRNGKey(7), 5)
    params = _random_params(cell, k_p, size)
    xs = jax.random.normal(k_x, (batch, time, size))
    kwargs = {
        "lengths": jnp.arange(batch) % (time + 1),
        "resets": jax.random.bernoulli(k_r, 0.2, (batch, time)),
        "recurrent_mask": recurrence.recurrent_dropout_mask(k_m, 0.3, (batch, 32), xs.dtype),
    }

    def loss(params, xs, carry0, backend):
        carry, ys = recurrence.run(
            cell, params, xs, initial_carry=carry0, backend=backend, **kwargs
        )
        return weighted_loss(ys, carry), (carry, ys)

    _compare(loss, params, xs, _random_carry(cell, k_c, batch))


@needs_native
@pytest.mark.parametrize("hidden", [16, 40, 48])
@pytest.mark.parametrize("name", IN_KERNEL_BIAS)
def test_vector_gate_loop_and_kernel_bias_match_scan(name, hidden):
    """Hidden sizes around the 16-lane gate loop (exact blocks, and a scalar remainder) on the
    BLAS product, with the input bias added inside the kernel and `ys` written batch-major, under
    lengths, resets, recurrent dropout, zoneout and reverse."""
    cell = build_cell(name, hidden)
    batch, time, size = 5, 6, 3
    k_p, k_x, k_c, k_m, k_r, k_z = jax.random.split(jax.random.PRNGKey(11), 6)
    params = _random_params(cell, k_p, size)
    xs = jax.random.normal(k_x, (batch, time, size))
    kwargs = {
        "lengths": jnp.array([6, 3, 1, 6, 4]),
        "resets": jax.random.bernoulli(k_r, 0.2, (batch, time)),
        "recurrent_mask": recurrence.recurrent_dropout_mask(k_m, 0.3, (batch, hidden), xs.dtype),
        "zoneout_keep": recurrence.zoneout_keep(k_z, 0.4, cell.initial_carry(batch), time),
        "reverse": True,
    }

    def loss(params, xs, carry0, backend):
        carry, ys = recurrence.run(
            cell, params, xs, initial_carry=carry0, backend=backend, **kwargs
        )
        return weighted_loss(ys, carry), (carry, ys)

    _compare(loss, params, xs, _random_carry(cell, k_c, batch))


@needs_native
def test_kernel_bias_and_batch_major_output():
    """`kernels.forward` with `bias` and `batch_major` equals adding the bias to the projection
    and transposing the time-major output."""
    t, b, h = 4, 3, 32
    keys = jax.random.split(jax.random.PRNGKey(12), 4)
    projected = jax.random.normal(keys[0], (t, b, 4 * h))
    w_hh = 0.2 * jax.random.normal(keys[1], (4 * h, h))
    bias = jax.random.normal(keys[2], (4 * h,))
    h0 = c0 = jax.random.normal(keys[3], (b, h))
    none = (None,) * 6
    ref = kernels.forward(
        kernels.LSTM, projected + bias[None, None], w_hh, c0, h0, *none, save=False
    )
    out = kernels.forward(
        kernels.LSTM, projected, w_hh, c0, h0, *none, save=False, bias=bias, batch_major=True
    )
    np.testing.assert_allclose(np.swapaxes(out[0], 0, 1), ref[0], atol=1e-6, rtol=1e-6)
    for a, r in zip(out[1:3], ref[1:3], strict=True):
        np.testing.assert_allclose(a, r, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="GRU"):
        kernels.forward(
            kernels.GRU,
            projected[..., : 3 * h],
            w_hh[: 3 * h],
            None,
            h0,
            *none,
            save=False,
            bias=bias[: 3 * h],
        )


@needs_native
def test_bidirectional_stack_with_dropout_matches_scan():
    cell = GRUCell(H)
    params = recurrence.init_stack(cell, jax.random.PRNGKey(1), D, num_layers=2, bidirectional=True)
    xs = jax.random.normal(jax.random.PRNGKey(2), (B, T, D))
    key = jax.random.PRNGKey(3)

    def loss(params, xs, backend):
        options = recurrence.RecurrentOptions(
            dropout=0.2, recurrent_dropout=0.3, zoneout=0.1, backend=backend
        )
        carries, ys = recurrence.run_stack(
            cell, params, xs, bidirectional=True, lengths=LENGTHS, options=options, key=key
        )
        return weighted_loss(ys, carries), (carries, ys)

    _compare(loss, params, xs)


@needs_native
def test_inference_and_vmap_match_scan():
    cell = LSTMCell(H)
    params = _random_params(cell, jax.random.PRNGKey(4), D)
    xs = jax.random.normal(jax.random.PRNGKey(5), (2, B, T, D))

    def infer(xs, backend):
        return recurrence.run(cell, params, xs, lengths=LENGTHS, backend=backend)

    for batched in (
        lambda k: jax.jit(lambda x: infer(x, k))(xs[0]),
        lambda k: jax.jit(jax.vmap(lambda x: infer(x, k)))(xs),
    ):
        _assert_close(batched("native"), batched("xla"))


def _backend(choice, cell, params, xs, **kwargs):
    """The run log's words for the backend `choice` resolves to (the dispatch table's choice)."""
    options = recurrence.RecurrentOptions(backend=choice, **kwargs)
    return recurrence.backend_of(cell, params, xs, options)


def test_auto_falls_back_and_native_explains():
    xs = jnp.zeros((B, T, D))
    lstm = LSTMCell(H)
    params = lstm.init(jax.random.PRNGKey(0), D)
    without_kernel = [(build_cell(name, H), {}) for name in cells_lacking("native_kernel")]
    for cell, kwargs in [
        *without_kernel,
        (lstm, {"vjp": "autodiff"}),
        (lstm, {"input_projection": "per_step"}),
    ]:
        p = cell.init(jax.random.PRNGKey(0), D)
        reason = recurrence.native_unsupported(cell, p, xs, **kwargs)
        assert reason is not None
        fallback = "chunkwise form" if declared(cell, "chunkwise") else "XLA scan"  # AUTO_ORDER
        assert _backend("auto", cell, p, xs, **kwargs) == f"{fallback}: {reason}"
        with pytest.raises(ValueError, match='backend="native" is not possible'):
            _backend("native", cell, p, xs, **kwargs)
        recurrence.run(cell, p, xs, **kwargs)  # auto: the chunkwise form or the scan
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
        xs64 = xs.astype(jnp.float64)
        assert "float32" in recurrence.native_unsupported(lstm, p64, xs64)
        assert _backend("auto", lstm, p64, xs64).startswith("XLA scan: ")
        _, ys = recurrence.run(lstm, p64, xs64)
        assert ys.dtype == jnp.float64
    with pytest.raises(ValueError, match="backend must be one of"):
        recurrence.run(lstm, params, xs, backend="fast")
    expected = "native kernel (CPU)" if kernels.available() else "XLA scan: "
    assert _backend("auto", lstm, params, xs).startswith(expected)
    assert _backend("xla", lstm, params, xs) == "XLA scan (backend=xla)"


@needs_native
def test_platform_dispatch_when_not_cpu_only(monkeypatch):
    """With an accelerator present, `run` wraps both paths in `lax.platform_dependent`; the CPU
    lowering must still pick the native kernel and differentiate through it."""
    cell = LSTMCell(H)
    params = _random_params(cell, jax.random.PRNGKey(8), D)
    xs = jax.random.normal(jax.random.PRNGKey(9), (B, T, D))

    def loss(params, xs, backend):
        ys = recurrence.run(cell, params, xs, lengths=LENGTHS, backend=backend)[1]
        return jnp.sum(jnp.sin(ys))

    expected = jax.grad(loss)(params, xs, "xla")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    grad = jax.jit(jax.grad(loss), static_argnums=2)
    assert kernels.FORWARD_TARGET in grad.lower(params, xs, "auto").as_text()
    _assert_close(grad(params, xs, "auto"), expected)


needs_bf16 = pytest.mark.skipif(
    not kernels.bf16_available(), reason=f"bfloat16 kernels: {kernels.bf16_unavailable_reason()}"
)


def _bf16(x) -> np.ndarray:
    """`x` rounded to bfloat16 (to nearest even, as XLA's convert), as float64."""
    return np.asarray(jnp.asarray(x, jnp.float32).astype(jnp.bfloat16), np.float64)


@needs_bf16
@pytest.mark.parametrize("batch", [3, 64])  # 64 x 64 x 64 takes the second thread
def test_bf16_products_round_both_operands_and_sum_in_float32(batch):
    """One ReLU step, so the kernel's products can be read off its outputs: forward
    `relu(bf16(h0) @ bf16(W)^T)`, backward `d_h0 = bf16(d_rec) @ bf16(W)`, each to float32
    summation error, and measurably not the float32 products (the option is not ignored)."""
    h = 64
    k_w, k_h, k_d = jax.random.split(jax.random.PRNGKey(3), 3)
    w = jax.random.normal(k_w, (h, h)) / 8
    h0 = jax.random.normal(k_h, (batch, h))
    projected, bias = jnp.zeros((1, batch, h)), jnp.zeros((h,))
    none = (None,) * 5
    out = kernels.forward(
        kernels.RELU, projected, w, None, h0, *none, None, True, bias=bias, bf16=True
    )
    ys, gates = np.asarray(out[0][0]), out[6]
    expected = np.maximum(_bf16(h0) @ _bf16(w).T, 0)
    np.testing.assert_allclose(ys, expected, rtol=1e-6, atol=1e-6)
    assert np.max(np.abs(ys - np.maximum(np.asarray(h0 @ w.T, np.float64), 0))) > 1e-3

    d_ys = jax.random.normal(k_d, (1, batch, h))
    d_proj, _, d_h0, _ = kernels.adjoint(
        kernels.RELU,
        w,
        None,
        h0,
        *none,
        gates,
        out[7],
        out[3],
        out[4],
        d_ys,
        jnp.zeros((batch, h)),
        None,
        bf16=True,
    )
    np.testing.assert_array_equal(np.asarray(d_proj[0]), np.where(ys > 0, np.asarray(d_ys[0]), 0))
    np.testing.assert_allclose(np.asarray(d_h0), _bf16(d_proj[0]) @ _bf16(w), rtol=1e-6, atol=1e-6)


def test_bf16_needs_a_hidden_size_the_kernel_packs():
    xs = jnp.zeros((B, T, D))

    def reason(hidden):
        cell = LSTMCell(hidden)
        params = cell.init(jax.random.PRNGKey(0), D)
        return recurrence.native_unsupported(cell, params, xs, matmul_dtype="bfloat16")

    if not kernels.bf16_available():
        assert "bfloat16 matmuls in the native kernel" in reason(64)
        return
    assert reason(64) is None
    assert "multiple of 32 (got 40)" in reason(40)


def _largest_difference(a, b) -> float:
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return max(float(jnp.max(jnp.abs(x - y) / (1 + jnp.abs(y)))) for x, y in pairs)


@needs_bf16
@pytest.mark.parametrize("name", NATIVE)
def test_bf16_kernel_matches_bf16_scan(name):
    """`matmul_dtype="bfloat16"` on the kernel against the XLA scan's (the same operands rounded
    the same way): loss, outputs, carries and every gradient under lengths, resets and recurrent
    dropout. The two differ where a last-bit difference of the gate math flips a later bfloat16
    rounding (one bfloat16 step, 2^-8), so the bound is 1e-2; and the kernel must be much closer
    to the bfloat16 scan than to the float32 one."""
    hidden, batch = 32, 11
    cell = build_cell(name, hidden)
    k_p, k_x, k_c, k_m, k_r = jax.random.split(jax.random.PRNGKey(11), 5)
    params = _random_params(cell, k_p, D)
    xs = jax.random.normal(k_x, (batch, T, D))
    kwargs = {
        "lengths": jnp.arange(batch) % (T + 1),
        "resets": jax.random.bernoulli(k_r, 0.2, (batch, T)),
        "recurrent_mask": recurrence.recurrent_dropout_mask(k_m, 0.3, (batch, hidden), xs.dtype),
    }

    def loss(params, xs, carry0, backend, matmul_dtype):
        carry, ys = recurrence.run(
            cell,
            params,
            xs,
            initial_carry=carry0,
            backend=backend,
            matmul_dtype=matmul_dtype,
            **kwargs,
        )
        return weighted_loss(ys, carry), (carry, ys)

    grad = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True), static_argnums=(3, 4))
    args = (params, xs, _random_carry(cell, k_c, batch))
    native_bf16 = grad(*args, "native", "bfloat16")
    to_bf16_scan = _largest_difference(native_bf16, grad(*args, "xla", "bfloat16"))
    to_f32_scan = _largest_difference(native_bf16, grad(*args, "xla", "float32"))
    assert to_bf16_scan <= 1e-2, to_bf16_scan
    assert to_bf16_scan < to_f32_scan / 2, (to_bf16_scan, to_f32_scan)
