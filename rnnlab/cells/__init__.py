"""Recurrent cells: pure functions over plain parameter dicts (see `base` for the contract)."""

from rnnlab.cells.base import Cell, apply_cell, make_initializer, split_gates, step
from rnnlab.cells.elman import ElmanCell
from rnnlab.cells.gru import GRUCell
from rnnlab.cells.lstm import LSTMCell, LSTMState

__all__ = [
    "Cell",
    "ElmanCell",
    "GRUCell",
    "LSTMCell",
    "LSTMState",
    "apply_cell",
    "make_initializer",
    "split_gates",
    "step",
]
