"""Gated recurrent unit, reset-after (cuDNN/PyTorch) and reset-before (Cho et al. 2014)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from rnnlab.cells.base import (
    HiddenStateCell,
    along_last,
    check_hidden_size,
    init_stacked,
    make_initializer,
    split_gates,
)
from rnnlab.typing import Array, Params, PRNGKey


@dataclasses.dataclass(frozen=True)
class GRUCell(HiddenStateCell):
    """GRU (Cho et al. 2014, "Learning Phrase Representations using RNN Encoder-Decoder").

    Gate order r, z, n (PyTorch, cuDNN, Flax `GRUCell`). With `reset_after=True` (default,
    PyTorch `nn.GRU`, cuDNN):

        r = sigma(W_ir x_t + W_hr h_{t-1} + b_r)
        z = sigma(W_iz x_t + W_hz h_{t-1} + b_z)
        n = tanh(W_in x_t + b_n + r * (W_hn h_{t-1} + b_hn))
        h_t = (1 - z) * n + z * h_{t-1}

    With `reset_after=False` (the paper's original form) the reset gate acts before the matmul:
    `n = tanh(W_in x_t + b_n + W_hn (r * h_{t-1}))`. That needs `r` before `W_hn` can be applied,
    so `w_hh: [2h, h]` holds only the r, z rows and `w_hn: [h, h]` is applied inside the step.

    Carry: `h: [b, h]`. Params: `w_ih: [3h, d]`, `w_hh: [3h, h]` (`[2h, h]` reset-before), `b: [3h]`
    (PyTorch's b_ih + b_hh for r, z and b_in for n), `b_hn: [h]` (reset-after) or `w_hn: [h, h]`.

    Initialisation: `w_ih` Glorot-uniform, recurrent matrices orthogonal per gate, biases zero.
    """

    hidden_size: int
    reset_after: bool = True
    input_init: str = "glorot_uniform"
    recurrent_init: str = "orthogonal"

    def __post_init__(self) -> None:
        check_hidden_size(self)

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def init(self, key: PRNGKey, input_size: int) -> Params:
        h = self.hidden_size
        k_ih, k_hh, k_hn = jax.random.split(key, 3)
        rec = make_initializer(self.recurrent_init, h)
        params: Params = {
            "w_ih": init_stacked(make_initializer(self.input_init, h), k_ih, 3, (h, input_size)),
            "b": jnp.zeros((3 * h,), jnp.float32),
        }
        if self.reset_after:
            params["w_hh"] = init_stacked(rec, k_hh, 3, (h, h))
            params["b_hn"] = jnp.zeros((h,), jnp.float32)
        else:
            params["w_hh"] = init_stacked(rec, k_hh, 2, (h, h))
            params["w_hn"] = init_stacked(rec, k_hn, 1, (h, h))
        return params

    def gates(
        self, params: Params, carry: Array, projected_t: Array, recurrent_t: Array
    ) -> dict[str, Array]:
        """One step's gate activations, `[b, h]` each: `reset`, `update` (`z`, the weight of the
        old state) and `candidate` (`n`). `pointwise` is built on it; diagnostics read it."""
        h_prev = carry
        x_r, x_z, x_n = split_gates(projected_t, 3)
        if self.reset_after:
            h_r, h_z, h_n = split_gates(recurrent_t, 3)
            r = jax.nn.sigmoid(x_r + h_r)
            z = jax.nn.sigmoid(x_z + h_z)
            n = jnp.tanh(x_n + r * (h_n + along_last(params["b_hn"], h_n)))
        else:
            h_r, h_z = split_gates(recurrent_t, 2)
            r = jax.nn.sigmoid(x_r + h_r)
            z = jax.nn.sigmoid(x_z + h_z)
            n = jnp.tanh(x_n + (r * h_prev) @ params["w_hn"].T)
        return {"reset": r, "update": z, "candidate": n}

    def pointwise(
        self, params: Params, carry: Array, projected_t: Array, recurrent_t: Array
    ) -> tuple[Array, Array]:
        gates = self.gates(params, carry, projected_t, recurrent_t)
        z = gates["update"]
        h = (1.0 - z) * gates["candidate"] + z * carry
        return h, h

    # What else computes exactly this cell (`rnnlab.cells.base`: optional capabilities): the
    # reset-after form only; nothing else has the reset-before one.

    @property
    def native_kernel(self) -> str | None:
        return "gru" if self.reset_after else None

    @property
    def torch_module(self) -> tuple[str, dict[str, Any]] | None:
        return ("GRU", {}) if self.reset_after else None

    @property
    def flax_cell(self) -> tuple[str, dict[str, Any]] | None:
        return ("GRUCell", {}) if self.reset_after else None
