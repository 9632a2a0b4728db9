"""Shape legend and type aliases used across rnnlab.

Shape letters in docstrings:
    b  batch                 t  time (sequence length)
    d  input features        h  hidden units
    g  gate width (G * h)    p  projected hidden size (LSTMP)
    v  vocabulary            c  classes
    s  source time (attention keys)   q  query time (attention queries)
"""

from __future__ import annotations

from typing import Any

import jax

Array = jax.Array
PRNGKey = jax.Array
Params = dict[str, Any]
"""A plain dict of arrays (possibly nested): what `cell.init` returns and optax updates."""
Carry = Any
"""A pytree of `[b, ...]` arrays: `h` for Elman/GRU, `LSTMState(c, h)` for LSTM."""
