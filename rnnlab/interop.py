"""Load weights from PyTorch (`nn.LSTM`/`GRU`/`RNN`) and Flax (`linen` cells) into rnnlab params.

Which framework layer matches a cell is the cell's own declaration (`torch_module`, `flax_cell`;
see `rnnlab.cells.base`), so a new cell that computes, say, `nn.GRU`'s math loads its weights
without any change here. What is kept here is the layout of each framework's layers.

Nothing here imports torch: pass `module.state_dict()` (tensors are converted with `np.asarray`
after `.detach()`), so the loaders also read weights saved by other frameworks in PyTorch's layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from rnnlab.cells.base import Cell, declared
from rnnlab.typing import Params

TORCH_MODULES = ("LSTM", "GRU", "RNN")
"""The `torch.nn` recurrent modules whose `state_dict()` layout is known here."""

FLAX_GATES = {"OptimizedLSTMCell": "ifgo", "LSTMCell": "ifgo", "GRUCell": "rzn", "SimpleCell": ""}
"""The `flax.linen` cells whose params are known here, by their gates in rnnlab's order (the
LSTMs' biases sit in their `h*` Dense layers, the GRU's in its `i*` ones plus `hn`; the Elman
`SimpleCell` has one `i` and one `h` Dense layer)."""


def _array(value: Any) -> jnp.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return jnp.asarray(np.asarray(value), jnp.float32)


def _reference(cell: Cell, capability: str, framework: str, known: Any) -> tuple[str, Any]:
    """The `(name, kwargs)` the cell declares for `capability`, checked against `known` names."""
    reference = declared(cell, capability)
    if reference is None:
        raise ValueError(
            f"no {framework} equivalent known for {cell!r}: {type(cell).__name__} declares no "
            f"`{capability}` for these settings"
        )
    name, kwargs = reference
    if name not in known:
        raise ValueError(
            f"{type(cell).__name__}.{capability} names {framework}'s {name!r}, whose weights "
            f"rnnlab.interop cannot read (known: {', '.join(known)})"
        )
    return name, kwargs


def params_from_torch(
    cell: Cell, state_dict: Mapping[str, Any], layer: int = 0, reverse: bool = False
) -> Params:
    """One layer/direction of a PyTorch RNN module's `state_dict()` as `cell` params.

    PyTorch keeps two biases; rnnlab folds them into one `b` (and keeps GRU's `b_hn` apart,
    because PyTorch applies it inside the reset gate).

    Raises:
        ValueError: the cell declares no `torch_module` (e.g. an LSTM with peepholes)."""
    module, kwargs = _reference(cell, "torch_module", "PyTorch", TORCH_MODULES)
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    get = lambda name: _array(state_dict[name + suffix])  # noqa: E731
    w_ih, w_hh = get("weight_ih"), get("weight_hh")
    has_bias = "bias_ih" + suffix in state_dict
    b_ih = get("bias_ih") if has_bias else jnp.zeros(w_ih.shape[0])
    b_hh = get("bias_hh") if has_bias else jnp.zeros(w_ih.shape[0])
    if module == "GRU":
        h = cell.hidden_size
        bias = b_ih + jnp.concatenate([b_hh[: 2 * h], jnp.zeros(h)])
        return {"w_ih": w_ih, "w_hh": w_hh, "b": bias, "b_hn": b_hh[2 * h :]}
    params = {"w_ih": w_ih, "w_hh": w_hh, "b": b_ih + b_hh}
    if kwargs.get("proj_size"):
        params["w_hr"] = get("weight_hr")
    return params


def stack_from_torch(
    cell: Cell, state_dict: Mapping[str, Any], num_layers: int, bidirectional: bool
) -> list[Params]:
    """All layers of a PyTorch RNN module, in `rnnlab.recurrence.init_stack`'s layout."""
    layers = []
    for layer in range(num_layers):
        forward = params_from_torch(cell, state_dict, layer)
        if bidirectional:
            backward = params_from_torch(cell, state_dict, layer, reverse=True)
            layers.append({"forward": forward, "backward": backward})
        else:
            layers.append(forward)
    return layers


def params_from_flax(cell: Cell, flax_params: Mapping[str, Any]) -> Params:
    """Params of the `flax.linen` cell the rnnlab cell declares (`flax_cell`: `LSTMCell`,
    `OptimizedLSTMCell`, `GRUCell` or `SimpleCell`), given the dict under the cell's name.

    Raises:
        ValueError: the cell declares no `flax_cell` (e.g. the reset-before GRU)."""
    name, _ = _reference(cell, "flax_cell", "flax.linen", tuple(FLAX_GATES))
    kernel = lambda name: _array(flax_params[name]["kernel"]).T  # noqa: E731
    bias = lambda name: _array(flax_params[name]["bias"])  # noqa: E731
    gates = FLAX_GATES[name]
    if not gates:  # SimpleCell: h = act(i(x) + h(h_prev)), the bias in `i`
        return {"w_ih": kernel("i"), "w_hh": kernel("h"), "b": bias("i")}
    params = {
        "w_ih": jnp.concatenate([kernel("i" + g) for g in gates]),
        "w_hh": jnp.concatenate([kernel("h" + g) for g in gates]),
    }
    if name == "GRUCell":
        return params | {"b": jnp.concatenate([bias("i" + g) for g in gates]), "b_hn": bias("hn")}
    return params | {"b": jnp.concatenate([bias("h" + g) for g in gates])}
