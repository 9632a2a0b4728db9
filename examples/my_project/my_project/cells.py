"""The update-gate RNN (UGRNN), as an rnnlab cell.

Collins, Sohl-Dickstein & Sussillo, "Capacity and Trainability in Recurrent Neural Networks",
ICLR 2017: a GRU without reset gate, one gate `g` mixing the old state with a candidate `c`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rnnlab.cells.base import (
    HiddenStateCell,
    check_hidden_size,
    init_stacked,
    make_initializer,
    split_gates,
)
from rnnlab.typing import Array, Params, PRNGKey


@dataclasses.dataclass(frozen=True)
class UGRNNCell(HiddenStateCell):
    """Update-gate RNN (Collins et al. 2017).

        g_t = sigmoid(W_ig x_t + W_hg h_{t-1} + b_g)
        c_t = tanh(W_ic x_t + W_hc h_{t-1} + b_c)
        h_t = g_t * h_{t-1} + (1 - g_t) * c_t

    Gate order `(g, c)`. Carry: `h: [b, h]`. Params: `w_ih: [2h, d]`, `w_hh: [2h, h]`,
    `b: [2h]` (the gate's half starts at `gate_bias`: a positive value keeps the state early in
    training, as a forget-gate bias of 1 does for an LSTM).

    Attributes:
        hidden_size: number of hidden units h.
        gate_bias: initial bias of the update gate `g`.
        input_init: initializer name for `w_ih` (see `rnnlab.cells.base.make_initializer`).
        recurrent_init: initializer name for `w_hh`.
    """

    hidden_size: int
    gate_bias: float = 1.0
    input_init: str = "glorot_uniform"
    recurrent_init: str = "orthogonal"

    def __post_init__(self) -> None:
        check_hidden_size(self)

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def init(self, key: PRNGKey, input_size: int) -> Params:
        h = self.hidden_size
        k_ih, k_hh = jax.random.split(key)
        bias = jnp.concatenate([jnp.full((h,), self.gate_bias), jnp.zeros((h,))])
        return {
            "w_ih": init_stacked(make_initializer(self.input_init, h), k_ih, 2, (h, input_size)),
            "w_hh": init_stacked(make_initializer(self.recurrent_init, h), k_hh, 2, (h, h)),
            "b": bias.astype(jnp.float32),
        }

    def pointwise(
        self, params: Params, carry: Array, projected_t: Array, recurrent_t: Array
    ) -> tuple[Array, Array]:
        g, c = split_gates(projected_t + recurrent_t, 2)
        g = jax.nn.sigmoid(g)
        h = g * carry + (1.0 - g) * jnp.tanh(c)
        return h, h
