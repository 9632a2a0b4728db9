"""Elman (vanilla) RNN cell."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from rnnlab.cells.base import (
    HiddenStateCell,
    check_hidden_size,
    init_stacked,
    make_initializer,
)
from rnnlab.typing import Array, Params, PRNGKey

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


@dataclasses.dataclass(frozen=True)
class ElmanCell(HiddenStateCell):
    """Elman RNN (Elman 1990), PyTorch's `nn.RNN`.

        h_t = act(W_ih x_t + W_hh h_{t-1} + b),   act in {tanh, relu}

    Carry: `h: [b, h]`. Params: `w_ih: [h, d]`, `w_hh: [h, h]`, `b: [h]` (PyTorch's b_ih + b_hh).

    Attributes:
        hidden_size: number of hidden units h.
        activation: `tanh` or `relu`.
        input_init: initializer name for `w_ih` (see `make_initializer`).
        recurrent_init: initializer name for `w_hh`; orthogonal (Saxe et al. 2014) by default.
    """

    hidden_size: int
    activation: str = "tanh"
    input_init: str = "glorot_uniform"
    recurrent_init: str = "orthogonal"

    def __post_init__(self) -> None:
        check_hidden_size(self)
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"ElmanCell.activation must be one of {sorted(ACTIVATIONS)}, "
                f"got {self.activation!r}"
            )

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def init(self, key: PRNGKey, input_size: int) -> Params:
        k_ih, k_hh = jax.random.split(key)
        h = self.hidden_size
        return {
            "w_ih": init_stacked(make_initializer(self.input_init, h), k_ih, 1, (h, input_size)),
            "w_hh": init_stacked(make_initializer(self.recurrent_init, h), k_hh, 1, (h, h)),
            "b": jnp.zeros((h,), jnp.float32),
        }

    def pointwise(
        self, params: Params, carry: Array, projected_t: Array, recurrent_t: Array
    ) -> tuple[Array, Array]:
        h = ACTIVATIONS[self.activation](projected_t + recurrent_t)
        return h, h

    # What else computes exactly this cell (`rnnlab.cells.base`: optional capabilities).

    @property
    def native_kernel(self) -> str | None:
        return {"tanh": "tanh", "relu": "relu"}.get(self.activation)

    @property
    def torch_module(self) -> tuple[str, dict[str, Any]] | None:
        return "RNN", {"nonlinearity": self.activation}

    @property
    def flax_cell(self) -> tuple[str, dict[str, Any]] | None:
        return "SimpleCell", {"activation_fn": ACTIVATIONS[self.activation]}
