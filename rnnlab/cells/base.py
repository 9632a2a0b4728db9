"""The cell contract and the helpers that every cell shares.

A cell is a frozen dataclass of hyperparameters (hashable, so it can be a `jit` static argument)
with pure methods over a plain dict of arrays. The *layer* (`rnnlab.recurrence`) owns the two
large matmuls of a recurrent layer:

    projected = cell.project_inputs(params, xs)          # [b, t, d] -> [b, t, g], hoisted
    for each t:                                           # inside lax.scan, in recurrence.py
        recurrent = cell.feedback(carry) @ params["w_hh"].T   # [b, h_fb] -> [b, g_rec]
        carry, y = cell.pointwise(params, carry, projected[:, t], recurrent)

and the cell supplies only `pointwise`, a function of (carry, projected input, recurrent
pre-activation) that is elementwise up to small per-row work (layer norm, a projection). Because
`w_hh` never appears inside `pointwise`, one hand-written backward pass serves every cell: inside
the backward scan only `d_recurrent @ W_hh`, all `W_hh` gradients as one matmul after it.
With the layer option `matmul_dtype="bfloat16"` (`rnnlab.precision`) these two
matmuls (and their gradients) take bfloat16 operands: the layer passes the dtype to
`project_inputs`; matmuls inside `pointwise` (LSTMP's `w_hr`, the GRU's `w_hn` with
`reset_after=False`, sLSTM's block-diagonal `R` with `num_heads > 1`) stay float32.

Parameter names follow PyTorch's fused-gate layout (`w_ih: [g, d]`, `w_hh: [g_rec, h_fb]`) with
one bias `b: [g]` (PyTorch's `b_ih + b_hh`; the GRU keeps `b_hn` apart because it sits inside the
reset gate), so loading PyTorch weights is a copy and a sum (`rnnlab.interop`).

Optional capabilities: what else computes exactly a cell's math, declared by the cell's class as
properties (or class attributes) and read with `declared(cell, name)`; None, or not declared at
all, means "nothing else does", and the generic paths (the XLA scan, no reference) are taken. No
list of cells exists anywhere else: the native kernel, `rnnlab.interop`, the benchmark and the
tests ask the cell.

    native_kernel   a key of `rnnlab.kernels.KINDS` ("lstm", "gru", "tanh", "relu"): the native
                    CPU kernel of that kind runs this cell (params in the layout `init` gives).
    torch_module    `(name, kwargs)`: `torch.nn.<name>(input_size, hidden_size, num_layers=...,
                    bidirectional=..., **kwargs)` computes this cell, and its `state_dict()`
                    loads with `rnnlab.interop.params_from_torch`.
    flax_cell       `(name, kwargs)`: `flax.linen.<name>(hidden_size, **kwargs)` computes this
                    cell, and its params load with `rnnlab.interop.params_from_flax`.
    linear_recurrence  True: the step is `h_t = a_t * h_{t-1} + b_t` and `y_t` = the carry,
                    with `(a, b) = cell.coefficients(params, projected)` from the projected
                    input alone (`[..., g] -> [..., n]` each), and no `w_hh` in its params
                    (`recurrent_matrix = False`, `with_recurrent_matrix`); the associative
                    scan (`rnnlab.recurrence.associative`) runs it in parallel. `h` is the
                    carry itself (`[b, h]`), or complex (`complex_state = True`, the LRU):
                    `state(carry)` and `carry_of(h)` convert between the real carry and `h`.

    log_space       True when `a_t, b_t > 0` always (a `linear_recurrence` whose
                    `log_coefficients(params, projected)` gives `(log a, log b)`; a property,
                    since it can hold for some settings only): the layer's
                    `backend="log_space"` runs it as a scan in logs, as Feng et al. (2024)
                    train minGRU / minLSTM.

    chunkwise       a method `(params, xs, carry0, valid, matmul_dtype) -> (final carry,
                    ys: [b, t, o])` computing the layer's recurrence chunk by chunk (parallel
                    within a chunk: mLSTM), its input projection under `matmul_dtype`; the
                    layer's `backend="chunkwise"` runs it.

Only a declaration of the cell's own class counts (`declared` ignores inherited ones): a subclass
may change the math, so it says again what still matches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from rnnlab import precision
from rnnlab.typing import Array, Carry, Params, PRNGKey

Initializer = Callable[[PRNGKey, tuple[int, ...], Any], Array]

INITIALIZERS: dict[str, Callable[..., Initializer]] = {
    "orthogonal": lambda: jax.nn.initializers.orthogonal(),
    "glorot_uniform": lambda: jax.nn.initializers.glorot_uniform(),
    "glorot_normal": lambda: jax.nn.initializers.glorot_normal(),
    "lecun_normal": lambda: jax.nn.initializers.lecun_normal(),
    "zeros": lambda: jax.nn.initializers.zeros,
}


def make_initializer(name: str, fan_hidden: int) -> Initializer:
    """Initializer by name: `uniform` is PyTorch's U(+-1/sqrt(h)), `uniform:<a>` is U(-a, a).

    Args:
        name: one of `orthogonal`, `glorot_uniform`, `glorot_normal`, `lecun_normal`, `zeros`,
            `uniform` (PyTorch default, scale from `fan_hidden`) or `uniform:<scale>`
            (e.g. `uniform:0.1`, Zaremba et al. 2014).
        fan_hidden: the hidden size that sets PyTorch's default uniform scale.
    """
    if name == "uniform" or name.startswith("uniform:"):
        scale = float(name.split(":", 1)[1]) if ":" in name else fan_hidden**-0.5
        return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
            key, shape, dtype, -scale, scale
        )
    if name not in INITIALIZERS:
        known = sorted([*INITIALIZERS, "uniform", "uniform:<scale>"])
        raise ValueError(f"unknown initializer {name!r}; choose one of {known}")
    return INITIALIZERS[name]()


def init_stacked(init: Initializer, key: PRNGKey, blocks: int, shape: tuple[int, int]) -> Array:
    """`blocks` independent draws of `shape` stacked on axis 0: one per gate, as the literature
    initialises each gate's matrix on its own (an orthogonal `[4h, h]` would couple the gates)."""
    keys = jax.random.split(key, blocks)
    return jnp.concatenate([init(k, shape, jnp.float32) for k in keys], axis=0)


def check_hidden_size(cell: object) -> None:
    """Raise a ValueError unless `cell.hidden_size` is a positive int (a typo in a config, say)."""
    size = cell.hidden_size  # type: ignore[attr-defined]
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"{type(cell).__name__}.hidden_size must be a positive int, got {size!r}")


def along_last(v: Array, x: Array) -> Array:
    """A `[f]` parameter vector shaped to broadcast against `x: [..., f]` (explicit ranks, so the
    code runs under `jax_numpy_rank_promotion="raise"`)."""
    return v.reshape((1,) * (x.ndim - 1) + v.shape)


def split_gates(x: Array, n: int) -> list[Array]:
    """Split the fused gate axis (last) into `n` equal parts, in PyTorch's gate order."""
    return jnp.split(x, n, axis=-1)


def layer_norm(x: Array, scale: Array, bias: Array | None = None, eps: float = 1e-5) -> Array:
    """Layer normalisation over the last axis (Ba, Kiros & Hinton 2016)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + eps) * along_last(scale, x)
    return y if bias is None else y + along_last(bias, x)


def project_inputs_linear(
    params: Params, xs: Array, bias: bool = True, matmul_dtype: str = "float32"
) -> Array:
    """The default hoisted input projection: `xs @ w_ih.T + b`, `[..., d] -> [..., g]`
    (`bias=False`: without `b`, for kernels that add it themselves); the matmul under
    `matmul_dtype` (`rnnlab.precision`), the bias added in float32."""
    projected = precision.einsum("...d,gd->...g", xs, params["w_ih"], matmul_dtype)
    return projected + along_last(params["b"], projected) if bias else projected


CAPABILITIES = (
    "native_kernel",
    "torch_module",
    "flax_cell",
    "linear_recurrence",
    "log_space",
    "chunkwise",
)
"""The optional capability declarations a cell class may make (see the module docstring)."""


def declared(cell: object, capability: str) -> Any:
    """What `cell`'s own class declares for `capability` (one of `CAPABILITIES`), or None.

    Inherited declarations are ignored: a subclass that changes the math must not run on a
    kernel or load weights meant for its parent, so it declares again what still holds."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown cell capability {capability!r}; one of {CAPABILITIES}")
    if capability not in vars(type(cell)):
        return None
    return getattr(cell, capability)


@runtime_checkable
class Cell(Protocol):
    """What every recurrent cell provides. See the module docstring for how a layer uses it."""

    hidden_size: int

    @property
    def output_size(self) -> int:
        """Width of `y_t` and of `feedback(carry)` (`h`, or `proj_size` for LSTMP)."""
        ...

    def init(self, key: PRNGKey, input_size: int) -> Params:
        """Fresh parameters for inputs of width `input_size`."""
        ...

    def initial_carry(self, batch_size: int, dtype: Any = jnp.float32) -> Carry:
        """The zero state for `batch_size` sequences."""
        ...

    def project_inputs(self, params: Params, xs: Array, matmul_dtype: str = "float32") -> Array:
        """Input projection for all time steps at once, `[b, t, d] -> [b, t, g]`.

        `matmul_dtype` ("float32" or "bfloat16", `rnnlab.precision`): the dtype of
        the projection's matmul operands, set by the layer (`RecurrentOptions.matmul_dtype`); a
        linear projection computes its matmul with `precision.einsum` under it (as
        `project_inputs_linear` does), one that is not a single layer-owned matmul may leave
        it float32 and says so."""
        ...

    def feedback(self, carry: Carry) -> Array:
        """The state that multiplies `w_hh`, `[b, h_fb]`."""
        ...

    def pointwise(
        self, params: Params, carry: Carry, projected_t: Array, recurrent_t: Array
    ) -> tuple[Carry, Array]:
        """One step's gate math given both pre-activations; returns (new carry, `y_t: [b, o]`).

        Must not read `params["w_ih"]` or `params["w_hh"]` (the layer's matmuls)."""
        ...


class HiddenStateCell:
    """Mixin for cells whose carry is the hidden state `h: [b, h]` itself (Elman, GRU, ...):
    zero initial state, the linear hoisted projection, and `h` fed back to `w_hh`."""

    hidden_size: int

    def initial_carry(self, batch_size: int, dtype: Any = jnp.float32) -> Array:
        return jnp.zeros((batch_size, self.hidden_size), dtype)

    def project_inputs(self, params: Params, xs: Array, matmul_dtype: str = "float32") -> Array:
        return project_inputs_linear(params, xs, matmul_dtype=matmul_dtype)

    def feedback(self, carry: Array) -> Array:
        return carry


class LinearRecurrenceCell(HiddenStateCell):
    """Mixin for linear recurrences: `h_t = a_t * h_{t-1} + b_t`, `y_t` = the carry, with
    `(a, b) = coefficients(params, projected)` from the input alone and no recurrent matrix, so
    `pointwise` (the sequential step) and the associative scan compute the same thing. A
    concrete cell still declares `linear_recurrence = True` on its own class (`declared`).

    `h` is the carry itself unless the cell overrides `state` / `carry_of` (a complex `h` kept
    in a real carry, `complex_state = True`: the LRU)."""

    hidden_size: int
    recurrent_matrix = False
    complex_state = False

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def coefficients(self, params: Params, projected: Array) -> tuple[Array, Array]:
        """`(a, b)`, each `[..., n]`, from the projected input `[..., g]` (any leading axes)."""
        raise NotImplementedError

    def state(self, carry: Array) -> Array:
        """The recurrence's `h` (`[..., n]`) held in `carry`: the carry itself by default."""
        return carry

    def carry_of(self, h: Array) -> Array:
        """The carry (and output) that holds `h`; the inverse of `state`."""
        return h

    def pointwise(
        self, params: Params, carry: Array, projected_t: Array, recurrent_t: Array
    ) -> tuple[Array, Array]:
        a, b = self.coefficients(params, projected_t)
        new = self.carry_of(a * self.state(carry) + b).astype(carry.dtype)
        return new, new


def with_recurrent_matrix(cell: Cell, params: Params) -> Params:
    """`params` with a `w_hh` for the layer's recurrent matmul: a cell whose gates read no
    `h_{t-1}` (class attribute `recurrent_matrix = False`: the linear recurrences, mLSTM) has
    none, and gets an empty `[0, h_fb]` one (its matmul is `[b, h_fb] @ [h_fb, 0]`); kept out of
    the params themselves, because a checkpoint cannot hold an empty array."""
    if "w_hh" in params or getattr(cell, "recurrent_matrix", True):
        return params
    dtype = params["w_ih"].dtype
    width = cell.feedback(cell.initial_carry(1, dtype)).shape[-1]
    return {**params, "w_hh": jnp.zeros((0, width), dtype)}


def step(cell: Cell, params: Params, carry: Carry, projected_t: Array) -> tuple[Carry, Array]:
    """`(carry, projected_x_t) -> (carry, y_t)`: one full step, the recurrent matmul included."""
    params = with_recurrent_matrix(cell, params)
    recurrent_t = cell.feedback(carry) @ params["w_hh"].T
    return cell.pointwise(params, carry, projected_t, recurrent_t)


def apply_cell(cell: Cell, params: Params, carry: Carry, x_t: Array) -> tuple[Carry, Array]:
    """One step from a raw input `x_t: [b, d]` (projection included), like a Flax cell call."""
    return step(cell, params, carry, cell.project_inputs(params, x_t))
