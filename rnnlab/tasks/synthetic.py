"""Synthetic long-range memory tasks: the adding problem and the copy task.

Both generate every batch from `(seed, step)` (`rnnlab.data.synthetic`), so there is nothing to
download and a resumed run sees the same batches. Evaluation uses a fixed held-out set drawn from
a separate random stream.

References:
    Hochreiter & Schmidhuber, "Long Short-Term Memory", 1997 (the adding problem).
    Le, Jaitly & Hinton, 2015; Arjovsky, Shah & Bengio, "Unitary Evolution RNNs", ICML 2016
    (the variants used here).
"""

from __future__ import annotations

import functools
import math
from typing import Any

from rnnlab.checks import check_int
from rnnlab.data import synthetic
from rnnlab.models import SequenceClassifier, SequenceTagger
from rnnlab.tasks.base import Batch, Sums, Task, regression_sums, weighted_cross_entropy
from rnnlab.typing import Array


class AddingTask(Task):
    """The adding problem: regress the sum of the two marked values of a `[b, t, 2]` sequence.

    Model: `SequenceClassifier(num_outputs=1)` used as a regressor. Loss: MSE. Predicting 1.0
    scores `ADDING_BASELINE_MSE = 1/6 ≈ 0.167`; a model that has learnt the task is far below.

    Args:
        seed: run seed.
        batch_size: training batch size.
        length: sequence length `t` (the lag the model must bridge is up to `t`), >= 2.
        eval_batches: number of fixed evaluation batches, >= 1.
        eval_batch_size: their size, >= 1.

    Raises:
        ConfigError: a setting out of range (the message names `task.<key>`).
    """

    name = "adding"
    model_class = SequenceClassifier
    monitor = "valid/mse"

    def __init__(
        self,
        seed: int,
        batch_size: int,
        length: int = 50,
        eval_batches: int = 4,
        eval_batch_size: int = 256,
    ):
        super().__init__(seed, batch_size)
        self.length = check_int("task.length", length, 2)
        self.num_eval_batches = check_int("task.eval_batches", eval_batches, 1)
        self.eval_batch_size = check_int("task.eval_batch_size", eval_batch_size, 1)

    def model_fields(self) -> dict[str, Any]:
        return {"num_outputs": 1}

    def train_batch(self, step: int) -> Batch:
        return synthetic.adding_batch(self.seed, step, self.batch_size, self.length)

    @functools.cached_property
    def _eval(self) -> list[Batch]:
        return synthetic.fixed_eval_batches(
            synthetic.adding_batch,
            self.seed,
            self.num_eval_batches,
            batch_size=self.eval_batch_size,
            length=self.length,
        )

    def eval_batches(self, split: str) -> list[Batch]:
        return self._eval

    def objective(self, outputs: Array, batch: Batch) -> tuple[Sums, Array]:
        sums, loss = regression_sums(outputs, batch["targets"])
        del sums["mae"]
        return sums, loss

    def baselines(self) -> dict[str, float]:
        return {"baseline/mse": synthetic.ADDING_BASELINE_MSE}


class CopyTask(Task):
    """The copy (memory) task: reproduce `copy_length` symbols after `lag` blank steps.

    Model: `SequenceTagger` over the `num_symbols + 2` token vocabulary. Loss: cross-entropy on
    the scored (recall) positions only; `accuracy` is per scored symbol. A memoryless model
    scores `log(num_symbols)` nats per scored position (`baseline/cross_entropy`).

    Args:
        seed: run seed.
        batch_size: training batch size.
        lag: blank steps between the symbols and the recall phase (the delimiter included),
            >= 1.
        num_symbols: distinct data symbols, >= 1.
        copy_length: symbols to remember, >= 1.
        eval_batches: number of fixed evaluation batches, >= 1.
        eval_batch_size: their size, >= 1.

    Raises:
        ConfigError: a setting out of range (the message names `task.<key>`).
    """

    name = "copy"
    model_class = SequenceTagger

    def __init__(
        self,
        seed: int,
        batch_size: int,
        lag: int = 20,
        num_symbols: int = 8,
        copy_length: int = 10,
        eval_batches: int = 4,
        eval_batch_size: int = 128,
    ):
        super().__init__(seed, batch_size)
        self.lag = check_int("task.lag", lag, 1)
        self.num_symbols = check_int("task.num_symbols", num_symbols, 1)
        self.copy_length = check_int("task.copy_length", copy_length, 1)
        self.num_eval_batches = check_int("task.eval_batches", eval_batches, 1)
        self.eval_batch_size = check_int("task.eval_batch_size", eval_batch_size, 1)

    @property
    def vocab_size(self) -> int:
        return synthetic.copy_vocab_size(self.num_symbols)

    def model_fields(self) -> dict[str, Any]:
        return {"num_outputs": self.vocab_size, "vocab_size": self.vocab_size}

    def _batch(self, step: int, batch_size: int, **kwargs: Any) -> Batch:
        return synthetic.copy_batch(
            self.seed, step, batch_size, self.lag, self.num_symbols, self.copy_length, **kwargs
        )

    def train_batch(self, step: int) -> Batch:
        return self._batch(step, self.batch_size)

    @functools.cached_property
    def _eval(self) -> list[Batch]:
        return [
            self._batch(i, self.eval_batch_size, stream=synthetic.EVAL_STREAM)
            for i in range(self.num_eval_batches)
        ]

    def eval_batches(self, split: str) -> list[Batch]:
        return self._eval

    def objective(self, outputs: Array, batch: Batch) -> tuple[Sums, Array]:
        return weighted_cross_entropy(outputs, batch["targets"], batch["weights"])

    def baselines(self) -> dict[str, float]:
        return {"baseline/cross_entropy": math.log(self.num_symbols)}
