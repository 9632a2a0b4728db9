"""Research diagnostics of recurrent models: gradient flow through time, gate activations over a
sequence and attention maps, from pure functions up to run directories (`rnnlab-diagnose`).

    traces         gate_trace: a layer's gates and states at every step
    gradflow       cell_grad_flow, adding_grad_flow, model_grad_flow, model_gate_traces
    attention_maps attention_weights: the weights the models sow
    loading        restore_run: a run's params from built task and model (whole run directories:
                   `rnnlab.cli.restore_run_dir`)
    names          human labels (`layer 1, h_t`, `input x_t`); gates in equation order
    plots          figures in the paper style of `rnnlab.figures` (PNG + PDF)
    cli            the `rnnlab-diagnose` command
"""

from rnnlab.diagnostics.attention_maps import attention_weights
from rnnlab.diagnostics.gradflow import (
    GradFlow,
    adding_grad_flow,
    cell_grad_flow,
    model_gate_traces,
    model_grad_flow,
    summarize,
)
from rnnlab.diagnostics.loading import LoadedRun, first_batch, restore_run
from rnnlab.diagnostics.traces import gate_trace, named_trace

__all__ = [
    "GradFlow",
    "LoadedRun",
    "adding_grad_flow",
    "attention_weights",
    "cell_grad_flow",
    "first_batch",
    "gate_trace",
    "model_gate_traces",
    "model_grad_flow",
    "named_trace",
    "restore_run",
    "summarize",
]
