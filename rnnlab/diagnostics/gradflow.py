"""Gradient flow through time: `||d loss / d h_t||` and `||d loss / d x_t||` against t.

The vanishing-gradient picture (Hochreiter 1991; Bengio, Simard & Frasconi 1994; Pascanu,
Mikolov & Bengio 2013): with a loss at the last step only (the adding problem), the gradient that
reaches step t shrinks like a product of `T - t` Jacobians for a tanh RNN, while the LSTM's
additive cell path (forget gate near 1 with `forget_bias = 1`) carries it back.

Two levels:

    cell_grad_flow(cell, params, xs, loss_fn)     pure: any cell, any loss of the outputs
    adding_grad_flow(cell, key, length)           the adding problem with a random linear readout
    model_grad_flow(task, model, params, batch)   a whole model and its task's loss (a run)

`model_grad_flow` needs no change to the models: a Flax method interceptor adds a zero
perturbation to each `RecurrentStack`'s input and passes zero `carry_deltas` to its layers (the
layers' own option, `rnnlab.recurrence.run`); the gradient with respect to those zeros is
`d loss / d x_t` and `d loss / d carry_t`. In a residual block stack (`rnnlab.blocks`) the same
happens to each block's recurrence (`_Block.recur`, one layer: its input is what the block feeds
the cell, e.g. the normed or convolved stream), so a block model's series are
`"<stack>/block_<i>/input"` and `"<stack>/block_<i>/<leaf>"`. Norms are per example (the gradient of
the batch-mean loss times the batch size), averaged over the examples for which t is a valid step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rnnlab import recurrence
from rnnlab.attention import lengths_to_mask
from rnnlab.blocks import BLOCKS
from rnnlab.cells.base import Cell
from rnnlab.data import synthetic
from rnnlab.diagnostics.traces import carry_leaf_names, named_trace
from rnnlab.nn import RecurrentStack
from rnnlab.tasks.base import Batch, Task
from rnnlab.typing import Array, Carry, Params, PRNGKey

GradFlow = dict[str, np.ndarray]
"""Series name -> `[t]` gradient norms, e.g. `"stack/input"`, `"stack/layer_0/h"`."""


def per_step_norms(grads: Array, valid: Array | None = None) -> np.ndarray:
    """`[b, t, ...]` gradients -> `[t]`: the L2 norm over the feature axes, averaged over the
    examples (only those with a valid step t when `valid: [b, t]` is given)."""
    norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[:2] + (-1,))), axis=-1))
    if valid is None:
        return np.asarray(jnp.mean(norms, axis=0))
    valid = valid.astype(norms.dtype)
    return np.asarray(jnp.sum(norms * valid, axis=0) / jnp.maximum(jnp.sum(valid, axis=0), 1.0))


def _zero_deltas(cell: Cell, batch: int, time: int, dtype: Any) -> Carry:
    """Carry-shaped zeros with a time axis: leaves `[b, t, ...]`."""
    return jax.tree_util.tree_map(
        lambda z: jnp.zeros((batch, time, *z.shape[1:]), dtype), cell.initial_carry(batch, dtype)
    )


def _carry_series(
    cell: Cell, prefix: str, grads: Carry, valid: Array | None
) -> dict[str, np.ndarray]:
    names = carry_leaf_names(cell.initial_carry(1))
    leaves = jax.tree_util.tree_leaves(grads)
    return {f"{prefix}/{n}": per_step_norms(g, valid) for n, g in zip(names, leaves, strict=True)}


def cell_grad_flow(
    cell: Cell,
    params: Params,
    xs: Array,
    loss_fn: Callable[[Array, Carry], Array],
    lengths: Array | None = None,
) -> GradFlow:
    """Per-step gradient norms of `loss_fn(ys, final_carry)` for one layer of `cell`.

    Args:
        cell: the cell.
        params: `cell.init(key, d)`.
        xs: `[b, t, d]` inputs.
        loss_fn: `(ys: [b, t, o], final carry) -> scalar`; sum over the examples (not a mean)
            for per-example norms.
        lengths: `[b]` valid steps, or None.

    Returns:
        `{"x": ||dL/dx_t||, <carry leaf>: ||dL/dcarry_t|| ...}` (`h`, and `c` for the LSTM),
        each `[t]`.
    """
    batch, time = xs.shape[:2]

    def loss(deltas: Carry, inputs: Array) -> Array:
        final, ys = recurrence.run(cell, params, inputs, lengths=lengths, carry_deltas=deltas)
        return loss_fn(ys, final)

    grad_carry, grad_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(
        _zero_deltas(cell, batch, time, xs.dtype), xs
    )
    valid = None if lengths is None else lengths_to_mask(lengths, time)
    series = {"x": per_step_norms(grad_x, valid)}
    for name, values in _carry_series(cell, "", grad_carry, valid).items():
        series[name.lstrip("/")] = values
    return series


def adding_grad_flow(
    cell: Cell,
    key: PRNGKey,
    length: int = 100,
    batch_size: int = 32,
    params: Params | None = None,
) -> GradFlow:
    """`cell_grad_flow` on the adding problem: a fresh layer (or `params`) and a random linear
    readout `w ~ N(0, 1/o)` of the last output, squared error against the sum of the marked values
    (`rnnlab.data.synthetic.adding_batch`, data seed 0). The loss sits at the last step only, so
    the norms against t show how far back a gradient reaches."""
    key_cell, key_out = jax.random.split(key)
    params = cell.init(key_cell, 2) if params is None else params
    batch = synthetic.adding_batch(0, 0, batch_size, length)
    readout = jax.random.normal(key_out, (cell.output_size,)) / np.sqrt(cell.output_size)
    targets = jnp.asarray(batch["targets"][:, 0])

    def loss_fn(ys: Array, final: Carry) -> Array:
        return 0.5 * jnp.sum(jnp.square(ys[:, -1] @ readout - targets))

    return cell_grad_flow(cell, params, jnp.asarray(batch["inputs"]), loss_fn)


# --------------------------------------------------------------------------- whole models


class StackCall(NamedTuple):
    """One call of a recurrence inside a model: a `RecurrentStack`, or one residual block's
    recurrence (`rnnlab.blocks`, one unidirectional layer).

    Attributes:
        name: the module path, e.g. "stack", "encoder", "decoder", "stack/block_0" (`#2`, `#3`...
            for the second and later calls of one module).
        cell: the recurrence's cell.
        bidirectional: whether its layers run both directions.
        num_layers: its layers (1 for a block).
        block: a block's recurrence (its series are named after the block, with no layer).
        xs: `[b, t, d]` its input.
        lengths: `[b]` its valid steps, or None.
    """

    name: str
    cell: Cell
    bidirectional: bool
    num_layers: int
    block: bool
    xs: Array
    lengths: Array | None


_STACK_SIGNATURE = inspect.signature(RecurrentStack.__call__)
_BLOCK_SIGNATURE = inspect.signature(BLOCKS["prenorm"].recur)  # every kind's: `_Block.recur`

OnStackCall = Callable[[str, StackCall, dict[str, Any], Callable[..., Any]], Any]
"""`(name, the call's settings, its arguments by name, the call) -> what the model receives`.
The call takes `carry_deltas` (a list per layer) and `trace` (then returns a third output, a
list per layer), and `arguments` holds its `xs` and `lengths`."""


def _recurrence_call(module: nn.Module, method: str) -> inspect.Signature | None:
    """The signature of the call the diagnostics intercept, or None for any other call."""
    if isinstance(module, RecurrentStack) and method == "__call__":
        return _STACK_SIGNATURE
    if isinstance(module, tuple(BLOCKS.values())) and method == "recur":
        return _BLOCK_SIGNATURE
    return None


@contextmanager
def intercepting_stacks(on_call: OnStackCall) -> Iterator[None]:
    """Within the block, every `RecurrentStack.__call__` and every residual block's recurrence
    (`recur`) go through `on_call`, which may change the arguments (e.g. add
    `carry_deltas` or `trace`, see `rnnlab.recurrence.run_stack`) before making the call
    itself: the model code stays as it is."""
    counts: dict[str, int] = {}

    def interceptor(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
        module = context.module
        signature = _recurrence_call(module, context.method_name)
        if signature is None:
            return next_fun(*args, **kwargs)
        arguments = signature.bind(None, *args, **kwargs).arguments
        arguments.pop("self")
        path = "/".join(str(p) for p in module.scope.path) or "stack"
        counts[path] = counts.get(path, 0) + 1
        name = path if counts[path] == 1 else f"{path}#{counts[path]}"
        if isinstance(module, RecurrentStack):
            settings = (module.cell, module.bidirectional, module.num_layers, False)
        else:
            settings = (arguments["cell"], False, 1, True)
        call = StackCall(name, *settings, arguments["xs"], arguments.get("lengths"))
        return on_call(name, call, arguments, next_fun)

    with nn.intercept_methods(interceptor):
        yield


def _evaluation_loss(task: Task, model: nn.Module, params: Params, batch: Batch) -> Array:
    carry = task.zero_carry(model, _batch_size(batch))
    loss, _ = task.loss(model, params, batch, carry, None)
    return loss


def stack_calls(task: Task, model: nn.Module, params: Params, batch: Batch) -> list[StackCall]:
    """The recurrences the task's evaluation loss runs on `batch` (`RecurrentStack` calls and
    block recurrences), in call order."""
    calls: list[StackCall] = []

    def record(name: str, settings: StackCall, arguments: dict, call: Callable) -> Any:
        calls.append(settings)
        return call(**arguments)

    with intercepting_stacks(record):
        _evaluation_loss(task, model, params, batch)
    return calls


def _batch_size(batch: Batch) -> int:
    return int(np.shape(batch["inputs"])[0])


def perturbed_loss(
    task: Task, model: nn.Module, params: Params, batch: Batch, deltas: Mapping[str, Any]
) -> Array:
    """The task's evaluation loss with every recurrent stack's input and layer carries shifted by
    `deltas[name] = {"input": [b, t, d], "layers": [...]}` (see `zero_deltas`)."""

    def perturb(name: str, settings: StackCall, arguments: dict, call: Callable) -> Any:
        delta = deltas[name]
        arguments["xs"] = arguments["xs"] + delta["input"]
        return call(**arguments, carry_deltas=delta["layers"])

    with intercepting_stacks(perturb):
        return _evaluation_loss(task, model, params, batch)


def zero_deltas(calls: list[StackCall]) -> dict[str, Any]:
    """Zero perturbations for every stack call: input `[b, t, d]` and per-layer carries."""
    deltas = {}
    for call in calls:
        batch, time = call.xs.shape[:2]
        one = _zero_deltas(call.cell, batch, time, call.xs.dtype)
        layer = (one, one) if call.bidirectional else one
        deltas[call.name] = {
            "input": jnp.zeros_like(call.xs),
            "layers": [layer for _ in range(call.num_layers)],
        }
    return deltas


def _per_direction(call: StackCall, name: str, layers: list[Any]) -> Iterator[tuple]:
    """`(series prefix, value)` per layer and direction of a stack call: `<name>/layer_<l>` and
    `<name>/layer_<l>/backward`, the names the run's params and log use; a block's recurrence
    (one layer) is `<name>` itself (`stack/block_0`)."""
    if call.block:
        yield name, layers[0]
        return
    for index, layer in enumerate(layers):
        prefix = f"{name}/{recurrence.layer_name(index)}"
        if call.bidirectional:
            yield prefix, layer[0]
            yield f"{prefix}/backward", layer[1]
        else:
            yield prefix, layer


def model_grad_flow(task: Task, model: nn.Module, params: Params, batch: Batch) -> GradFlow:
    """Per-step gradient norms of the task's loss for every recurrent stack of a model.

    Args:
        task: the task (its `loss` defines the objective, in evaluation mode).
        model: its model.
        params: the model's params.
        batch: a batch of the task (e.g. `loading.first_batch(task)`).

    Returns:
        `"<stack>/input"`: `||dL/dx_t||` (the stack's input: embedding or features) and
        `"<stack>/layer_<l>[/backward]/<leaf>"`: `||dL/dcarry_t||` (`h`; `c` for the LSTM),
        each `[t]`; `<stack>` is the module name ("stack"; "encoder", "decoder" for Seq2Seq).
        In a residual block stack: `"<stack>/block_<i>/input"` (what the block feeds its cell)
        and `"<stack>/block_<i>/<leaf>"`.
    """
    calls = stack_calls(task, model, params, batch)
    if not calls:
        raise ValueError(f"{type(model).__name__} has no recurrence to analyse")
    scale = float(_batch_size(batch))
    loss = lambda deltas: perturbed_loss(task, model, params, batch, deltas) * scale
    grads = jax.jit(jax.grad(loss))(zero_deltas(calls))
    series: GradFlow = {}
    for call in calls:
        time = call.xs.shape[1]
        valid = None if call.lengths is None else lengths_to_mask(call.lengths, time)
        series[f"{call.name}/input"] = per_step_norms(grads[call.name]["input"], valid)
        for prefix, grad in _per_direction(call, call.name, grads[call.name]["layers"]):
            series.update(_carry_series(call.cell, prefix, grad, valid))
    return series


def last_positive(values: np.ndarray) -> int | None:
    """The last step with a positive, finite norm (None if there is none): the reference of the
    normalised plots and the ratios (`gradflow.summarize`). An LSTM's `||dL/dc_t||` is exactly 0
    at the last step (`c_{T-1}` reaches the loss through later steps only) and a masked step
    is 0 too."""
    values = np.asarray(values, dtype=float)
    good = np.flatnonzero(np.isfinite(values) & (values > 0))
    return int(good[-1]) if good.size else None


def summarize(series: GradFlow) -> dict[str, dict[str, float | int | None]]:
    """Per series: how far back the gradient reaches, as the norm at the step the direction
    processes first (`first`, at `first_step`: t = 0, or T - 1 for a backward direction) over
    the norm at the last step it processes where the norm is positive (`last`, at `last_step`),
    `ratio_first_last`: about 1, the gradient reaches back; much less than 1, it vanishes; more,
    it grows.

    The reference is the last *positive* step, not blindly the last one: an LSTM's
    `||dL/dc_t||` is exactly 0 at its last step (the cell state there reaches the loss only
    through later steps, and there are none) and a step no example reaches (lengths) has no
    gradient either; dividing by those zeros gave NaN. A series that is zero everywhere has
    `last`, `last_step` and the ratio None.
    """
    summary: dict[str, dict[str, float | int | None]] = {}
    for name, values in series.items():
        values = np.asarray(values, dtype=float)
        backward = "backward" in name.split("/")
        ordered = values[::-1] if backward else values
        index = last_positive(ordered)
        first_step = len(values) - 1 if backward else 0
        one: dict[str, float | int | None] = {
            "first": float(ordered[0]),
            "first_step": first_step,
            "last": None,
            "last_step": None,
            "ratio_first_last": None,
        }
        if index is not None:
            last = float(ordered[index])
            one["last"] = last
            one["last_step"] = len(values) - 1 - index if backward else index
            one["ratio_first_last"] = float(ordered[0]) / last
        summary[name] = one
    return summary


def model_gate_traces(
    task: Task, model: nn.Module, params: Params, batch: Batch
) -> dict[str, dict[str, np.ndarray]]:
    """Gate activations and states of every recurrent layer of a model on `batch`.

    Returns:
        `"<stack>/layer_<l>[/backward]"` (`"<stack>/block_<i>"` in a block stack) -> name ->
        `[b, t, h]` (see `traces.gate_trace`:
        gates, carry leaves such as `c` and `h`, and the layer output `y`).
    """

    def collect(params: Params) -> dict[str, dict[str, Array]]:
        named: dict[str, dict[str, Array]] = {}

        def trace(name: str, settings: StackCall, arguments: dict, call: Callable) -> Any:
            carries, ys, layers = call(**arguments, trace=True)
            for prefix, layer in _per_direction(settings, name, layers):
                named[prefix] = named_trace(settings.cell, layer)
            return carries, ys

        with intercepting_stacks(trace):
            _evaluation_loss(task, model, params, batch)
        return named

    traces = jax.jit(collect)(params)
    return {layer: {k: np.asarray(v) for k, v in trace.items()} for layer, trace in traces.items()}
