"""LRU, the Linear Recurrent Unit (Orvieto et al. 2023): a diagonal complex linear recurrence
with an exponential parameterisation of its eigenvalues, so the associative scan runs it.

Reference: Antonio Orvieto, Samuel L. Smith, Albert Gu, Anushan Fernando, Caglar Gulcehre,
Razvan Pascanu, Soham De, "Resurrecting Recurrent Neural Networks for Long Sequences", ICML 2023
(arXiv:2303.06349), Section 3 and the code of its Appendix A.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from rnnlab.cells.base import (
    LinearRecurrenceCell,
    along_last,
    check_hidden_size,
    project_inputs_linear,
)
from rnnlab.typing import Array, Params, PRNGKey


def _at_least_float32(x: Array) -> Array:
    """`x` in float32 or wider: complex numbers exist only in 64 and 128 bits (bfloat16 and
    float16 carries compute their complex step in float32 and are cast back)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


@dataclasses.dataclass(frozen=True)
class LRUCell(LinearRecurrenceCell):
    """LRU (Orvieto et al. 2023, eqs. 7-8 and Appendix A), `N = hidden_size` complex units:

        lambda = exp(-exp(nu_log) + i exp(theta_log))          |lambda| < 1 for any nu_log
        gamma  = exp(gamma_log)                                 normalisation, per unit
        h_t    = lambda * h_{t-1} + gamma * (B x_t),   B = B_re + i B_im

    a linear recurrence (`linear_recurrence`) with complex `a_t = lambda`, `b_t = gamma B x_t`.
    The carry and the output hold `h_t` as real numbers, `[Re h_t, Im h_t]: [b, 2N]`
    (`output_size = 2N`; `state` / `carry_of` convert).

    The paper's readout `y_t = Re(C h_t) + D * x_t` is linear in `(Re h_t, Im h_t, x_t)`, so in
    rnnlab it is the linear map that follows the cell (the next layer's input projection, the
    task's head, or a block's output projection: `model=lru_block`), not part of the cell;
    `Re(C h) = [C_re, -C_im] @ [Re h; Im h]`.

    Params: `w_ih: [2N, d]` (`[B_re; B_im]`, no bias, as the paper), `nu_log`, `theta_log`,
    `gamma_log: [N]`; no recurrent matrix. Initialisation (Appendix A): `lambda` uniform on the
    ring `r_min <= |lambda| <= r_max` with phase in `[0, max_phase]`,
    `gamma = sqrt(1 - |lambda|^2)`, `B_re`, `B_im` normal with variance `1 / (2d)`.
    """

    hidden_size: int
    r_min: float = 0.0
    r_max: float = 1.0
    max_phase: float = 2 * math.pi
    linear_recurrence = True
    complex_state = True

    def __post_init__(self) -> None:
        check_hidden_size(self)
        if not 0.0 <= self.r_min < self.r_max <= 1.0:
            raise ValueError(
                f"LRUCell needs 0 <= r_min < r_max <= 1, got r_min={self.r_min}, r_max={self.r_max}"
            )
        if not 0.0 < self.max_phase <= 2 * math.pi:
            raise ValueError(f"LRUCell needs 0 < max_phase <= 2 pi, got {self.max_phase}")

    @property
    def output_size(self) -> int:
        return 2 * self.hidden_size

    def initial_carry(self, batch_size: int, dtype=jnp.float32) -> Array:
        return jnp.zeros((batch_size, 2 * self.hidden_size), dtype)

    def init(self, key: PRNGKey, input_size: int) -> Params:
        n = self.hidden_size
        k_radius, k_phase, k_b = jax.random.split(key, 3)
        u1 = jax.random.uniform(k_radius, (n,), jnp.float32)
        u2 = jax.random.uniform(k_phase, (n,), jnp.float32)
        squared = u1 * (self.r_max**2 - self.r_min**2) + self.r_min**2  # |lambda|^2
        nu_log = jnp.log(-0.5 * jnp.log(squared))
        # |lambda|^2 = exp(-2 exp(nu_log)) = squared: gamma = sqrt(1 - |lambda|^2)
        gamma_log = 0.5 * jnp.log1p(-squared)
        w_ih = jax.random.normal(k_b, (2 * n, input_size), jnp.float32) / math.sqrt(2 * input_size)
        return {
            "w_ih": w_ih,
            "nu_log": nu_log,
            "theta_log": jnp.log(self.max_phase * u2),
            "gamma_log": gamma_log,
        }

    def project_inputs(self, params: Params, xs: Array, matmul_dtype: str = "float32") -> Array:
        """`[B_re x_t; B_im x_t]`, `[..., d] -> [..., 2N]` (the paper's B has no bias)."""
        return project_inputs_linear(params, xs, bias=False, matmul_dtype=matmul_dtype)

    def eigenvalues(self, params: Params) -> Array:
        """`lambda: [N]` complex, `|lambda| = exp(-exp(nu_log)) < 1`."""
        nu_log, theta_log = (
            _at_least_float32(params["nu_log"]),
            _at_least_float32(params["theta_log"]),
        )
        return jnp.exp(jax.lax.complex(-jnp.exp(nu_log), jnp.exp(theta_log)))

    def gates(
        self, params: Params, carry: Array, projected_t: Array, recurrent_t: Array
    ) -> dict[str, Array]:
        """Per-step quantities for diagnostics: the decay `|lambda|` (the same at every step)."""
        modulus = jnp.abs(self.eigenvalues(params))
        return {"decay": jnp.broadcast_to(modulus, (*carry.shape[:-1], self.hidden_size))}

    def state(self, carry: Array) -> Array:
        re, im = jnp.split(_at_least_float32(carry), 2, axis=-1)
        return jax.lax.complex(re, im)

    def carry_of(self, h: Array) -> Array:
        return jnp.concatenate([jnp.real(h), jnp.imag(h)], axis=-1)

    def coefficients(self, params: Params, projected: Array) -> tuple[Array, Array]:
        """`(lambda, gamma B x_t)`, complex `[..., N]` each, from `projected: [..., 2N]`."""
        bx = self.state(projected)
        bx = bx * along_last(jnp.exp(params["gamma_log"]), bx)
        lam = along_last(self.eigenvalues(params), bx)
        return jnp.broadcast_to(lam, bx.shape), bx
