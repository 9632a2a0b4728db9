"""Gradient flow through time: `||d loss / d h_t||` and `||d loss / d x_t||` against t.

The vanishing-gradient picture (Hochreiter 1991; Bengio, Simard & Frasconi 1994; Pascanu,
Mikolov & Bengio 2013): with a loss at the last step only (the adding problem), the gradient that
reaches step t shrinks like a product of `T - t` Jacobians for a tanh RNN, while the LSTM's
additive cell path (forget gate near 1 with `forget_bias = 1`) carries it back.

Two levels:

    cell_grad_flow(cell, params, xs, loss_fn)     pure: any cell, any loss of the outputs
    adding_grad_flow(cell, key, length)           the adding problem with a random linear readout
    model_grad_flow(task, model, params, batch)   a whole model and its task's loss (a run)

`model_grad_flow` needs no change to the models: a Flax method interceptor replaces each
`RecurrentStack.__call__` by the same computation re-run with `traces.traced_run`, which adds a
zero perturbation to the stack's input and to every layer's carry; the gradient with respect to
those zeros is `d loss / d x_t` and `d loss / d carry_t`. Norms are per example (the gradient of
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

from rnnlab.attention import lengths_to_mask
from rnnlab.cells.base import Cell
from rnnlab.data import synthetic
from rnnlab.diagnostics.traces import carry_leaf_names, traced_run
from rnnlab.models.common import merge_directions
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
        final, ys, _, _ = traced_run(cell, params, inputs, deltas, lengths=lengths)
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
    """One call of a `RecurrentStack` inside a model, with everything needed to re-run it.

    Attributes:
        name: the module path, e.g. "stack", "encoder", "decoder".
        stack: the (unbound) module's settings.
        params: its params (`{"layer_0": ..., ...}`).
        xs: `[b, t, d]` the stack's input.
        lengths, resets, initial_carry: the call's keyword arguments.
    """

    name: str
    stack: RecurrentStack
    params: Params
    xs: Array
    lengths: Array | None
    resets: Array | None
    initial_carry: Any


_STACK_SIGNATURE = inspect.signature(RecurrentStack.__call__)


def _stack_call(module: RecurrentStack, args: tuple[Any, ...], kwargs: dict[str, Any]) -> StackCall:
    bound = _STACK_SIGNATURE.bind(None, *args, **kwargs).arguments
    return StackCall(
        name="/".join(str(p) for p in module.scope.path) or "stack",
        stack=module.clone(parent=None),
        params=module.variables["params"],
        xs=bound["xs"],
        lengths=bound.get("lengths"),
        resets=bound.get("resets"),
        initial_carry=bound.get("initial_carry"),
    )


def run_stack_call(
    call: StackCall,
    xs: Array | None = None,
    layer_deltas: list[Any] | None = None,
    with_gates: bool = False,
) -> tuple[list[Carry], Array, dict[str, dict[str, Array]]]:
    """Re-run a stack call (evaluation mode) with `traced_run`, layer by layer.

    Args:
        call: from a captured model call.
        xs: `[b, t, d]` input (default `call.xs`).
        layer_deltas: per layer a carry-shaped `[b, t, ...]` perturbation (a `(forward,
            backward)` pair when bidirectional), or None.
        with_gates: also trace the gates.

    Returns:
        (final carries per layer, `ys: [b, t, o]` of the last layer, traces: `"layer_{l}"` (and
        `"layer_{l}/backward"`) -> gates, carry leaves and `y` (the layer output), `[b, t, h]`).
    """
    stack, cell = call.stack, call.stack.cell
    xs = call.xs if xs is None else xs
    carries: list[Carry] = []
    traces: dict[str, dict[str, Array]] = {}
    names = carry_leaf_names(cell.initial_carry(1))
    for index in range(stack.num_layers):
        layer = call.params[f"layer_{index}"]
        init = None if call.initial_carry is None else call.initial_carry[index]
        deltas = None if layer_deltas is None else layer_deltas[index]
        directions = [("", layer, False, init, deltas)]
        if stack.bidirectional:
            init_fw, init_bw = (None, None) if init is None else init
            deltas_fw, deltas_bw = (None, None) if deltas is None else deltas
            directions = [
                ("", layer["forward"], False, init_fw, deltas_fw),
                ("/backward", layer["backward"], True, init_bw, deltas_bw),
            ]
        finals, outputs = [], []
        for suffix, params, reverse, start, delta in directions:
            final, ys, states, gates = traced_run(
                cell,
                params,
                xs,
                delta,
                lengths=call.lengths,
                resets=call.resets,
                initial_carry=start,
                reverse=reverse,
                zoneout=stack.options.zoneout,
                with_gates=with_gates,
            )
            finals.append(final)
            outputs.append(ys)
            if with_gates:
                trace = dict(gates)
                trace.update(zip(names, jax.tree_util.tree_leaves(states), strict=True))
                trace["y"] = ys
                traces[f"layer_{index}{suffix}"] = trace
        if stack.bidirectional:
            carries.append(tuple(finals))
            xs = merge_directions(outputs[0], outputs[1], stack.merge)
        else:
            carries.append(finals[0])
            xs = outputs[0]
    return carries, xs, traces


def _is_stack_call(context: Any) -> bool:
    return isinstance(context.module, RecurrentStack) and context.method_name == "__call__"


@contextmanager
def capture_stack_calls() -> Iterator[list[StackCall]]:
    """Within the block, every `RecurrentStack` call (run as usual) is recorded in the list."""
    calls: list[StackCall] = []

    def interceptor(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
        if _is_stack_call(context):
            calls.append(_stack_call(context.module, args, kwargs))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        yield calls


def stack_calls(task: Task, model: nn.Module, params: Params, batch: Batch) -> list[StackCall]:
    """The `RecurrentStack` calls of the task's evaluation loss on `batch`, in call order."""
    carry = task.zero_carry(model, _batch_size(batch))
    with capture_stack_calls() as calls:
        task.loss(model, params, batch, carry, None)
    return calls


def _batch_size(batch: Batch) -> int:
    return int(np.shape(batch["inputs"])[0])


def _unique_names(calls: list[StackCall]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for call in calls:
        seen[call.name] = seen.get(call.name, 0) + 1
        names.append(call.name if seen[call.name] == 1 else f"{call.name}#{seen[call.name]}")
    return names


def perturbed_loss(
    task: Task, model: nn.Module, params: Params, batch: Batch, deltas: Mapping[str, Any]
) -> Array:
    """The task's evaluation loss with every recurrent stack re-run by `run_stack_call`, its input
    and layer carries shifted by `deltas[name] = {"input": [b, t, d], "layers": [...]}`."""
    seen: list[StackCall] = []

    def interceptor(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
        if not _is_stack_call(context):
            return next_fun(*args, **kwargs)
        call = _stack_call(context.module, args, kwargs)
        seen.append(call)
        delta = deltas[_unique_names(seen)[-1]]
        carries, ys, _ = run_stack_call(call, call.xs + delta["input"], delta["layers"])
        return carries, ys

    carry = task.zero_carry(model, _batch_size(batch))
    with nn.intercept_methods(interceptor):
        loss, _ = task.loss(model, params, batch, carry, None)
    return loss


def zero_deltas(calls: list[StackCall]) -> dict[str, Any]:
    """Zero perturbations for every stack call: input `[b, t, d]` and per-layer carries."""
    deltas = {}
    for name, call in zip(_unique_names(calls), calls, strict=True):
        batch, time = call.xs.shape[:2]
        one = _zero_deltas(call.stack.cell, batch, time, call.xs.dtype)
        layer = (one, one) if call.stack.bidirectional else one
        deltas[name] = {
            "input": jnp.zeros_like(call.xs),
            "layers": [layer for _ in range(call.stack.num_layers)],
        }
    return deltas


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
    """
    calls = stack_calls(task, model, params, batch)
    if not calls:
        raise ValueError(f"{type(model).__name__} has no RecurrentStack to analyse")
    scale = float(_batch_size(batch))
    loss = lambda deltas: perturbed_loss(task, model, params, batch, deltas) * scale
    grads = jax.jit(jax.grad(loss))(zero_deltas(calls))
    series: GradFlow = {}
    for name, call in zip(_unique_names(calls), calls, strict=True):
        time = call.xs.shape[1]
        valid = None if call.lengths is None else lengths_to_mask(call.lengths, time)
        series[f"{name}/input"] = per_step_norms(grads[name]["input"], valid)
        for index, layer in enumerate(grads[name]["layers"]):
            prefix = f"{name}/layer_{index}"
            if call.stack.bidirectional:
                series.update(_carry_series(call.stack.cell, prefix, layer[0], valid))
                series.update(_carry_series(call.stack.cell, f"{prefix}/backward", layer[1], valid))
            else:
                series.update(_carry_series(call.stack.cell, prefix, layer, valid))
    return series


def summarize(series: GradFlow) -> dict[str, dict[str, float]]:
    """Per series: the norm at the first and last step and their ratio (first / last)."""
    summary = {}
    for name, values in series.items():
        first, last = float(values[0]), float(values[-1])
        ratio = first / last if last > 0 else float("nan")
        summary[name] = {"first": first, "last": last, "ratio_first_last": ratio}
    return summary


def model_gate_traces(
    task: Task, model: nn.Module, params: Params, batch: Batch
) -> dict[str, dict[str, np.ndarray]]:
    """Gate activations and states of every recurrent layer of a model on `batch`.

    Returns:
        `"<stack>/layer_<l>[/backward]"` -> name -> `[b, t, h]` (see `traces.gate_trace`:
        gates, carry leaves such as `c` and `h`, and the layer output `y`).
    """
    traces = {}
    calls = stack_calls(task, model, params, batch)
    for name, call in zip(_unique_names(calls), calls, strict=True):
        trace_layers = lambda call=call: run_stack_call(call, with_gates=True)
        _, _, layers = jax.jit(trace_layers)()
        for layer, trace in layers.items():
            traces[f"{name}/{layer}"] = {k: np.asarray(v) for k, v in trace.items()}
    return traces
