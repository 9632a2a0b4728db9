"""mLSTM, the matrix-memory cell of xLSTM (Beck et al. 2024): a key-value matrix memory per head,
written with an exponential input gate and read with a query; gates from the input alone.

Three forms of the same function, tested equal: the recurrent step (`MLSTMCell.pointwise`, run by
the layer like every cell, with lengths, resets, reverse, truncated BPTT and generation), the
parallel form (`parallel`, the paper's quadratic "attention-like" form over a whole sequence),
and the chunkwise form between them (`MLSTMCell.chunkwise`: parallel within chunks of
`chunk_size` steps, recurrent across chunks; the layer's `backend="chunkwise"`).

Reference: Maximilian Beck, Korbinian Pöppel, Markus Spanring, Andreas Auer, Oleksandra
Prudnikova, Michael Kopp, Günter Klambauer, Johannes Brandstetter, Sepp Hochreiter, "xLSTM:
Extended Long Short-Term Memory", NeurIPS 2024 (arXiv:2405.04517), Section 2.3 (eqs. 19-27) and
Appendix A.3 (the parallel form and its stabilisation).
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
)
from rnnlab.typing import Array, Params, PRNGKey


class MLSTMState(NamedTuple):
    """mLSTM carry: per head the matrix memory `C: [b, heads, dk, dk]` (key x value), the
    normaliser `n: [b, heads, dk]`, the stabiliser `m: [b, heads]` (log scale of C and n), and
    the last output `h: [b, h]` (what zoneout keeps and the layer reads as the output)."""

    C: Array
    n: Array
    m: Array
    h: Array


@dataclasses.dataclass(frozen=True)
class MLSTMCell:
    """mLSTM (Beck et al. 2024, eqs. 19-27), `num_heads` heads of `dk = hidden_size / num_heads`:

        q_t = W_q x_t + b_q,  k_t = (W_k x_t + b_k) / sqrt(dk),  v_t = W_v x_t + b_v
        i~_t = w_i x_t + b_i,  f~_t = w_f x_t + b_f        (one scalar per head)
        m_t = max(log sigma(f~_t) + m_{t-1}, i~_t)           stabiliser
        i'_t = exp(i~_t - m_t),  f'_t = exp(log sigma(f~_t) + m_{t-1} - m_t)
        C_t = f'_t C_{t-1} + i'_t k_t v_t^T,   n_t = f'_t n_{t-1} + i'_t k_t
        h_t = sigma(W_o x_t + b_o) * (C_t^T q_t) / max(|n_t . q_t|, exp(-m_t))

    The bound `exp(-m_t)` is the paper's `max(|n.q|, 1)` after the stabiliser's rescaling, so
    `h` equals the unstabilised equations' (tested). Gates read no `h_{t-1}`: no recurrent
    matrix (the layer's matmul gets an empty one, `with_recurrent_matrix`). Projection order of
    `w_ih`/`b`: q, k, v, o (h rows each), then i~, f~ (num_heads rows each).

    Initialisation: `w_ih` Glorot-uniform, biases zero except the forget gates', spread over
    `forget_bias_range` across heads (xLSTM's code). `chunk_size` changes no value: it is the
    chunk length of the chunkwise form (`chunkwise`, the layer's `backend="chunkwise"`).
    """

    hidden_size: int
    num_heads: int = 4
    forget_bias_range: tuple[float, float] = (3.0, 6.0)
    input_init: str = "glorot_uniform"
    chunk_size: int = 64
    recurrent_matrix = False

    def __post_init__(self) -> None:
        check_hidden_size(self)
        if self.num_heads < 1 or self.hidden_size % self.num_heads:
            raise ValueError(
                f"MLSTMCell.hidden_size ({self.hidden_size}) must be a multiple of num_heads "
                f"({self.num_heads})"
            )
        object.__setattr__(self, "forget_bias_range", tuple(self.forget_bias_range))
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int):
            raise ValueError(f"MLSTMCell.chunk_size must be an int, got {self.chunk_size!r}")
        if self.chunk_size < 1:
            raise ValueError(f"MLSTMCell.chunk_size must be >= 1, got {self.chunk_size}")

    @property
    def output_size(self) -> int:
        return self.hidden_size

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    def init(self, key: PRNGKey, input_size: int) -> Params:
        h, heads = self.hidden_size, self.num_heads
        k_qkvo, k_gates = jax.random.split(key)
        init = make_initializer(self.input_init, h)
        low, high = self.forget_bias_range
        gates_bias = jnp.concatenate(
            [jnp.zeros((heads,), jnp.float32), jnp.linspace(low, high, heads, dtype=jnp.float32)]
        )
        return {
            "w_ih": jnp.concatenate(
                [
                    init_stacked(init, k_qkvo, 4, (h, input_size)),
                    init_stacked(init, k_gates, 2, (heads, input_size)),
                ]
            ),
            "b": jnp.concatenate([jnp.zeros((4 * h,), jnp.float32), gates_bias]),
        }

    def initial_carry(self, batch_size: int, dtype: Any = jnp.float32) -> MLSTMState:
        heads, dk = self.num_heads, self.head_size
        return MLSTMState(
            jnp.zeros((batch_size, heads, dk, dk), dtype),
            jnp.zeros((batch_size, heads, dk), dtype),
            jnp.zeros((batch_size, heads), dtype),
            jnp.zeros((batch_size, self.hidden_size), dtype),
        )

    def project_inputs(self, params: Params, xs: Array, matmul_dtype: str = "float32") -> Array:
        return project_inputs_linear(params, xs, matmul_dtype=matmul_dtype)

    def feedback(self, carry: MLSTMState) -> Array:
        return carry.h

    def split(self, projected: Array) -> tuple[Array, ...]:
        """`(q, k, v, o~, i~, f~)`: q, k, v `[..., heads, dk]` (k scaled by 1/sqrt(dk)), o~
        `[..., h]`, i~ and f~ `[..., heads]`."""
        h, heads, dk = self.hidden_size, self.num_heads, self.head_size
        q, k, v, o = (projected[..., j * h : (j + 1) * h] for j in range(4))
        heads_of = lambda x: x.reshape(x.shape[:-1] + (heads, dk))  # noqa: E731
        i_tilde = projected[..., 4 * h : 4 * h + heads]
        f_tilde = projected[..., 4 * h + heads :]
        return (
            heads_of(q),
            heads_of(k) / jnp.sqrt(dk).astype(k.dtype),
            heads_of(v),
            o,
            i_tilde,
            f_tilde,
        )

    def gates(
        self, params: Params, carry: MLSTMState, projected_t: Array, recurrent_t: Array
    ) -> dict[str, Array]:
        """One step's gates (diagnostics): stabilised `input` i'_t and `forget` f'_t per head,
        `output` o_t per unit."""
        _, _, _, o_tilde, i_tilde, f_tilde = self.split(projected_t)
        i, f, _ = _stabilised(i_tilde, f_tilde, carry.m)
        return {"input": i, "forget": f, "output": jax.nn.sigmoid(o_tilde)}

    def pointwise(
        self, params: Params, carry: MLSTMState, projected_t: Array, recurrent_t: Array
    ) -> tuple[MLSTMState, Array]:
        q, k, v, o_tilde, i_tilde, f_tilde = self.split(projected_t)
        i, f, m = _stabilised(i_tilde, f_tilde, carry.m)
        C = f[..., None, None] * carry.C + i[..., None, None] * k[..., :, None] * v[..., None, :]
        n = f[..., None] * carry.n + i[..., None] * k
        numerator = jnp.einsum("...kv,...k->...v", C, q)
        denominator = jnp.maximum(jnp.abs(jnp.sum(n * q, axis=-1)), jnp.exp(-m))
        h_tilde = (numerator / denominator[..., None]).reshape(numerator.shape[:-2] + (-1,))
        h = jax.nn.sigmoid(o_tilde) * h_tilde
        return MLSTMState(C, n, m, h), h

    def chunkwise(
        self,
        params: Params,
        xs: Array,
        carry0: MLSTMState,
        valid: Array | None = None,
        matmul_dtype: str = "float32",
    ) -> tuple[MLSTMState, Array]:
        """The chunkwise-parallel form of the layer's recurrence (`_chunkwise`): `xs: [b, t, d]`
        from `carry0`, `valid: [b, t]` or None -> (final carry, `ys: [b, t, h]`), the input
        projection under `matmul_dtype` (the within-chunk products stay float32, as
        `pointwise` does in the scan). Declaring it is the `chunkwise` capability the layer's
        `backend="chunkwise"` asks for."""
        return _chunkwise(self, params, xs, carry0, valid, matmul_dtype)


def _stabilised(i_tilde: Array, f_tilde: Array, m_prev: Array) -> tuple[Array, Array, Array]:
    """`(i', f', m_t)` of the stabilised exponential gating (eqs. 15-17 of the paper)."""
    log_f = jax.nn.log_sigmoid(f_tilde)
    m = jnp.maximum(log_f + m_prev, i_tilde)
    return jnp.exp(i_tilde - m), jnp.exp(log_f + m_prev - m), m


def parallel(cell: MLSTMCell, params: Params, xs: Array) -> Array:
    """The parallel form over whole sequences from a zero state, `[b, t, d] -> [b, t, h]`
    (Beck et al. 2024, Appendix A.3): with `log F_t = sum_{s<=t} log sigma(f~_s)`,

        D~_ts = log F_t - log F_s + i~_s  (s <= t),   m_t = max_s D~_ts,   D'_ts = exp(D~_ts - m_t)
        S_ts = (q_t . k_s) D'_ts,   h~_t = sum_s S_ts v_s / max(|sum_s S_ts|, exp(-m_t))

    O(t^2) memory and work, no sequential dependency. No lengths, resets or initial carry (the
    recurrent step has those).
    """
    q, k, v, o_tilde, i_tilde, f_tilde = cell.split(cell.project_inputs(params, xs))
    log_f = jnp.cumsum(jax.nn.log_sigmoid(f_tilde), axis=1)  # [b, t, heads]
    log_d = log_f[:, :, None, :] - log_f[:, None, :, :] + i_tilde[:, None, :, :]  # [b, t, s, H]
    time = xs.shape[1]
    causal = jnp.tril(jnp.ones((time, time), bool))[None, :, :, None]
    log_d = jnp.where(causal, log_d, -jnp.inf)
    m = jnp.max(log_d, axis=2)  # [b, t, heads]
    scores = jnp.einsum("bthk,bshk->btsh", q, k) * jnp.exp(log_d - m[:, :, None, :])
    denominator = jnp.maximum(jnp.abs(jnp.sum(scores, axis=2)), jnp.exp(-m))
    h_tilde = jnp.einsum("btsh,bshv->bthv", scores, v) / denominator[..., None]
    return jax.nn.sigmoid(o_tilde) * h_tilde.reshape(h_tilde.shape[:2] + (-1,))


def _chunkwise(
    cell: MLSTMCell,
    params: Params,
    xs: Array,
    carry0: MLSTMState,
    valid: Array | None = None,
    matmul_dtype: str = "float32",
) -> tuple[MLSTMState, Array]:
    """The chunkwise-parallel form: `[b, t, d] -> (final carry, ys: [b, t, h])`, equal to the
    recurrent step from `carry0` (tested), in `ceil(t / chunk_size)` sequential steps.

    Within a chunk of `L = cell.chunk_size` steps the outputs come from the parallel form
    (`L x L` scores per head) plus the memory `C, n` carried in from the chunks before; between
    chunks only `(C, n, m)` is carried, as in xLSTM's chunkwise kernels (Beck et al. 2024;
    Yang et al. 2024, "Gated Linear Attention", Section 3.2). With `b_t` the sum of
    `log sigma(f~)` from the chunk's start to t and `m_0` the incoming stabiliser:

        D~_ts = b_t - b_s + i~_s (s <= t in the chunk),   m_t = max(b_t + m_0, max_s D~_ts)
        h~_t  = (e^(b_t + m_0 - m_t) C_0^T q_t + sum_s e^(D~_ts - m_t) (q_t . k_s) v_s)
                / max(|e^(b_t + m_0 - m_t) n_0 . q_t + sum_s e^(D~_ts - m_t) q_t . k_s|, e^(-m_t))

    `m_t` is the recurrent stabiliser exactly (its recursion unrolls to that maximum). Padding
    (`valid: [b, t]`, 0 past a sequence's length) holds the memory (`log sigma(f~) = 0`,
    `i~ = -inf`) and zeroes the outputs; the final `h` is each sequence's last valid one.
    """
    batch, time = xs.shape[:2]
    size = max(1, min(cell.chunk_size, time))  # a shorter sequence is one chunk, unpadded
    chunks = -(-time // size)
    pad = chunks * size - time
    q, k, v, o_tilde, i_tilde, f_tilde = cell.split(cell.project_inputs(params, xs, matmul_dtype))
    log_f = jax.nn.log_sigmoid(f_tilde)  # [b, t, heads]
    mask = jnp.ones((batch, time), bool) if valid is None else valid.astype(bool)
    log_f = jnp.where(mask[..., None], log_f, 0.0)
    i_tilde = jnp.where(mask[..., None], i_tilde, -jnp.inf)

    def chunked(x: Array, fill: float = 0.0) -> Array:  # [b, t, ...] -> [chunks, b, L, ...]
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2), constant_values=fill)
        x = x.reshape((batch, chunks, size) + x.shape[2:])
        return jnp.swapaxes(x, 0, 1)

    causal = jnp.tril(jnp.ones((size, size), bool))[None, :, :, None]  # [1, L(t), L(s), 1]

    def one_chunk(state, inputs):
        C0, n0, m0 = state
        q_c, k_c, v_c, i_c, f_c = inputs  # [b, L, heads, dk] x3, [b, L, heads] x2
        b = jnp.cumsum(f_c, axis=1)  # [b, L, heads]
        log_d = b[:, :, None, :] - b[:, None, :, :] + i_c[:, None, :, :]  # [b, t, s, heads]
        log_d = jnp.where(causal, log_d, -jnp.inf)
        from_state = b + m0[:, None, :]  # [b, L, heads]
        m = jnp.maximum(from_state, jnp.max(log_d, axis=2))
        weights = jnp.exp(log_d - m[:, :, None, :])
        scale = jnp.exp(from_state - m)  # [b, L, heads]
        scores = jnp.einsum("bthk,bshk->btsh", q_c, k_c) * weights
        numerator = jnp.einsum("btsh,bshv->bthv", scores, v_c) + scale[..., None] * jnp.einsum(
            "bhkv,bthk->bthv", C0, q_c
        )
        dot = jnp.sum(scores, axis=2) + scale * jnp.einsum("bhk,bthk->bth", n0, q_c)
        h_tilde = numerator / jnp.maximum(jnp.abs(dot), jnp.exp(-m))[..., None]
        # the memory at the chunk's last step, stabilised by its m
        m_end = m[:, -1]
        w_end = jnp.exp(b[:, -1:, :] - b + i_c - m_end[:, None, :])  # [b, L(s), heads]
        decay = jnp.exp(from_state[:, -1] - m_end)  # [b, heads]
        C = decay[..., None, None] * C0 + jnp.einsum("bsh,bshk,bshv->bhkv", w_end, k_c, v_c)
        n = decay[..., None] * n0 + jnp.einsum("bsh,bshk->bhk", w_end, k_c)
        return (C, n, m_end), h_tilde

    inputs = (chunked(q), chunked(k), chunked(v), chunked(i_tilde, -jnp.inf), chunked(log_f))
    (C, n, m), h_tilde = jax.lax.scan(one_chunk, (carry0.C, carry0.n, carry0.m), inputs)
    h_tilde = jnp.swapaxes(h_tilde, 0, 1).reshape(batch, chunks * size, cell.hidden_size)
    ys = jax.nn.sigmoid(o_tilde) * h_tilde[:, :time]
    ys = jnp.where(mask[..., None], ys, 0.0)
    lengths = jnp.sum(mask, axis=1)
    last = jnp.take_along_axis(ys, jnp.maximum(lengths - 1, 0)[:, None, None], axis=1)[:, 0]
    h = jnp.where((lengths > 0)[:, None], last, carry0.h)
    return MLSTMState(C, n, m, h), ys
