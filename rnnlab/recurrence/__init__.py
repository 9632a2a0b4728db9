"""The one place that scans cells over time: layers, directions, stacks, masks, resets, dropout.

    step.py      the per-step semantics (resets, recurrent mask, zoneout, perturbation, padding)
    scan.py      the XLA backend: `lax.scan` over the step, with a hand-written reverse pass
    native.py    the native CPU backend (`rnnlab.kernels`), same equations, same reverse pass
    precision.py the dtype of the layers' matmuls (`matmul_dtype`: float32, or bfloat16 operands)
    backends.py  the dispatch table: which backend can run a direction, resolved once per layer
    layers.py    the public layers: `run` (one direction), `run_layer`, `run_stack`, options

Every backend returns the same time-major layout; the public functions are batch-major
(`xs: [b, t, d]`). See `step.py` for the equations of a step and `layers.run` for every option.
"""

from rnnlab.precision import MATMUL_DTYPES
from rnnlab.recurrence.backends import BACKEND_CHOICES, BACKENDS, VJPS, Backend, resolve
from rnnlab.recurrence.layers import (
    DEFAULT_OPTIONS,
    MERGES,
    RecurrentOptions,
    Trace,
    backend_of,
    init_layer,
    init_stack,
    layer_name,
    layer_output_size,
    merge_directions,
    run,
    run_layer,
    run_stack,
)
from rnnlab.recurrence.native import unsupported as native_unsupported
from rnnlab.recurrence.native import unsupported_options as native_unsupported_options
from rnnlab.recurrence.scan import INPUT_PROJECTIONS
from rnnlab.recurrence.step import (
    LAYER_OWNED,
    StepAux,
    recurrent_dropout_mask,
    reverse_padded,
    reverse_resets,
    zoneout_keep,
)

__all__ = [
    "BACKENDS",
    "VJPS",
    "DEFAULT_OPTIONS",
    "INPUT_PROJECTIONS",
    "MATMUL_DTYPES",
    "BACKEND_CHOICES",
    "LAYER_OWNED",
    "MERGES",
    "Backend",
    "RecurrentOptions",
    "StepAux",
    "Trace",
    "backend_of",
    "init_layer",
    "init_stack",
    "layer_name",
    "layer_output_size",
    "merge_directions",
    "native_unsupported",
    "native_unsupported_options",
    "recurrent_dropout_mask",
    "resolve",
    "reverse_padded",
    "reverse_resets",
    "run",
    "run_layer",
    "run_stack",
    "zoneout_keep",
]
