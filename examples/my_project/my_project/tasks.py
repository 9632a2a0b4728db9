"""The temporal order problem (Hochreiter & Schmidhuber 1997, experiment 6a), as an rnnlab task.

A sequence of random distractor symbols holds two relevant symbols, each X or Y, one early and
one in the middle; the class is their order (XX, XY, YX, YY). The model must keep the first
symbol across the distractors until the second arrives and the sequence ends.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnlab.checks import check_int
from rnnlab.models import SequenceClassifier
from rnnlab.tasks.base import Batch, Sums, Task, weighted_cross_entropy
from rnnlab.typing import Array

NUM_CLASSES = 4
"""XX, XY, YX, YY."""


class TemporalOrderTask(Task):
    """Classify the order of the two relevant symbols of a `[b, length, num_distractors + 2]`
    one-hot sequence into 4 classes.

    The first relevant symbol sits in `[0.1, 0.2) * length`, the second in `[0.5, 0.6) * length`
    (the paper's ranges); every other step is a distractor. Guessing scores accuracy 0.25.

    Args:
        seed: run seed.
        batch_size: training batch size.
        length: sequence length `t`, >= 10.
        num_distractors: distinct distractor symbols, >= 1.
        eval_batches: number of fixed evaluation batches, >= 1.
        eval_batch_size: their size, >= 1.

    Raises:
        ConfigError: a setting out of range (the message names `task.<key>`).
    """

    name = "temporal_order"
    model_class = SequenceClassifier
    monitor = "valid/accuracy"
    monitor_mode = "max"

    def __init__(
        self,
        seed: int,
        batch_size: int,
        length: int = 50,
        num_distractors: int = 4,
        eval_batches: int = 2,
        eval_batch_size: int = 256,
    ):
        super().__init__(seed, batch_size)
        self.length = check_int("task.length", length, 10)
        self.num_distractors = check_int("task.num_distractors", num_distractors, 1)
        self.num_eval_batches = check_int("task.eval_batches", eval_batches, 1)
        self.eval_batch_size = check_int("task.eval_batch_size", eval_batch_size, 1)

    def model_fields(self) -> dict[str, Any]:
        return {"num_outputs": NUM_CLASSES}

    def _batch(self, stream: int, index: int, size: int) -> Batch:
        """Batch `index` of random stream `stream` (0 training, 1 evaluation): a pure function
        of `(seed, stream, index)`."""
        rng = np.random.default_rng([self.seed, stream, index])
        t, x_symbol = self.length, self.num_distractors  # X; Y is x_symbol + 1
        symbols = rng.integers(0, self.num_distractors, size=(size, t))
        first = rng.integers(int(0.1 * t), int(0.2 * t), size=size)
        second = rng.integers(int(0.5 * t), int(0.6 * t), size=size)
        is_y = rng.integers(0, 2, size=(size, 2))
        rows = np.arange(size)
        symbols[rows, first] = x_symbol + is_y[:, 0]
        symbols[rows, second] = x_symbol + is_y[:, 1]
        inputs = np.eye(self.num_distractors + 2, dtype=np.float32)[symbols]
        return {"inputs": inputs, "labels": (2 * is_y[:, 0] + is_y[:, 1]).astype(np.int32)}

    def train_batch(self, step: int) -> Batch:
        return self._batch(0, step, self.batch_size)

    def eval_batches(self, split: str) -> list[Batch]:
        return [self._batch(1, i, self.eval_batch_size) for i in range(self.num_eval_batches)]

    def objective(self, outputs: Array, batch: Batch) -> tuple[Sums, Array]:
        return weighted_cross_entropy(outputs, batch["labels"])

    def baselines(self) -> dict[str, float]:
        return {"baseline/accuracy": 1.0 / NUM_CLASSES}
