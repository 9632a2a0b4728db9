"""RG-LRU, the Real-Gated Linear Recurrent Unit of Griffin and Hawk (De et al. 2024): a diagonal
linear recurrence whose decay is gated by the input, so the associative scan runs it.

Reference: Soham De, Samuel L. Smith, Anushan Fernando, Aleksandar Botev, George Cristian-Muraru,
Albert Gu, Ruba Haroun, Leonard Berrada, Yutian Chen, Srivatsan Srinivasan, Guillaume Desjardins,
Arnaud Doucet, David Budden, Yee Whye Teh, Razvan Pascanu, Nando De Freitas, Caglar Gulcehre,
"Griffin: Mixing Gated Linear Recurrences with Local Attention for Efficient Language Models",
2024 (arXiv:2402.19427), Section 2.4; google-deepmind/recurrentgemma for the initialisation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rnnlab.cells.base import (
    LinearRecurrenceCell,
    along_last,
    check_hidden_size,
    init_stacked,
    make_initializer,
    split_gates,
)
from rnnlab.typing import Array, Params, PRNGKey


@dataclasses.dataclass(frozen=True)
class RGLRUCell(LinearRecurrenceCell):
    """RG-LRU (De et al. 2024, eqs. 1-4), on the cell's own input projection `u_t = W_u x_t`
    (in Hawk's block the RG-LRU reads a convolved branch of width h; here the bare cell, for
    like-for-like sweeps with the LSTM):

        r_t = sigma(W_a x_t + b_a)                      recurrence gate
        i_t = sigma(W_x x_t + b_x)                      input gate
        a_t = a^(c r_t),  a = sigma(-Lambda)             log a_t = -c r_t softplus(Lambda)
        h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * u_t)

    a linear recurrence (`linear_recurrence`): `a_t` as above, `b_t = sqrt(1 - a_t^2) i_t u_t`.
    Gate order of `w_ih`/`b`: r, i, u. Params: `w_ih: [3h, d]`, `b: [3h]`, `a_param: [h]`
    (Lambda); no recurrent matrix. Carry `h: [b, h]`, output `y_t = h_t`.

    Initialisation (recurrentgemma's `rnn_param_init`): the base decay `a = sigma(-Lambda)` with
    `a^2` uniform in `[min_radius^2, max_radius^2]` (0.9 to 0.999 by default), `w_ih`
    Glorot-uniform, biases zero.
    A difference from recurrentgemma: at a packed-sequence reset it sets the normaliser
    `sqrt(1 - a_t^2)` to 1; here a reset restarts from a zero carry like every cell, keeping it.
    """

    hidden_size: int
    c: float = 8.0
    min_radius: float = 0.9
    max_radius: float = 0.999
    input_init: str = "glorot_uniform"
    linear_recurrence = True

    def __post_init__(self) -> None:
        check_hidden_size(self)
        if not 0.0 < self.min_radius < self.max_radius < 1.0:
            raise ValueError(
                f"RGLRUCell needs 0 < min_radius < max_radius < 1, got {self.min_radius} and "
                f"{self.max_radius}"
            )

    def init(self, key: PRNGKey, input_size: int) -> Params:
        h = self.hidden_size
        k_ih, k_a = jax.random.split(key)
        init = make_initializer(self.input_init, h)
        squared = jax.random.uniform(k_a, (h,), jnp.float32, self.min_radius**2, self.max_radius**2)
        log_a = 0.5 * jnp.log(squared)  # a = exp(-softplus(Lambda)): Lambda = softplus^-1(-log a)
        return {
            "w_ih": init_stacked(init, k_ih, 3, (h, input_size)),
            "b": jnp.zeros((3 * h,), jnp.float32),
            "a_param": jnp.log(jnp.expm1(-log_a)),
        }

    def gates(
        self, params: Params, carry: Array, projected_t: Array, recurrent_t: Array
    ) -> dict[str, Array]:
        """One step's gate activations (diagnostics): `recurrence` r_t, `input` i_t, and the
        step's decay `a_t`."""
        r, i, _ = self._split(projected_t)
        return {"recurrence": r, "input": i, "decay": jnp.exp(self._log_a(params, r))}

    def _split(self, projected: Array) -> tuple[Array, Array, Array]:
        k_r, k_i, u = split_gates(projected, 3)
        return jax.nn.sigmoid(k_r), jax.nn.sigmoid(k_i), u

    def _log_a(self, params: Params, r: Array) -> Array:
        return -self.c * r * along_last(jax.nn.softplus(params["a_param"]), r)

    def coefficients(self, params: Params, projected: Array) -> tuple[Array, Array]:
        """`(a_t, b_t)`, each `[..., h]`, from the projected input `[..., 3h]`."""
        r, i, u = self._split(projected)
        log_a = self._log_a(params, r)
        # sqrt(1 - a^2) = sqrt(-expm1(2 log a)): accurate for a close to 1
        return jnp.exp(log_a), jnp.sqrt(-jnp.expm1(2.0 * log_a)) * (i * u)
