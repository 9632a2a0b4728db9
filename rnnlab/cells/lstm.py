"""Long short-term memory cell with forget gate, peepholes, layer norm and projection options."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnlab.cells.base import (
    along_last,
    check_hidden_size,
    init_stacked,
    layer_norm,
    make_initializer,
    project_inputs_linear,
    split_gates,
)
from rnnlab.typing import Array, Params, PRNGKey


class LSTMState(NamedTuple):
    """LSTM carry: cell state `c: [b, h]`, hidden state `h: [b, h]` (`[b, p]` with projection)."""

    c: Array
    h: Array


@dataclasses.dataclass(frozen=True)
class LSTMCell:
    """LSTM (Hochreiter & Schmidhuber 1997) with forget gate (Gers, Schmidhuber & Cummins 2000).

    Gate order i, f, g, o (PyTorch and Flax `OptimizedLSTMCell`):

        i = sigma(W_ii x_t + W_hi h_{t-1} + b_i [+ w_ci * c_{t-1}])
        f = sigma(W_if x_t + W_hf h_{t-1} + b_f [+ w_cf * c_{t-1}])
        g = tanh(W_ig x_t + W_hg h_{t-1} + b_g)
        c_t = f * c_{t-1} + i * g
        o = sigma(W_io x_t + W_ho h_{t-1} + b_o [+ w_co * c_t])
        h_t = o * tanh(c_t)            [h_t = W_hr (o * tanh(c_t)) with projection]

    Options:
        peephole: Gers & Schmidhuber (2000) peepholes `w_ci, w_cf, w_co: [h]` (diagonal).
        layer_norm: Ba, Kiros & Hinton (2016): the x- and h-pre-activations are each normalised
            over all 4h units before the bias is added, and `c_t` is normalised before the tanh.
        proj_size: LSTMP (Sak et al. 2014; PyTorch `proj_size`): `w_hr: [p, h]`, h is `[b, p]`.

    Carry: `LSTMState(c [b, h], h [b, h or p])`. Params: `w_ih: [4h, d]`, `w_hh: [4h, h or p]`,
    `b: [4h]` (PyTorch's b_ih + b_hh), plus the options' parameters.

    Initialisation: `w_ih` Glorot-uniform, `w_hh` orthogonal per gate (Saxe et al. 2014), bias zero
    except the forget gate at `forget_bias` = 1.0 (Gers et al. 2000; Jozefowicz et al. 2015).
    """

    hidden_size: int
    forget_bias: float = 1.0
    peephole: bool = False
    layer_norm: bool = False
    proj_size: int = 0
    input_init: str = "glorot_uniform"
    recurrent_init: str = "orthogonal"

    def __post_init__(self) -> None:
        check_hidden_size(self)
        if not 0 <= self.proj_size < self.hidden_size or self.proj_size != int(self.proj_size):
            raise ValueError(
                f"LSTMCell.proj_size must be an int in [0, hidden_size={self.hidden_size}), "
                f"got {self.proj_size} (0 disables the projection)"
            )

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    def init(self, key: PRNGKey, input_size: int) -> Params:
        h, p = self.hidden_size, self.output_size
        k_ih, k_hh, k_hr = jax.random.split(key, 3)
        bias = jnp.zeros((4 * h,), jnp.float32).at[h : 2 * h].set(self.forget_bias)
        params: Params = {
            "w_ih": init_stacked(make_initializer(self.input_init, h), k_ih, 4, (h, input_size)),
            "w_hh": init_stacked(make_initializer(self.recurrent_init, h), k_hh, 4, (h, p)),
            "b": bias,
        }
        if self.peephole:
            params |= {n: jnp.zeros((h,), jnp.float32) for n in ("w_ci", "w_cf", "w_co")}
        if self.layer_norm:
            params |= {
                "ln_x_scale": jnp.ones((4 * h,), jnp.float32),
                "ln_h_scale": jnp.ones((4 * h,), jnp.float32),
                "ln_c_scale": jnp.ones((h,), jnp.float32),
                "ln_c_bias": jnp.zeros((h,), jnp.float32),
            }
        if self.proj_size:
            params["w_hr"] = make_initializer(self.input_init, h)(k_hr, (p, h), jnp.float32)
        return params

    def initial_carry(self, batch_size: int, dtype: Any = jnp.float32) -> LSTMState:
        return LSTMState(
            c=jnp.zeros((batch_size, self.hidden_size), dtype),
            h=jnp.zeros((batch_size, self.output_size), dtype),
        )

    def project_inputs(self, params: Params, xs: Array, matmul_dtype: str = "float32") -> Array:
        if not self.layer_norm:
            return project_inputs_linear(params, xs, matmul_dtype=matmul_dtype)
        wx = project_inputs_linear(params, xs, bias=False, matmul_dtype=matmul_dtype)
        return layer_norm(wx, params["ln_x_scale"], params["b"])

    def feedback(self, carry: LSTMState) -> Array:
        return carry.h

    def gates(
        self, params: Params, carry: LSTMState, projected_t: Array, recurrent_t: Array
    ) -> dict[str, Array]:
        """One step's gate activations, `[b, h]` each: `input`, `forget`, `output` (sigmoids)
        and `candidate` (tanh). `pointwise` is built on it; diagnostics read it."""
        if self.layer_norm:
            recurrent_t = layer_norm(recurrent_t, params["ln_h_scale"])
        i, f, g, o = split_gates(projected_t + recurrent_t, 4)
        c_prev = carry.c
        if self.peephole:
            i = i + along_last(params["w_ci"], c_prev) * c_prev
            f = f + along_last(params["w_cf"], c_prev) * c_prev
        i, f, g = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g)
        if self.peephole:
            c = f * c_prev + i * g
            o = o + along_last(params["w_co"], c) * c
        return {"input": i, "forget": f, "candidate": g, "output": jax.nn.sigmoid(o)}

    def pointwise(
        self, params: Params, carry: LSTMState, projected_t: Array, recurrent_t: Array
    ) -> tuple[LSTMState, Array]:
        gates = self.gates(params, carry, projected_t, recurrent_t)
        c = gates["forget"] * carry.c + gates["input"] * gates["candidate"]
        c_out = layer_norm(c, params["ln_c_scale"], params["ln_c_bias"]) if self.layer_norm else c
        h = gates["output"] * jnp.tanh(c_out)
        if self.proj_size:
            h = h @ params["w_hr"].T
        return LSTMState(c=c, h=h), h

    # What else computes exactly this cell (`rnnlab.cells.base`: optional capabilities): PyTorch
    # has the projection but neither peepholes nor layer norm; the kernel and Flax, the plain cell.

    @property
    def native_kernel(self) -> str | None:
        return None if self.peephole or self.layer_norm or self.proj_size else "lstm"

    @property
    def torch_module(self) -> tuple[str, dict[str, Any]] | None:
        if self.peephole or self.layer_norm:
            return None
        return "LSTM", ({"proj_size": self.proj_size} if self.proj_size else {})

    @property
    def flax_cell(self) -> tuple[str, dict[str, Any]] | None:
        plain = not (self.peephole or self.layer_norm or self.proj_size)
        return ("OptimizedLSTMCell", {}) if plain else None
