"""sLSTM, the scalar-memory cell of xLSTM (Beck et al. 2024): exponential input gating with a
normaliser state and a stabiliser state, and recurrent connections (so it runs sequentially).

Reference: Maximilian Beck, Korbinian Pöppel, Markus Spanring, Andreas Auer, Oleksandra
Prudnikova, Michael Kopp, Günter Klambauer, Johannes Brandstetter, Sepp Hochreiter, "xLSTM:
Extended Long Short-Term Memory", NeurIPS 2024 (arXiv:2405.04517), Section 2.2, eqs. 8-17.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnlab.cells.base import (
    check_hidden_size,
    init_stacked,
    make_initializer,
    project_inputs_linear,
    split_gates,
)
from rnnlab.typing import Array, Params, PRNGKey


class SLSTMState(NamedTuple):
    """sLSTM carry, each `[b, h]`: cell state `c`, normaliser `n`, stabiliser `m` (log scale of
    `c` and `n`), hidden state `h`."""

    c: Array
    n: Array
    m: Array
    h: Array


@dataclasses.dataclass(frozen=True)
class SLSTMCell:
    """sLSTM (Beck et al. 2024, eqs. 8-17), gate order i, f, z, o (the xLSTM code's):

        i~, f~, z~, o~ = W x_t + R h_{t-1} + b
        m_t = max(log f_t + m_{t-1}, i~)              stabiliser, log f_t = log sigma(f~)
        i'_t = exp(i~ - m_t),  f'_t = exp(log f_t + m_{t-1} - m_t)
        c_t = f'_t * c_{t-1} + i'_t * tanh(z~)
        n_t = f'_t * n_{t-1} + i'_t
        h_t = sigma(o~) * c_t / n_t

    The exponential input gate `exp(i~)` and the sigmoid forget gate are the paper's choice for
    sLSTM; the stabiliser rescales `c` and `n` alike, so `h` is that of the unstabilised
    equations (tested). Carry: `SLSTMState(c, n, m, h)`, zeros to start.

    A difference from the paper: its sLSTM splits the units into heads with block-diagonal
    recurrent matrices `R`; here `R` (`w_hh: [4h, h]`) is one dense head, because the layer
    owns the recurrent matmul and keeps it dense.

    Initialisation: `w_ih` Glorot-uniform, `w_hh` orthogonal per gate, biases zero except the
    forget gate's, spread over `forget_bias_range` (linspace over the units, as xLSTM's code
    initialises its forget gates: long memories for some units, short for others).
    """

    hidden_size: int
    forget_bias_range: tuple[float, float] = (3.0, 6.0)
    input_init: str = "glorot_uniform"
    recurrent_init: str = "orthogonal"

    def __post_init__(self) -> None:
        check_hidden_size(self)
        # A YAML list arrives as a list (unhashable): keep the frozen dataclass hashable.
        object.__setattr__(self, "forget_bias_range", tuple(self.forget_bias_range))

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def init(self, key: PRNGKey, input_size: int) -> Params:
        h = self.hidden_size
        k_ih, k_hh = jax.random.split(key)
        low, high = self.forget_bias_range
        bias = (
            jnp.zeros((4 * h,), jnp.float32)
            .at[h : 2 * h]
            .set(jnp.linspace(low, high, h, dtype=jnp.float32))
        )
        return {
            "w_ih": init_stacked(make_initializer(self.input_init, h), k_ih, 4, (h, input_size)),
            "w_hh": init_stacked(make_initializer(self.recurrent_init, h), k_hh, 4, (h, h)),
            "b": bias,
        }

    def initial_carry(self, batch_size: int, dtype: Any = jnp.float32) -> SLSTMState:
        zeros = jnp.zeros((batch_size, self.hidden_size), dtype)
        return SLSTMState(zeros, zeros, zeros, zeros)

    def project_inputs(self, params: Params, xs: Array) -> Array:
        return project_inputs_linear(params, xs)

    def feedback(self, carry: SLSTMState) -> Array:
        return carry.h

    def _gates(
        self, carry: SLSTMState, projected_t: Array, recurrent_t: Array
    ) -> tuple[dict[str, Array], Array]:
        """The stabilised gates and the new stabiliser `m_t`."""
        i_tilde, f_tilde, z_tilde, o_tilde = split_gates(projected_t + recurrent_t, 4)
        log_f = jax.nn.log_sigmoid(f_tilde)
        m = jnp.maximum(log_f + carry.m, i_tilde)
        gates = {
            "input": jnp.exp(i_tilde - m),
            "forget": jnp.exp(log_f + carry.m - m),
            "candidate": jnp.tanh(z_tilde),
            "output": jax.nn.sigmoid(o_tilde),
        }
        return gates, m

    def gates(
        self, params: Params, carry: SLSTMState, projected_t: Array, recurrent_t: Array
    ) -> dict[str, Array]:
        """One step's stabilised gates (diagnostics): `input` i'_t, `forget` f'_t, `candidate`
        tanh(z~_t), `output` o_t."""
        return self._gates(carry, projected_t, recurrent_t)[0]

    def pointwise(
        self, params: Params, carry: SLSTMState, projected_t: Array, recurrent_t: Array
    ) -> tuple[SLSTMState, Array]:
        g, m = self._gates(carry, projected_t, recurrent_t)
        c = g["forget"] * carry.c + g["input"] * g["candidate"]
        n = g["forget"] * carry.n + g["input"]
        h = g["output"] * c / n
        return SLSTMState(c, n, m, h), h
