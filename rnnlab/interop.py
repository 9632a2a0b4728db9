"""Weights and states between rnnlab and PyTorch (`nn.LSTM`/`GRU`/`RNN`, both ways) and from Flax
(`linen` cells).

Which framework layer matches a cell is the cell's own declaration (`torch_module`, `flax_cell`;
see `rnnlab.cells.base`), so a new cell that computes, say, `nn.GRU`'s math loads and exports its
weights without any change here. What is kept here is the layout of each framework's layers.

    name, kwargs = torch_module_args(cell, input_size=16, num_layers=2, bidirectional=True)
    module = getattr(torch.nn, name)(**kwargs, batch_first=True)
    state_dict = stack_to_torch(cell, layers, bidirectional=True)  # init_stack's layout in
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
    h0 = carry_to_torch(cell, carries, bidirectional=True)     # LSTM: (h0, c0), numpy
    out, state = module(x, tuple(map(torch.from_numpy, h0)))   # GRU/RNN: torch.from_numpy(h0)
    carries = carry_from_torch(cell, state, bidirectional=True)  # run_stack's layout again
    layers = stack_from_torch(cell, module.state_dict(), 2, True)  # the inverse of the export

Nothing here imports torch: pass `module.state_dict()` (tensors are converted with `np.asarray`
after `.detach()`), so the loaders also read weights saved by other frameworks in PyTorch's layout;
the exports are numpy arrays (`torch.from_numpy` takes them without a copy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells.base import Cell, declared
from rnnlab.recurrence import layer_output_size
from rnnlab.typing import Carry, Params

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
    suffix = _suffix(layer, reverse)
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


def _suffix(layer: int, reverse: bool) -> str:
    """PyTorch's name suffix for one layer/direction (`weight_ih_l1_reverse`)."""
    return f"_l{layer}" + ("_reverse" if reverse else "")


def _numpy(value: Any) -> np.ndarray:
    """A writable float32 copy (what `torch.from_numpy` takes without complaint)."""
    return np.array(value, dtype=np.float32)


def _layer_directions(layer_params: Any, bidirectional: bool, what: str) -> list[Any]:
    """One layer's entries per direction: itself, or its `forward`/`backward` pair."""
    paired = isinstance(layer_params, Mapping) and set(layer_params) == {"forward", "backward"}
    if not bidirectional:
        if paired:
            raise ValueError(f"{what} hold forward and backward entries: pass bidirectional=True")
        return [layer_params]
    if paired:
        return [layer_params["forward"], layer_params["backward"]]
    if not isinstance(layer_params, Mapping) and len(layer_params) == 2:
        return list(layer_params)
    raise ValueError(
        f"{what} of a bidirectional stack must hold a forward and a backward entry per layer; "
        "pass bidirectional=False for a unidirectional stack"
    )


def torch_module_args(
    cell: Cell, input_size: int, num_layers: int = 1, bidirectional: bool = False
) -> tuple[str, dict[str, Any]]:
    """`(name, kwargs)` such that `getattr(torch.nn, name)(**kwargs)` computes a stack of `cell`
    (add `batch_first=True` for rnnlab's `[b, t, d]` inputs).

    Raises:
        ValueError: the cell declares no `torch_module` (e.g. an LSTM with peepholes)."""
    name, kwargs = _reference(cell, "torch_module", "PyTorch", TORCH_MODULES)
    sizes = dict(input_size=input_size, hidden_size=cell.hidden_size, num_layers=num_layers)
    return name, sizes | {"bidirectional": bidirectional} | kwargs


def params_to_torch(
    cell: Cell, params: Params, layer: int = 0, reverse: bool = False
) -> dict[str, np.ndarray]:
    """One layer/direction of `cell` params as entries of a PyTorch RNN module's `state_dict()`.

    The inverse of `params_from_torch`: rnnlab's one bias `b` goes to `bias_ih` and `bias_hh` is
    zero, except GRU's `b_hn`, which is `bias_hh`'s last block (PyTorch applies it inside the
    reset gate). Loading the export back gives the params bit for bit (`b + 0 = b`).

    Raises:
        ValueError: the cell declares no `torch_module` (e.g. an LSTM with peepholes)."""
    module, kwargs = _reference(cell, "torch_module", "PyTorch", TORCH_MODULES)
    suffix = _suffix(layer, reverse)
    bias_ih = _numpy(params["b"])
    bias_hh = np.zeros_like(bias_ih)
    if module == "GRU":
        bias_hh[2 * cell.hidden_size :] = _numpy(params["b_hn"])
    entries = {
        "weight_ih": _numpy(params["w_ih"]),
        "weight_hh": _numpy(params["w_hh"]),
        "bias_ih": bias_ih,
        "bias_hh": bias_hh,
    }
    if kwargs.get("proj_size"):
        entries["weight_hr"] = _numpy(params["w_hr"])
    return {name + suffix: value for name, value in entries.items()}


def stack_to_torch(
    cell: Cell, params: Sequence[Params], bidirectional: bool = False
) -> dict[str, np.ndarray]:
    """A whole stack in `init_stack`'s layout as the `state_dict()` of the PyTorch module
    `torch_module_args(cell, input_size, len(params), bidirectional)` describes; the inverse of
    `stack_from_torch`.

    Raises:
        ValueError: the cell declares no `torch_module`; a bidirectional stack whose layers are
            not `{"forward", "backward"}` pairs; or one that sums its directions (`merge="sum"`),
            which PyTorch's modules cannot (they concatenate)."""
    state: dict[str, np.ndarray] = {}
    for layer, layer_params in enumerate(params):
        directions = _layer_directions(layer_params, bidirectional, "params")
        concat = layer_output_size(cell, bidirectional)
        if layer > 0 and directions[0]["w_ih"].shape[-1] != concat:
            raise ValueError(
                f"layer {layer} reads {directions[0]['w_ih'].shape[-1]} features, but PyTorch's "
                f"stacked layers read the previous layer's concatenated {concat}: a stack with "
                'merge="sum" has no PyTorch equivalent'
            )
        for reverse, one in zip((False, True), directions, strict=False):
            state |= params_to_torch(cell, one, layer, reverse)
    return state


def _torch_state_fields(cell: Cell) -> tuple[str, ...]:
    """The carry fields PyTorch's module keeps as its state, in its order: `("h", "c")` for
    `nn.LSTM`'s `(h_n, c_n)`; none for `nn.GRU`/`nn.RNN`, whose state is the carry itself."""
    module, _ = _reference(cell, "torch_module", "PyTorch", TORCH_MODULES)
    return ("h", "c") if module == "LSTM" else ()


def carry_to_torch(
    cell: Cell, carries: Sequence[Carry], bidirectional: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """`run_stack`'s carries (one per layer, `(forward, backward)` pairs when bidirectional) as
    PyTorch's state: `h_0: [layers*dirs, b, h]` (GRU, RNN) or `(h_0, c_0)` (LSTM; `h_0` is
    `[layers*dirs, b, proj_size]` with a projection), layer-major with the reverse direction
    second, as the modules take and return it.

    Raises:
        ValueError: the cell declares no `torch_module`, or `carries` is not in `run_stack`'s
            layout for `bidirectional`."""
    fields = _torch_state_fields(cell)
    flat = [c for carry in carries for c in _layer_directions(carry, bidirectional, "carries")]
    structure = jax.tree_util.tree_structure(cell.initial_carry(1))
    if any(jax.tree_util.tree_structure(one) != structure for one in flat):
        raise ValueError(
            "carries must be run_stack's: one carry like cell.initial_carry(batch) per layer"
            + (", in (forward, backward) pairs" if bidirectional else "")
            + f" (bidirectional={bidirectional})"
        )
    if not fields:
        return _numpy(np.stack([np.asarray(c) for c in flat]))
    h, c = (_numpy(np.stack([np.asarray(getattr(one, f)) for one in flat])) for f in fields)
    return h, c


def carry_from_torch(cell: Cell, state: Any, bidirectional: bool = False) -> list[Carry]:
    """PyTorch's state (`h_n`, or `(h_n, c_n)` for an LSTM, `[layers*dirs, b, .]`, tensors or
    arrays) as `run_stack`'s carries: one per layer, `(forward, backward)` pairs when
    bidirectional; the inverse of `carry_to_torch`.

    Raises:
        ValueError: the cell declares no `torch_module`, or `state` does not fit the cell
            (widths, an LSTM's pair, the number of directions)."""
    fields = _torch_state_fields(cell)
    if fields and not (isinstance(state, tuple | list) and len(state) == len(fields)):
        raise ValueError(f"state must be PyTorch's ({', '.join(f + '_n' for f in fields)}) pair")
    arrays = [_array(a) for a in state] if fields else [_array(state)]
    expected = [cell.output_size, cell.hidden_size][: len(arrays)]
    dirs = 2 if bidirectional else 1
    shapes = [tuple(a.shape) for a in arrays]
    for array, name, width in zip(arrays, fields or ("h",), expected, strict=True):
        if array.ndim != 3 or array.shape[-1] != width or array.shape[0] % dirs:
            raise ValueError(
                f"{name}_n must be [layers*{dirs}, batch, {width}] for {cell!r} with "
                f"bidirectional={bidirectional}, got shape {tuple(array.shape)}"
            )
    if len({a.shape[:2] for a in arrays}) > 1:
        raise ValueError(f"h_n and c_n must agree on [layers*dirs, batch], got {shapes}")
    if fields:
        template = cell.initial_carry(arrays[0].shape[1], arrays[0].dtype)
        pairs = zip(*arrays, strict=True)
        flat = [template._replace(**dict(zip(fields, one, strict=True))) for one in pairs]
    else:
        flat = list(arrays[0])
    if not bidirectional:
        return flat
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


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
