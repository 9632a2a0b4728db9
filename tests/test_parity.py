"""Known-answer tests against implementations nobody here wrote: PyTorch and Flax.

PyTorch is a test-only dependency: these tests skip where it is absent (`.ci/run` installs it)."""

from __future__ import annotations

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab import interop, recurrence
from rnnlab.cells import LSTMState
from rnnlab.cells.base import declared
from tests.cell_configs import build_cell, cells_declaring

torch = pytest.importorskip("torch")

B, T, D, H = 3, 6, 3, 5
LENGTHS = np.array([6, 4, 1])

TORCH_CELLS = cells_declaring("torch_module", H)
"""Every `conf/cell/` cell whose class declares a `torch.nn` equivalent (`torch_module`)."""
FLAX_CELLS = cells_declaring("flax_cell", H)
"""... and those that declare a `flax.linen` one (`flax_cell`)."""


def _torch_run(module, xs, packed: bool):
    """Outputs `[b, t, dirs*o]` and final states of a torch RNN module, packed or not."""
    x = torch.tensor(xs, requires_grad=True)
    if packed:
        seq = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.tensor(LENGTHS), batch_first=True, enforce_sorted=False
        )
        out, state = module(seq)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    else:
        out, state = module(x)
    h_n, c_n = state if isinstance(state, tuple) else (state, None)
    return x, out, h_n, c_n


def _ours_final(cell, carries, num_layers, bidirectional):
    """rnnlab's per-layer carries laid out as torch's `h_n` (and `c_n`): `[layers*dirs, b, .]`."""
    hs, cs = [], []
    for layer in range(num_layers):
        for carry in carries[layer] if bidirectional else (carries[layer],):
            if isinstance(carry, LSTMState):
                hs.append(carry.h)
                cs.append(carry.c)
            else:
                hs.append(carry)
    return jnp.stack(hs), (jnp.stack(cs) if cs else None)


@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, False), (2, True)])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("cell_name", TORCH_CELLS)
def test_matches_torch_forward_and_gradients(cell_name, num_layers, bidirectional, packed):
    cell = build_cell(cell_name, H)
    name, kwargs = declared(cell, "torch_module")
    case = TORCH_CELLS.index(cell_name)
    torch.manual_seed(case)
    module = getattr(torch.nn, name)(
        D, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True, **kwargs
    )
    rng = np.random.default_rng(case)
    xs = rng.standard_normal((B, T, D)).astype(np.float32)

    x_t, out_t, h_t, c_t = _torch_run(module, xs, packed)
    params = interop.stack_from_torch(cell, module.state_dict(), num_layers, bidirectional)
    lengths = jnp.asarray(LENGTHS) if packed else None

    def forward(params, xs):
        carries, ys = recurrence.run_stack(
            cell, params, xs, bidirectional=bidirectional, lengths=lengths
        )
        return ys, _ours_final(cell, carries, num_layers, bidirectional)

    ys, (h_n, c_n) = forward(params, jnp.asarray(xs))
    np.testing.assert_allclose(ys, out_t.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(h_n, h_t.detach().numpy(), atol=1e-5)
    if c_n is not None:
        np.testing.assert_allclose(c_n, c_t.detach().numpy(), atol=1e-5)

    # Gradients of one scalar through outputs and final states, both frameworks.
    w_out = rng.standard_normal(ys.shape).astype(np.float32)
    w_h = rng.standard_normal(h_n.shape).astype(np.float32)

    def loss(params, xs):
        ys, (h_n, _) = forward(params, xs)
        return jnp.sum(ys * w_out) + jnp.sum(h_n * w_h)

    g_params, g_x = jax.grad(loss, argnums=(0, 1))(params, jnp.asarray(xs))
    (torch.sum(out_t * torch.tensor(w_out)) + torch.sum(h_t * torch.tensor(w_h))).backward()
    np.testing.assert_allclose(g_x, x_t.grad.numpy(), atol=1e-4, rtol=1e-4)
    grads_torch = {k: p.grad for k, p in module.named_parameters()}
    expected = interop.stack_from_torch(cell, grads_torch, num_layers, bidirectional)
    # The folded bias b = b_ih + b_hh has the gradient of b_ih (equal to b_hh's, both are added).
    for layer in range(num_layers):
        for direction in ("forward", "backward") if bidirectional else (None,):
            ours = g_params[layer] if direction is None else g_params[layer][direction]
            ref = expected[layer] if direction is None else expected[layer][direction]
            suffix = f"_l{layer}" + ("_reverse" if direction == "backward" else "")
            ref = dict(ref, b=jnp.asarray(grads_torch["bias_ih" + suffix].numpy()))
            for key in ours:
                np.testing.assert_allclose(ours[key], ref[key], atol=1e-4, rtol=1e-4, err_msg=key)


@pytest.mark.parametrize("cell_name", FLAX_CELLS)
def test_matches_flax_linen_rnn(cell_name):
    cell = build_cell(cell_name, H)
    name, kwargs = declared(cell, "flax_cell")
    xs = jax.random.normal(jax.random.PRNGKey(0), (B, T, D))
    lengths = jnp.asarray(LENGTHS)
    module = fnn.RNN(getattr(fnn, name)(H, **kwargs), return_carry=True)
    variables = module.init(jax.random.PRNGKey(1), xs)
    # Flax initialises biases at zero; perturb them so the bias mapping is tested too.
    variables = jax.tree_util.tree_map(lambda p: p + 0.1, variables)
    carry_f, ys_f = module.apply(variables, xs, seq_lengths=lengths)
    params = interop.params_from_flax(cell, variables["params"]["cell"])
    carry, ys = recurrence.run(cell, params, xs, lengths=lengths)
    valid = np.arange(T)[None, :, None] < LENGTHS[:, None, None]
    np.testing.assert_allclose(np.where(valid, ys, 0), np.where(valid, ys_f, 0), atol=1e-5)
    for ours, theirs in zip(
        jax.tree_util.tree_leaves(carry), jax.tree_util.tree_leaves(carry_f), strict=True
    ):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
