"""minGRU and minLSTM (Feng et al. 2024): gates from the input only, so the recurrence is linear.

    h_t = a_t * h_{t-1} + b_t,   (a_t, b_t) = coefficients(x_t)

With no `h_{t-1}` inside any gate, every step's coefficients are known before the recurrence
runs, and the whole sequence can be computed in parallel: the `associative` backend
(`rnnlab.recurrence.backends`) scans `(a, b)` pairs with `jax.lax.associative_scan`; the XLA scan
runs the same step sequentially (and is what generation uses). Both cells declare
`linear_recurrence`, which is what the associative backend asks for.

Reference: Leo Feng, Frederick Tung, Mohamed Osama Ahmed, Yoshua Bengio, Hossein Hajimirsadeghi,
"Were RNNs All We Needed?", 2024 (arXiv:2410.01201), Section 3 and Appendix B.

The paper trains in log space (Heinsen 2023), which needs `b_t > 0`: its candidate transform `g`
keeps `h~_t` positive (`positive_candidate`, on by default). Both cells declare `log_space` while
it is on, and give `(log a_t, log b_t)` directly (`log_coefficients`, with the paper's
`-softplus` forms); `backend="log_space"` scans those (`rnnlab.recurrence.associative`), and
`backend="associative"` scans `(a_t, b_t)` themselves, which multiplies and adds only and so
holds for any sign of `b_t` (`positive_candidate=false` too). `auto` keeps the sequential scan
on CPU (README "Modern recurrences").

Params: `w_ih: [G*h, d]`, `b: [G*h]` (G = 2 for minGRU: z, h~; 3 for minLSTM: f, i, h~); no
recurrent matrix (the layer's recurrent matmul gets an empty one, `with_recurrent_matrix`).
Carry: `h: [b, h]`; output `y_t = h_t`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rnnlab.cells.base import (
    LinearRecurrenceCell,
    check_hidden_size,
    init_stacked,
    make_initializer,
    split_gates,
)
from rnnlab.typing import Array, Params, PRNGKey


def positive(x: Array) -> Array:
    """The paper's `g` (Appendix B): `x + 0.5` for `x >= 0`, `sigmoid(x)` below; continuous,
    increasing and positive, so the hidden state stays positive as log-space training needs."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def log_positive(x: Array) -> Array:
    """`log g(x)`: `log(x + 0.5)` for `x >= 0`, `-softplus(-x)` below (both branches finite
    for every `x`, so the unused one puts no NaN into the gradient)."""
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


def log_sigmoid(x: Array) -> Array:
    """`log sigma(x) = -softplus(-x)`, exact where `sigma(x)` rounds to 0 or 1."""
    return -jax.nn.softplus(-x)


class _MinimalCell(LinearRecurrenceCell):
    """What minGRU and minLSTM share: `G` fused input projections and the candidate `g`."""

    hidden_size: int
    positive_candidate: bool
    input_init: str
    GATES = 0

    def init(self, key: PRNGKey, input_size: int) -> Params:
        h = self.hidden_size
        init = make_initializer(self.input_init, h)
        return {
            "w_ih": init_stacked(init, key, self.GATES, (h, input_size)),
            "b": jnp.zeros((self.GATES * h,), jnp.float32),
        }

    def candidate(self, projected: Array) -> Array:
        return positive(projected) if self.positive_candidate else projected

    @property
    def log_space(self) -> bool:
        """`b_t > 0` (the capability `log_space`): with the paper's positive candidate `g`."""
        return bool(self.positive_candidate)


@dataclasses.dataclass(frozen=True)
class MinGRUCell(_MinimalCell):
    """minGRU (Feng et al. 2024, Section 3.1):

        z_t  = sigma(W_z x_t + b_z)
        h~_t = g(W_h x_t + b_h)           (g = `positive`; identity with positive_candidate=False)
        h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t

    so `a_t = 1 - z_t`, `b_t = z_t * h~_t`. Gate order of `w_ih`/`b`: z, h~.
    Initialisation: `w_ih` Glorot-uniform per gate, biases zero.
    """

    hidden_size: int
    positive_candidate: bool = True
    input_init: str = "glorot_uniform"
    linear_recurrence = True
    GATES = 2

    def __post_init__(self) -> None:
        check_hidden_size(self)

    def gates(
        self, params: Params, carry: Array, projected_t: Array, recurrent_t: Array
    ) -> dict[str, Array]:
        """One step's gate activations (diagnostics): `update` z_t, `candidate` h~_t."""
        k, h_tilde = split_gates(projected_t, 2)
        return {"update": jax.nn.sigmoid(k), "candidate": self.candidate(h_tilde)}

    def coefficients(self, params: Params, projected: Array) -> tuple[Array, Array]:
        k, h_tilde = split_gates(projected, 2)
        z = jax.nn.sigmoid(k)
        return 1.0 - z, z * self.candidate(h_tilde)

    log_space = _MinimalCell.log_space

    def log_coefficients(self, params: Params, projected: Array) -> tuple[Array, Array]:
        """`(log(1 - z_t), log z_t + log h~_t)` as the paper's code computes them
        (`log(1 - sigma(k)) = -softplus(k)`); needs `positive_candidate`."""
        k, h_tilde = split_gates(projected, 2)
        return log_sigmoid(-k), log_sigmoid(k) + log_positive(h_tilde)


@dataclasses.dataclass(frozen=True)
class MinLSTMCell(_MinimalCell):
    """minLSTM (Feng et al. 2024, Section 3.2, with the normalised gates of its "length
    independence scaling"):

        f_t  = sigma(W_f x_t + b_f),   i_t = sigma(W_i x_t + b_i)
        f'_t = f_t / (f_t + i_t),      i'_t = i_t / (f_t + i_t)
        h~_t = g(W_h x_t + b_h)
        h_t  = f'_t * h_{t-1} + i'_t * h~_t

    so `a_t = f'_t`, `b_t = i'_t * h~_t`. Gate order of `w_ih`/`b`: f, i, h~. With `normalize`
    false, the unnormalised `h_t = f_t * h_{t-1} + i_t * h~_t` of the paper's first form.
    Initialisation: `w_ih` Glorot-uniform per gate, biases zero.
    """

    hidden_size: int
    normalize: bool = True
    positive_candidate: bool = True
    input_init: str = "glorot_uniform"
    linear_recurrence = True
    GATES = 3

    def __post_init__(self) -> None:
        check_hidden_size(self)

    def gates(
        self, params: Params, carry: Array, projected_t: Array, recurrent_t: Array
    ) -> dict[str, Array]:
        """One step's gate activations (diagnostics): `forget` f'_t, `input` i'_t, `candidate`."""
        f, i, h_tilde = self._gates(projected_t)
        return {"forget": f, "input": i, "candidate": h_tilde}

    def _gates(self, projected: Array) -> tuple[Array, Array, Array]:
        k_f, k_i, h_tilde = split_gates(projected, 3)
        f, i = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
        if self.normalize:
            f, i = f / (f + i), i / (f + i)
        return f, i, self.candidate(h_tilde)

    def coefficients(self, params: Params, projected: Array) -> tuple[Array, Array]:
        f, i, h_tilde = self._gates(projected)
        return f, i * h_tilde

    log_space = _MinimalCell.log_space

    def log_coefficients(self, params: Params, projected: Array) -> tuple[Array, Array]:
        """`(log f'_t, log i'_t + log h~_t)` as the paper's code computes them: normalised,
        `log f' = -softplus(d)`, `log i' = -softplus(-d)` with `d = log i - log f`
        `= softplus(-k_f) - softplus(-k_i)`; needs `positive_candidate`."""
        k_f, k_i, h_tilde = split_gates(projected, 3)
        log_f, log_i = log_sigmoid(k_f), log_sigmoid(k_i)
        if self.normalize:
            d = log_i - log_f
            log_f, log_i = log_sigmoid(-d), log_sigmoid(d)
        return log_f, log_i + log_positive(h_tilde)
