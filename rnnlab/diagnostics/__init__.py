"""Research diagnostics of recurrent models: gradient flow through time, gate activations over a
sequence and attention maps, from pure functions up to run directories (`rnnlab-diagnose`).

    traces         gate_trace, traced_run: a cell re-run step by step (gates; carry perturbations)
    gradflow       cell_grad_flow, adding_grad_flow, model_grad_flow, model_gate_traces
    attention_maps attention_weights: the weights the models sow
    loading        load_run: (cfg, task, model, params, step) of a run directory
    plots          matplotlib figures (PNG + PDF)
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
from rnnlab.diagnostics.loading import LoadedRun, first_batch, load_config, load_run
from rnnlab.diagnostics.traces import cell_gates, gate_trace, traced_run

__all__ = [
    "GradFlow",
    "LoadedRun",
    "adding_grad_flow",
    "attention_weights",
    "cell_gates",
    "cell_grad_flow",
    "first_batch",
    "gate_trace",
    "load_config",
    "load_run",
    "model_gate_traces",
    "model_grad_flow",
    "summarize",
    "traced_run",
]
