"""The Flax (linen) bridge: modules that hold a cell's params and call the pure functions.

Linen, not NNX: linen's `init`/`apply` keep parameters as plain nested dicts outside the module,
which is exactly the pytree our pure cell functions, Optax and Orbax consume; no object state to
split or merge around `jit`, `grad` and `scan`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn

from rnnlab import recurrence
from rnnlab.cells.base import Cell
from rnnlab.typing import Array, Carry, Params


class RecurrentStack(nn.Module):
    """`num_layers` recurrent layers of one cell, optionally bidirectional, as a Flax module.

    Params: `layer_{l}` holds `cell.init(...)` (or `{"forward", "backward"}` pairs), so the pure
    functions in `rnnlab.recurrence` and the interop loaders see the same dicts.

    Attributes:
        cell: the cell description (frozen dataclass).
        num_layers: stacked layers.
        bidirectional: run a reverse direction too (within each sequence's length).
        merge: "concat" or "sum" for the two directions' outputs.
        options: dropout between layers, recurrent dropout, zoneout, scan unroll, backward pass,
            input projection and kernel (`rnnlab.recurrence.RecurrentOptions`), passed to every
            layer unchanged.
    """

    cell: Cell
    num_layers: int = 1
    bidirectional: bool = False
    merge: str = "concat"
    options: recurrence.RecurrentOptions = recurrence.DEFAULT_OPTIONS

    @property
    def output_size(self) -> int:
        """Width of the stack's outputs."""
        return recurrence.layer_output_size(self.cell, self.bidirectional, self.merge)

    def layer_params(self, input_size: int) -> list[Params]:
        params = []
        size = input_size
        for index in range(self.num_layers):
            init = functools.partial(
                recurrence.init_layer, self.cell, bidirectional=self.bidirectional
            )
            params.append(self.param(recurrence.layer_name(index), init, size))
            size = self.output_size
        return params

    def zero_carry(self, batch_size: int, dtype: Any = None) -> list[Carry]:
        """Zero carries, one per layer (pairs when bidirectional), for truncated BPTT."""
        kwargs = {} if dtype is None else {"dtype": dtype}
        one = self.cell.initial_carry(batch_size, **kwargs)
        return [(one, one) if self.bidirectional else one for _ in range(self.num_layers)]

    @nn.compact
    def __call__(
        self,
        xs: Array,
        lengths: Array | None = None,
        resets: Array | None = None,
        initial_carry: list[Carry] | None = None,
        train: bool = False,
        carry_deltas: list[Carry] | None = None,
        trace: bool = False,
    ) -> tuple[list[Carry], Array] | tuple[list[Carry], Array, list[Any]]:
        """`xs: [b, t, d]` -> (final carries per layer, `ys: [b, t, output_size]`).

        With `train=True` and any dropout/zoneout rate > 0 the module needs a `dropout` RNG.
        `carry_deltas` and `trace` are the diagnostics' view inside the layers (see
        `rnnlab.recurrence.run_stack`; `rnnlab.diagnostics.gradflow` passes them through a method
        interceptor, so models never do)."""
        params = self.layer_params(xs.shape[-1])
        options = self.options
        stochastic = options.dropout > 0 or options.recurrent_dropout > 0 or options.zoneout > 0
        key = self.make_rng("dropout") if train and stochastic else None
        return recurrence.run_stack(
            self.cell,
            params,
            xs,
            bidirectional=self.bidirectional,
            merge=self.merge,
            lengths=lengths,
            resets=resets,
            initial_carry=initial_carry,
            options=options,
            key=key,
            carry_deltas=carry_deltas,
            trace=trace,
        )
