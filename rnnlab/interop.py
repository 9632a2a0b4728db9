"""Load weights from PyTorch (`nn.LSTM`/`GRU`/`RNN`) and Flax (`linen` cells) into rnnlab params.

Nothing here imports torch: pass `module.state_dict()` (tensors are converted with `np.asarray`
after `.detach()`), so the loaders also read weights saved by other frameworks in PyTorch's layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from rnnlab.cells.base import Cell
from rnnlab.cells.elman import ElmanCell
from rnnlab.cells.gru import GRUCell
from rnnlab.cells.lstm import LSTMCell
from rnnlab.typing import Params


def _array(value: Any) -> jnp.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return jnp.asarray(np.asarray(value), jnp.float32)


def _check_supported(cell: Cell) -> None:
    if isinstance(cell, LSTMCell) and (cell.peephole or cell.layer_norm):
        raise ValueError("PyTorch's nn.LSTM has no peephole or layer-norm weights to load")
    if isinstance(cell, GRUCell) and not cell.reset_after:
        raise ValueError("PyTorch's nn.GRU is reset-after; use GRUCell(reset_after=True)")
    if not isinstance(cell, LSTMCell | GRUCell | ElmanCell):
        raise ValueError(f"no PyTorch equivalent known for {type(cell).__name__}")


def params_from_torch(
    cell: Cell, state_dict: Mapping[str, Any], layer: int = 0, reverse: bool = False
) -> Params:
    """One layer/direction of a PyTorch RNN module's `state_dict()` as `cell` params.

    PyTorch keeps two biases; rnnlab folds them into one `b` (and keeps GRU's `b_hn` apart,
    because PyTorch applies it inside the reset gate)."""
    _check_supported(cell)
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    get = lambda name: _array(state_dict[name + suffix])  # noqa: E731
    w_ih, w_hh = get("weight_ih"), get("weight_hh")
    has_bias = "bias_ih" + suffix in state_dict
    b_ih = get("bias_ih") if has_bias else jnp.zeros(w_ih.shape[0])
    b_hh = get("bias_hh") if has_bias else jnp.zeros(w_ih.shape[0])
    if isinstance(cell, GRUCell):
        h = cell.hidden_size
        bias = b_ih + jnp.concatenate([b_hh[: 2 * h], jnp.zeros(h)])
        return {"w_ih": w_ih, "w_hh": w_hh, "b": bias, "b_hn": b_hh[2 * h :]}
    params = {"w_ih": w_ih, "w_hh": w_hh, "b": b_ih + b_hh}
    if isinstance(cell, LSTMCell) and cell.proj_size:
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
    """Params of a `flax.linen.LSTMCell`/`OptimizedLSTMCell`/`GRUCell` (the dict under "cell")."""
    _check_supported(cell)
    kernel = lambda name: _array(flax_params[name]["kernel"]).T  # noqa: E731
    bias = lambda name: _array(flax_params[name]["bias"])  # noqa: E731
    if isinstance(cell, LSTMCell):
        gates = ("i", "f", "g", "o")
        return {
            "w_ih": jnp.concatenate([kernel("i" + g) for g in gates]),
            "w_hh": jnp.concatenate([kernel("h" + g) for g in gates]),
            "b": jnp.concatenate([bias("h" + g) for g in gates]),
        }
    if isinstance(cell, GRUCell):
        gates = ("r", "z", "n")
        return {
            "w_ih": jnp.concatenate([kernel("i" + g) for g in gates]),
            "w_hh": jnp.concatenate([kernel("h" + g) for g in gates]),
            "b": jnp.concatenate([bias("i" + g) for g in gates]),
            "b_hn": bias("hn"),
        }
    raise ValueError(f"flax.linen has no cell matching {type(cell).__name__}")
