"""Flax NNX modules over the pure layer functions, for users who build their models in NNX.

rnnlab's own models are linen (`rnnlab.nn`, `rnnlab.models`); these modules let an NNX model hold
a recurrent stack or layer as an attribute. They hold exactly what `rnnlab.recurrence.init_stack`
(or `init_layer`) returns, each array an `nnx.Param` in the same nested layout, and call
`run_stack` (or `run_layer`): no second implementation of the recurrence, so a stack computes
bit-for-bit what the linen `rnnlab.nn.RecurrentStack` computes with the same params.

Training and evaluation follow NNX's convention (`nnx.Dropout`): `deterministic=False` (the
default, training) draws the dropout, recurrent-dropout and zoneout masks from the module's
`dropout` stream of the `nnx.Rngs` it was built with; `model.eval()` (or
`nnx.view(model, deterministic=True)`) passes no key, which is evaluation (no dropout, zoneout by
its expectation); `model.train()` switches back.

    stack = RecurrentStack(LSTMCell(64), input_size=16, num_layers=2, rngs=nnx.Rngs(0))
    carries, ys = stack(xs)                    # xs: [b, t, 16] -> ys: [b, t, 64]
    layers = stack.stack_params()              # plain arrays, `init_stack`'s layout
    stack.load_params(interop.stack_from_torch(cell, module.state_dict(), 2, False))
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from rnnlab import recurrence
from rnnlab.cells.base import Cell
from rnnlab.typing import Array, Carry, Params, PRNGKey


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _as_params(tree: Any) -> Any:
    """Every array of a params pytree wrapped as an `nnx.Param`, the nesting kept."""
    return nnx.data(jax.tree_util.tree_map(nnx.Param, tree))


def _values(tree: Any) -> Any:
    """The arrays inside a pytree of `nnx.Param`s (tracers under `nnx.jit`/`nnx.grad`)."""
    return jax.tree_util.tree_map(lambda p: p[...], tree, is_leaf=_is_variable)


def _load(held: Any, params: Any, what: str) -> None:
    """Set the `nnx.Param`s `held` to `params`, which must have the same structure and shapes."""
    shapes = lambda tree: {  # noqa: E731
        jax.tree_util.keystr(path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }
    have, got = shapes(_values(held)), shapes(params)
    if have != got:
        wrong = sorted(k for k in have.keys() | got.keys() if have.get(k) != got.get(k))
        raise ValueError(
            f"params do not fit this {what} at {wrong[0]}: it holds {have.get(wrong[0])}, got "
            f"{got.get(wrong[0])}; build it with the cell, input_size, num_layers and "
            "bidirectional the params were made for"
        )
    jax.tree_util.tree_map(lambda p, v: p.set_value(v), held, params, is_leaf=_is_variable)


def _stochastic(options: recurrence.RecurrentOptions) -> bool:
    return options.dropout > 0 or options.recurrent_dropout > 0 or options.zoneout > 0


class _Recurrent(nnx.Module):
    """What the stack and the layer share: the cell, options, direction settings, and the key
    for training-time masks (`nnx.Dropout`'s train/eval convention)."""

    def __init__(
        self,
        cell: Cell,
        *,
        bidirectional: bool,
        merge: str,
        options: recurrence.RecurrentOptions,
        deterministic: bool,
        rngs: nnx.Rngs,
    ) -> None:
        if merge not in recurrence.MERGES:
            raise ValueError(f"merge must be one of {recurrence.MERGES}, got {merge!r}")
        self.cell = cell
        self.bidirectional = bidirectional
        self.merge = merge
        self.options = options
        self.deterministic = deterministic
        self.rngs = rngs["dropout"].fork() if _stochastic(options) else nnx.data(None)

    @property
    def output_size(self) -> int:
        """Width of the outputs: doubled when both directions are concatenated."""
        return recurrence.layer_output_size(self.cell, self.bidirectional, self.merge)

    def set_view(self, deterministic: bool | None = None) -> None:
        """`nnx.view(module, deterministic=...)`: a view in training or evaluation mode."""
        if deterministic is not None:
            self.deterministic = deterministic

    def _key(self) -> PRNGKey | None:
        """A fresh key from the `dropout` stream in training mode with any rate > 0, else None
        (evaluation, as `run_stack` defines it)."""
        if self.deterministic or self.rngs is None:
            return None
        return self.rngs()


class RecurrentStack(_Recurrent):
    """`num_layers` recurrent layers of one cell, optionally bidirectional, as an NNX module.

    Attributes:
        layers: `init_stack`'s list (one dict per layer, `{"forward", "backward"}` pairs when
            bidirectional) with every array an `nnx.Param`.
        cell, bidirectional, merge, options: as in `rnnlab.nn.RecurrentStack`.
        deterministic: evaluation mode (`model.eval()` sets it, `model.train()` clears it).
    """

    def __init__(
        self,
        cell: Cell,
        input_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        merge: str = "concat",
        options: recurrence.RecurrentOptions = recurrence.DEFAULT_OPTIONS,
        deterministic: bool = False,
        rngs: nnx.Rngs,
    ) -> None:
        """Draws the params with `rngs.params()`; the masks come from `rngs["dropout"]` (a
        `dropout` or `default` stream), needed only when a rate of `options` is > 0."""
        super().__init__(
            cell,
            bidirectional=bidirectional,
            merge=merge,
            options=options,
            deterministic=deterministic,
            rngs=rngs,
        )
        params = recurrence.init_stack(
            cell, rngs.params(), input_size, num_layers, bidirectional, merge
        )
        self.layers = _as_params(params)

    def stack_params(self) -> list[Params]:
        """The params as plain arrays, in `init_stack`'s layout (for `run_stack`, the linen
        `RecurrentStack` under `layer_{l}`, or `rnnlab.interop.stack_to_torch`)."""
        return _values(self.layers)

    def load_params(self, params: list[Params]) -> None:
        """Replace the params with `params` in `init_stack`'s layout (e.g. from
        `rnnlab.interop.stack_from_torch`); structure and shapes must match."""
        _load(self.layers, params, "stack")

    def __call__(
        self,
        xs: Array,
        *,
        lengths: Array | None = None,
        resets: Array | None = None,
        initial_carry: list[Carry] | None = None,
    ) -> tuple[list[Carry], Array]:
        """`xs: [b, t, d]` -> (final carries, one per layer (pairs when bidirectional),
        `ys: [b, t, output_size]`); `lengths`, `resets`, `initial_carry` as in `run_stack`."""
        return recurrence.run_stack(
            self.cell,
            self.stack_params(),
            xs,
            bidirectional=self.bidirectional,
            merge=self.merge,
            lengths=lengths,
            resets=resets,
            initial_carry=initial_carry,
            options=self.options,
            key=self._key(),
        )


class RecurrentLayer(_Recurrent):
    """One recurrent layer (optionally bidirectional) as an NNX module: `run_layer`, so the
    `options`' recurrent dropout and zoneout apply and its `dropout` (between layers) does not.

    Attributes:
        params: `init_layer`'s dict (`{"forward", "backward"}` when bidirectional), every array
            an `nnx.Param`.
        cell, bidirectional, merge, options, deterministic: as in `RecurrentStack`.
    """

    def __init__(
        self,
        cell: Cell,
        input_size: int,
        *,
        bidirectional: bool = False,
        merge: str = "concat",
        options: recurrence.RecurrentOptions = recurrence.DEFAULT_OPTIONS,
        deterministic: bool = False,
        rngs: nnx.Rngs,
    ) -> None:
        super().__init__(
            cell,
            bidirectional=bidirectional,
            merge=merge,
            options=options,
            deterministic=deterministic,
            rngs=rngs,
        )
        self.params = _as_params(
            recurrence.init_layer(cell, rngs.params(), input_size, bidirectional)
        )

    def layer_params(self) -> Params:
        """The params as plain arrays, in `init_layer`'s layout."""
        return _values(self.params)

    def load_params(self, params: Params) -> None:
        """Replace the params with `params` in `init_layer`'s layout."""
        _load(self.params, params, "layer")

    def __call__(
        self,
        xs: Array,
        *,
        lengths: Array | None = None,
        resets: Array | None = None,
        initial_carry: Carry | None = None,
    ) -> tuple[Carry, Array]:
        """`xs: [b, t, d]` -> (final carry (a pair when bidirectional), `ys: [b, t,
        output_size]`); the arguments as in `run_layer`."""
        return recurrence.run_layer(
            self.cell,
            self.layer_params(),
            xs,
            bidirectional=self.bidirectional,
            merge=self.merge,
            lengths=lengths,
            resets=resets,
            initial_carry=initial_carry,
            options=self.options,
            key=self._key(),
        )
