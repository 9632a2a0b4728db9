"""What the tests of alternative recurrence kernels (native CPU, cuDNN) share."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def weighted_loss(ys: jax.Array, carry) -> jax.Array:
    """A scalar in which every output and carry entry gets a different cotangent, so that a
    gradient check cannot pass by symmetry."""
    weights = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    total = jnp.sum(weights * ys)
    for leaf in jax.tree_util.tree_leaves(carry):
        total = total + jnp.sum(jnp.sin(leaf))
    return total


ISA_PARITY_HIDDEN = (20, 32)
"""Hidden sizes of `isa_parity_errors`, taken in turn by the cells: 20 takes the BLAS product and
leaves a remainder after the 16-lane gate loop; 32 takes the packed GEMM (on the AVX-512 path)."""


def _parity(
    batch: int, time: int, size: int, hidden_of: Callable[[int], int]
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """For every cell with a native kernel (discovered from `conf/cell/`; the i-th at hidden size
    `hidden_of(i)`), under lengths, resets and recurrent dropout: the largest difference
    `|native - xla| / (1 + |xla|)` over the loss, outputs, final carry and every gradient
    (params, inputs, initial carry), and the native values themselves (`<cell>-h<h>/<i>`)."""
    from rnnlab import recurrence
    from tests.cell_configs import build_cell, cells_declaring

    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    xs = jax.random.normal(keys[0], (batch, time, size))
    lengths = (jnp.arange(batch) * 3) % (time + 1)
    resets = jax.random.bernoulli(keys[1], 0.3, (batch, time))
    errors, values = {}, {}
    for i, name in enumerate(cells_declaring("native_kernel")):
        hidden = hidden_of(i)
        cell = build_cell(name, hidden)
        params = cell.init(keys[2], size)
        mask = recurrence.recurrent_dropout_mask(keys[3], 0.3, (batch, hidden), xs.dtype)
        carry0 = jax.tree_util.tree_map(
            lambda c: jax.random.normal(keys[4], c.shape), cell.initial_carry(batch)
        )

        def loss(params, xs, carry0, backend, cell=cell, mask=mask):
            carry, ys = recurrence.run(
                cell,
                params,
                xs,
                initial_carry=carry0,
                lengths=lengths,
                resets=resets,
                recurrent_mask=mask,
                backend=backend,
            )
            return weighted_loss(ys, carry), (carry, ys)

        grad = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True), static_argnums=3)
        native, xla = (grad(params, xs, carry0, backend) for backend in ("native", "xla"))
        leaves = jax.tree_util.tree_leaves(native)
        pairs = zip(leaves, jax.tree_util.tree_leaves(xla), strict=True)
        key = f"{name}-h{hidden}"
        errors[key] = max(float(jnp.max(jnp.abs(a - b) / (1 + jnp.abs(b)))) for a, b in pairs)
        values.update({f"{key}/{j}": np.asarray(leaf) for j, leaf in enumerate(leaves)})
    return errors, values


def isa_parity_errors() -> dict[str, float]:
    """For every cell with a native kernel (discovered from `conf/cell/`), at the hidden sizes of
    `ISA_PARITY_HIDDEN` in turn: the largest difference `|native - xla| / (1 + |xla|)` between the
    native kernel and the XLA scan over the loss, outputs, final carry and every gradient
    (params, inputs, initial carry), under lengths, resets and recurrent dropout; tiny shapes
    (`[b=3, t=4, d=3]`).

    Run in a subprocess per ISA by `tests/test_kernel_isa.py` (`RNNLAB_NATIVE_ISA` is read when
    the library is loaded, once per process)."""
    return _parity(3, 4, 3, lambda i: ISA_PARITY_HIDDEN[i % len(ISA_PARITY_HIDDEN)])[0]


THREADED_SHAPE = (32, 5, 8, 96)
"""`[b, t, d]` and the hidden size of `threaded_parity`: every native cell's step is then large
enough for the kernel's second thread (b * gates * h >= 2^18, see `choose_split` in
`csrc/rnn_kernels.cc`), and 96 takes the packed product on the AVX-512 path."""


def threaded_parity() -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """`_parity` at `THREADED_SHAPE`: run once per `RNNLAB_NATIVE_SPLIT` (read once per process)
    by `tests/test_kernel_isa.py`."""
    batch, time, size, hidden = THREADED_SHAPE
    return _parity(batch, time, size, lambda i: hidden)


if __name__ == "__main__":
    import json
    import sys

    from rnnlab import kernels

    report = {"isa": kernels.isa(), "reason": kernels.unavailable_reason()}
    if report["reason"] is None:
        if len(sys.argv) > 1:  # --threaded OUT.npz: the threaded shapes, values saved to OUT
            report["errors"], values = threaded_parity()
            np.savez(sys.argv[2], **values)
        else:
            report["errors"] = isa_parity_errors()
    print(json.dumps(report))
