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

    Heads (`num_heads`, the paper's memory mixing within a head only): the units split into
    `num_heads` groups of `h / num_heads`, and `R` is block-diagonal, one `[h/H, h/H]` block per
    gate and head (`r: [4, H, h/H, h/H]`), applied inside `pointwise` (the layer's dense
    recurrent matmul is then empty, `recurrent_matrix` false). With `num_heads=1` `R` is the
    dense layer-owned `w_hh: [4h, h]`, the layout (and checkpoints) of a plain LSTM.

    Initialisation: `w_ih` Glorot-uniform, `R` orthogonal per gate (and head), biases zero
    except the forget gate's, spread over `forget_bias_range` (linspace over the units, as
    xLSTM's code initialises its forget gates: long memories for some units, short for others).
    """

    hidden_size: int
    num_heads: int = 1
    forget_bias_range: tuple[float, float] = (3.0, 6.0)
    input_init: str = "glorot_uniform"
    recurrent_init: str = "orthogonal"

    def __post_init__(self) -> None:
        check_hidden_size(self)
        heads = self.num_heads
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise ValueError(f"SLSTMCell.num_heads must be a positive int, got {heads!r}")
        if self.hidden_size % heads:
            raise ValueError(
                f"SLSTMCell.hidden_size ({self.hidden_size}) must be a multiple of num_heads "
                f"({heads}): each head holds hidden_size / num_heads units"
            )
        # A YAML list arrives as a list (unhashable): keep the frozen dataclass hashable.
        object.__setattr__(self, "forget_bias_range", tuple(self.forget_bias_range))

    @property
    def output_size(self) -> int:
        return self.hidden_size

    @property
    def recurrent_matrix(self) -> bool:
        """Whether the layer's dense recurrent matmul holds `R` (one head only)."""
        return self.num_heads == 1

    def init(self, key: PRNGKey, input_size: int) -> Params:
        h, heads = self.hidden_size, self.num_heads
        k_ih, k_hh = jax.random.split(key)
        low, high = self.forget_bias_range
        bias = (
            jnp.zeros((4 * h,), jnp.float32)
            .at[h : 2 * h]
            .set(jnp.linspace(low, high, h, dtype=jnp.float32))
        )
        params = {
            "w_ih": init_stacked(make_initializer(self.input_init, h), k_ih, 4, (h, input_size)),
            "b": bias,
        }
        recurrent_init = make_initializer(self.recurrent_init, h // heads)
        if heads == 1:
            params["w_hh"] = init_stacked(recurrent_init, k_hh, 4, (h, h))
        else:
            width = h // heads
            blocks = init_stacked(recurrent_init, k_hh, 4 * heads, (width, width))
            params["r"] = blocks.reshape(4, heads, width, width)
        return params

    def block_recurrent(self, params: Params, h: Array) -> Array:
        """`R h_{t-1}` with block-diagonal `R`: `h: [b, h] -> [b, 4h]` in gate order."""
        heads = self.num_heads
        h_heads = h.reshape(h.shape[0], heads, h.shape[-1] // heads)
        out = jnp.einsum("bnk,gnjk->bgnj", h_heads, params["r"])
        return out.reshape(h.shape[0], 4 * h.shape[-1])

    def initial_carry(self, batch_size: int, dtype: Any = jnp.float32) -> SLSTMState:
        zeros = jnp.zeros((batch_size, self.hidden_size), dtype)
        return SLSTMState(zeros, zeros, zeros, zeros)

    def project_inputs(self, params: Params, xs: Array, matmul_dtype: str = "float32") -> Array:
        return project_inputs_linear(params, xs, matmul_dtype=matmul_dtype)

    def feedback(self, carry: SLSTMState) -> Array:
        return carry.h

    def _gates(
        self, params: Params, carry: SLSTMState, projected_t: Array, recurrent_t: Array
    ) -> tuple[dict[str, Array], Array]:
        """The stabilised gates and the new stabiliser `m_t`."""
        if self.num_heads > 1:  # the layer's matmul was empty: R is applied here, per head
            recurrent_t = self.block_recurrent(params, carry.h)
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
        return self._gates(params, carry, projected_t, recurrent_t)[0]

    def pointwise(
        self, params: Params, carry: SLSTMState, projected_t: Array, recurrent_t: Array
    ) -> tuple[SLSTMState, Array]:
        g, m = self._gates(params, carry, projected_t, recurrent_t)
        c = g["forget"] * carry.c + g["input"] * g["candidate"]
        n = g["forget"] * carry.n + g["input"]
        h = g["output"] * c / n
        return SLSTMState(c, n, m, h), h
