"""Synthetic tasks: long-range memory (the adding problem, the copy task), state tracking with
length generalisation (parity, modular arithmetic) and recall of what only the content marks
(selective copying, multi-query associative recall).

All generate every batch from `(seed, step)` (`rnnlab.data.synthetic`), so there is nothing to
download and a resumed run sees the same batches. Evaluation uses a fixed held-out set drawn from
a separate random stream; the state-tracking and recall tasks add a `test` split of longer
sequences than any seen in training.

References:
    Hochreiter & Schmidhuber, "Long Short-Term Memory", 1997 (the adding problem).
    Le, Jaitly & Hinton, 2015; Arjovsky, Shah & Bengio, "Unitary Evolution RNNs", ICML 2016
    (the variants used here).
    Delétang et al., "Neural Networks and the Chomsky Hierarchy", ICLR 2023 (parity check,
    modular arithmetic; length generalisation). Beck et al., "xLSTM: Extended Long Short-Term
    Memory", 2024 (parity separates sLSTM and LSTM from linear recurrences).
    Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", 2023 (selective
    copying). Arora, Eyuboglu et al., "Zoology: Measuring and Improving Recall in Efficient
    Language Models", 2023 (multi-query associative recall).
"""

from __future__ import annotations

import abc
import functools
import math
from typing import Any

import numpy as np

from rnnlab.checks import check_bool, check_choice, check_float, check_int
from rnnlab.data import synthetic
from rnnlab.errors import ConfigError
from rnnlab.models import SequenceClassifier, SequenceTagger
from rnnlab.tasks.base import Batch, Sums, Task, regression_sums, weighted_cross_entropy
from rnnlab.typing import Array, Carry

COPY_LOSS_POSITIONS = ("recall", "all")
"""What the copy task trains on: the recall positions, or every output (Arjovsky et al.)."""


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

    Model: `SequenceTagger` over the `num_symbols + 2` token vocabulary. Metrics: `loss`, the
    cross-entropy on the scored (recall) positions, and `accuracy` per scored symbol; a
    memoryless model scores `log(num_symbols)` nats per scored position
    (`baseline/cross_entropy`). The training loss is `loss` (`loss_positions="recall"`), or
    (`"all"`) Arjovsky et al.'s: the cross-entropy averaged over all `T` outputs, blanks
    included, then also reported as `loss_all` (memoryless baseline `baseline/loss_all` =
    `copy_length * log(num_symbols) / T`).

    Args:
        seed: run seed.
        batch_size: training batch size.
        lag: blank steps between the symbols and the recall phase (the delimiter included),
            >= 1.
        num_symbols: distinct data symbols, >= 1.
        copy_length: symbols to remember, >= 1.
        eval_batches: number of fixed evaluation batches, >= 1.
        eval_batch_size: their size, >= 1.
        loss_positions: "recall" (train on the scored positions) or "all" (on every output).

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
        loss_positions: str = "recall",
    ):
        super().__init__(seed, batch_size)
        self.loss_positions = check_choice(
            "task.loss_positions", loss_positions, COPY_LOSS_POSITIONS
        )
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
        sums, loss = weighted_cross_entropy(outputs, batch["targets"], batch["weights"])
        if self.loss_positions == "all":
            every, loss = weighted_cross_entropy(outputs, batch["targets"])
            sums = {**sums, "loss_all": every["loss"]}
        return sums, loss

    def baselines(self) -> dict[str, float]:
        baselines = {"baseline/cross_entropy": math.log(self.num_symbols)}
        if self.loss_positions == "all":
            baselines["baseline/loss_all"] = synthetic.copy_baseline_cross_entropy(
                self.num_symbols, self.copy_length, self.lag
            )
        return baselines


class StateTrackingTask(Task):
    """Sequence classification with a length-generalisation split (base of `ParityTask` and
    `ModularArithmeticTask`).

    Training and `valid` sequences have lengths uniform in `[min_length, max_length]`; `test`
    sequences are longer, `[max_length + 1, test_max_length]`, so `test/accuracy` measures how
    far what was learnt carries beyond the lengths seen (Delétang et al. 2023). Every sequence
    has its own length: inputs are `[b, max_length]` token ids padded after it, and the model
    (`SequenceClassifier` with `lengths`, pooling "last") reads the state at its last valid step.
    Loss: cross-entropy; metrics `split/loss` and `split/accuracy`; `valid/accuracy` ranks
    checkpoints.

    A subclass supplies `name`, `num_classes`, `vocab_size` and `batch(step, batch_size,
    min_length, max_length, stream)`, a pure function of its arguments.

    Args:
        seed: run seed.
        batch_size: training batch size.
        min_length: shortest training and valid sequence, >= 1.
        max_length: longest training and valid sequence, >= `min_length`.
        test_max_length: longest `test` sequence, > `max_length`; None: `2 * max_length`.
        eval_batches: number of fixed batches per evaluation split, >= 1.
        eval_batch_size: their size, >= 1.

    Raises:
        ConfigError: a setting out of range (the message names `task.<key>`).
    """

    model_class = SequenceClassifier
    monitor = "valid/accuracy"
    monitor_mode = "max"
    num_classes: int
    vocab_size: int

    def __init__(
        self,
        seed: int,
        batch_size: int,
        min_length: int = 1,
        max_length: int = 40,
        test_max_length: int | None = None,
        eval_batches: int = 4,
        eval_batch_size: int = 256,
    ):
        super().__init__(seed, batch_size)
        self.min_length = check_int("task.min_length", min_length, 1)
        self.max_length = check_int(
            "task.max_length", max_length, min_length, why=f" (task.min_length={min_length})"
        )
        check_int(
            "task.test_max_length",
            test_max_length,
            max_length + 1,
            optional=True,
            why=f" (test sequences are longer than task.max_length={max_length})",
        )
        self.test_max_length = 2 * max_length if test_max_length is None else test_max_length
        self.num_eval_batches = check_int("task.eval_batches", eval_batches, 1)
        self.eval_batch_size = check_int("task.eval_batch_size", eval_batch_size, 1)

    @abc.abstractmethod
    def batch(
        self, step: int, batch_size: int, min_length: int, max_length: int, stream: int
    ) -> Batch:
        """Batch `step` of random stream `stream` with lengths in `[min_length, max_length]`."""

    @property
    def splits(self) -> tuple[str, ...]:
        return ("valid", "test")

    @property
    def length_ranges(self) -> dict[str, tuple[int, int]]:
        """`(shortest, longest)` sequence of each split, training included."""
        train = (self.min_length, self.max_length)
        return {"train": train, "valid": train, "test": (self.max_length + 1, self.test_max_length)}

    def model_fields(self) -> dict[str, Any]:
        return {"num_outputs": self.num_classes, "vocab_size": self.vocab_size}

    def model_args(self, batch: Batch, carry: Carry) -> tuple[Any, ...]:
        return (batch["inputs"], batch["lengths"])

    def train_batch(self, step: int) -> Batch:
        return self.batch(
            step, self.batch_size, self.min_length, self.max_length, synthetic.TRAIN_STREAM
        )

    @functools.cached_property
    def _eval(self) -> dict[str, list[Batch]]:
        streams = {"valid": synthetic.EVAL_STREAM, "test": synthetic.LENGTH_TEST_STREAM}
        return {
            split: [
                self.batch(i, self.eval_batch_size, *self.length_ranges[split], stream)
                for i in range(self.num_eval_batches)
            ]
            for split, stream in streams.items()
        }

    def eval_batches(self, split: str) -> list[Batch]:
        return self._eval[split]

    def objective(self, outputs: Array, batch: Batch) -> tuple[Sums, Array]:
        return weighted_cross_entropy(outputs, batch["labels"])

    def tokens(self, batch: Batch) -> int:
        return int(np.sum(batch["lengths"]))

    def baselines(self) -> dict[str, float]:
        """Guessing uniformly: accuracy `1 / num_classes`, cross-entropy `log(num_classes)`."""
        return {
            "baseline/accuracy": 1.0 / self.num_classes,
            "baseline/cross_entropy": math.log(self.num_classes),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "classes": self.num_classes,
            "vocab_size": self.vocab_size,
            **{f"{split}_lengths": list(r) for split, r in self.length_ranges.items()},
        }


class ParityTask(StateTrackingTask):
    """Parity: the sum mod 2 of a sequence of bits (Delétang et al. 2023's "parity check").

    See `StateTrackingTask` for the splits, model and metrics and `synthetic.parity_batch` for
    the data. Both labels are equally likely: `baseline/accuracy` 0.5, `baseline/cross_entropy`
    `log 2`. The answer flips with every 1 at any distance, so the state cannot fade: Beck et
    al. (2024, xLSTM) report that sLSTM and LSTM solve it where linear recurrences do not.

    Args:
        seed, batch_size, min_length, max_length, test_max_length, eval_batches,
            eval_batch_size: as `StateTrackingTask`.
    """

    name = "parity"
    num_classes = 2
    vocab_size = synthetic.parity_vocab_size()

    def batch(
        self, step: int, batch_size: int, min_length: int, max_length: int, stream: int
    ) -> Batch:
        return synthetic.parity_batch(
            self.seed, step, batch_size, min_length, max_length, stream=stream
        )


class ModularArithmeticTask(StateTrackingTask):
    """The value mod `modulus` of an expression of digits and `+ - *` without brackets
    (Delétang et al. 2023's "modular arithmetic (simple)"; `synthetic.modular_batch`).

    As Delétang et al.: digits in `[0, modulus)`, `*` before `+` and `-`, odd lengths (digit,
    operator, ..., digit). Unlike them, each sequence of a batch has its own length, inputs are
    token ids rather than one-hot vectors, and `operators` chooses a subset ("+-": the cyclic
    group `Z_m`, whose labels are uniform). See `StateTrackingTask` for splits and metrics.

    Baselines: guessing uniformly, `baseline/accuracy = 1/modulus` and `baseline/cross_entropy =
    log(modulus)`. With `*` the labels lean towards 0 (a product with a 0 digit is 0), so the
    best constant answer on each fixed split is given too: `baseline/<split>_accuracy` (its
    most frequent label's share) and `baseline/<split>_loss` (the entropy of its labels).

    Args:
        seed, batch_size, min_length, max_length, test_max_length, eval_batches,
            eval_batch_size: as `StateTrackingTask` (lengths count tokens; each range must hold
            an odd length).
        modulus: `m >= 2`, the number of classes.
        operators: a non-empty string of distinct operators from "+-*".

    Raises:
        ConfigError: a setting out of range (the message names `task.<key>`).
    """

    name = "modular"

    def __init__(
        self,
        seed: int,
        batch_size: int,
        modulus: int = 5,
        operators: str = synthetic.MODULAR_OPERATORS,
        min_length: int = 1,
        max_length: int = 40,
        test_max_length: int | None = None,
        eval_batches: int = 4,
        eval_batch_size: int = 256,
    ):
        super().__init__(
            seed, batch_size, min_length, max_length, test_max_length, eval_batches, eval_batch_size
        )
        self.modulus = check_int("task.modulus", modulus, 2)
        allowed = synthetic.MODULAR_OPERATORS
        if (
            not isinstance(operators, str)
            or not operators
            or not set(operators) <= set(allowed)
            or len(set(operators)) < len(operators)
        ):
            raise ConfigError(
                f"task.operators must be a non-empty string of distinct operators from "
                f"{allowed!r} (e.g. '+-'), got {operators!r}"
            )
        self.operators = operators
        for split, key in (("train", "max_length"), ("test", "test_max_length")):
            low, high = self.length_ranges[split]
            if synthetic.odd_length_range(low, high) is None:
                raise ConfigError(
                    f"task.{key}={high} leaves the {split} lengths [{low}, {high}] without an odd "
                    f"length; an expression (digit, operator, ..., digit) has an odd length, so "
                    f"set task.{key} >= {high + 1}"
                )

    @property
    def num_classes(self) -> int:
        return self.modulus

    @property
    def vocab_size(self) -> int:
        return synthetic.modular_vocab_size(self.modulus)

    def batch(
        self, step: int, batch_size: int, min_length: int, max_length: int, stream: int
    ) -> Batch:
        return synthetic.modular_batch(
            self.seed,
            step,
            batch_size,
            min_length,
            max_length,
            self.modulus,
            self.operators,
            stream=stream,
        )

    def baselines(self) -> dict[str, float]:
        baselines = super().baselines()
        for split in self.splits:
            labels = np.concatenate([b["labels"] for b in self.eval_batches(split)])
            shares = np.bincount(labels, minlength=self.modulus) / len(labels)
            nonzero = shares[shares > 0]
            baselines[f"baseline/{split}_accuracy"] = float(shares.max())
            baselines[f"baseline/{split}_loss"] = float(-np.sum(nonzero * np.log(nonzero)))
        return baselines


class RecallTask(Task):
    """Per-step recall with a harder `test` split (base of `SelectiveCopyTask` and `MQARTask`).

    Model: `SequenceTagger` over the task's token vocabulary (`num_outputs = vocab_size`), as
    the copy task. Loss: cross-entropy on the recall steps only (`weights`); `accuracy` is per
    recall step and ranks checkpoints (`valid/accuracy`). Training and `valid` batches share
    one setting; `test` batches (scored once, at the best checkpoint) are longer, or hold more
    to remember, so `test/accuracy` measures how far what was learnt carries. Each split is one
    `[b, t]` shape (the tagger compiles once per split).

    A subclass supplies `name`, `vocab_size`, `settings` (the generator's keyword arguments of
    "train" and "test") and `generate(step, batch_size, stream, **settings)`, a pure function.

    Args:
        seed: run seed.
        batch_size: training batch size.
        eval_batches: number of fixed batches per evaluation split, >= 1.
        eval_batch_size: their size, >= 1.

    Raises:
        ConfigError: a setting out of range (the message names `task.<key>`).
    """

    model_class = SequenceTagger
    monitor = "valid/accuracy"
    monitor_mode = "max"
    vocab_size: int

    def __init__(
        self, seed: int, batch_size: int, eval_batches: int = 4, eval_batch_size: int = 128
    ):
        super().__init__(seed, batch_size)
        self.num_eval_batches = check_int("task.eval_batches", eval_batches, 1)
        self.eval_batch_size = check_int("task.eval_batch_size", eval_batch_size, 1)

    @property
    @abc.abstractmethod
    def settings(self) -> dict[str, dict[str, Any]]:
        """The generator's keyword arguments of "train" (also `valid`) and "test"."""

    @abc.abstractmethod
    def generate(self, step: int, batch_size: int, stream: int, **settings: Any) -> Batch:
        """Batch `step` of random stream `stream` under `settings`."""

    @property
    def splits(self) -> tuple[str, ...]:
        return ("valid", "test")

    def model_fields(self) -> dict[str, Any]:
        return {"num_outputs": self.vocab_size, "vocab_size": self.vocab_size}

    def train_batch(self, step: int) -> Batch:
        return self.generate(
            step, self.batch_size, synthetic.TRAIN_STREAM, **self.settings["train"]
        )

    @functools.cached_property
    def _eval(self) -> dict[str, list[Batch]]:
        plan = {
            "valid": (synthetic.EVAL_STREAM, self.settings["train"]),
            "test": (synthetic.LENGTH_TEST_STREAM, self.settings["test"]),
        }
        return {
            split: [
                self.generate(i, self.eval_batch_size, stream, **settings)
                for i in range(self.num_eval_batches)
            ]
            for split, (stream, settings) in plan.items()
        }

    def eval_batches(self, split: str) -> list[Batch]:
        return self._eval[split]

    def objective(self, outputs: Array, batch: Batch) -> tuple[Sums, Array]:
        return weighted_cross_entropy(outputs, batch["targets"], batch["weights"])

    def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"vocab_size": self.vocab_size}
        for split in ("train", "test"):
            facts.update({f"{split}_{k}": v for k, v in self.settings[split].items()})
        return facts


class SelectiveCopyTask(RecallTask):
    """Selective copying (Gu & Dao 2023, "Mamba", Section 3.1, Figure 2): copy `copy_length`
    symbols scattered at random positions among `length` blank steps, in order, after them.

    Unlike the copy task the positions change from sequence to sequence, so (Gu & Dao argue) a
    time-invariant recurrence (an LTI state space model, a fixed-decay linear RNN) cannot pick
    the symbols out, and a recurrence whose gates depend on the input can
    (`synthetic.selective_copy_batch`).
    Each sequence has `length + copy_length` steps; `test` spreads the same number of symbols
    over `test_length` steps (length generalisation). See `RecallTask` for the model and
    metrics. Baselines (a memoryless guess over the symbols): `baseline/cross_entropy =
    log(num_symbols)`, `baseline/accuracy = 1 / num_symbols`.

    Args:
        seed, batch_size, eval_batches, eval_batch_size: as `RecallTask`.
        length: steps holding the symbols among blanks, `>= copy_length`.
        num_symbols: distinct data symbols, >= 1 (the vocabulary adds a blank and a marker).
        copy_length: symbols to copy, >= 1.
        test_length: `test`'s `length`, `> length`; None: `2 * length`.

    Raises:
        ConfigError: a setting out of range (the message names `task.<key>`).
    """

    name = "selective_copy"

    def __init__(
        self,
        seed: int,
        batch_size: int,
        length: int = 16,
        num_symbols: int = 4,
        copy_length: int = 4,
        test_length: int | None = None,
        eval_batches: int = 4,
        eval_batch_size: int = 128,
    ):
        super().__init__(seed, batch_size, eval_batches, eval_batch_size)
        self.num_symbols = check_int("task.num_symbols", num_symbols, 1)
        self.copy_length = check_int("task.copy_length", copy_length, 1)
        self.length = check_int(
            "task.length",
            length,
            copy_length,
            why=f" (it holds the task.copy_length={copy_length} symbols; raise task.length or "
            "lower task.copy_length)",
        )
        check_int(
            "task.test_length",
            test_length,
            length + 1,
            optional=True,
            why=f" (test sequences are longer than task.length={length}; null: 2 * task.length)",
        )
        self.test_length = 2 * length if test_length is None else test_length

    @property
    def vocab_size(self) -> int:
        return synthetic.copy_vocab_size(self.num_symbols)

    @property
    def settings(self) -> dict[str, dict[str, Any]]:
        return {"train": {"length": self.length}, "test": {"length": self.test_length}}

    def generate(self, step: int, batch_size: int, stream: int, **settings: Any) -> Batch:
        return synthetic.selective_copy_batch(
            self.seed,
            step,
            batch_size,
            num_symbols=self.num_symbols,
            copy_length=self.copy_length,
            stream=stream,
            **settings,
        )

    def baselines(self) -> dict[str, float]:
        return {
            "baseline/accuracy": 1.0 / self.num_symbols,
            "baseline/cross_entropy": math.log(self.num_symbols),
        }


class MQARTask(RecallTask):
    """Multi-query associative recall (Arora et al. 2023, "Zoology", Section 3): `num_pairs`
    key-value pairs, then queries of their keys, each to be answered with its value.

    Zoology's construction (`synthetic.mqar_batch`): distinct keys and distinct values, every
    pair queried once by default (`num_queries`), queries at even slots placed by a power law
    (`power_a`, 0.01 as Zoology: mostly soon after the pairs), random tokens between them
    (`random_non_queries`). Answering needs a state that holds every pair, each value bound
    to its key; Arora et al. find that the state a recurrent or convolutional model needs grows
    with the number of pairs, where attention solves MQAR at any size. The `test`
    split holds `test_num_pairs` pairs in `test_length` steps (longer gaps and, if set, more
    pairs). Baselines (a guess that ignores the keys): `baseline/cross_entropy =
    log(value_vocab)`, `baseline/accuracy = 1 / value_vocab`; a model that knows which values
    were shown but not to which key scores about `1 / num_pairs`.

    Args:
        seed, batch_size, eval_batches, eval_batch_size: as `RecallTask`.
        num_pairs: pairs per sequence, `1 <= num_pairs <= min(key_vocab, value_vocab)`.
        key_vocab: distinct keys, >= 1 (Zoology: half of its vocabulary).
        value_vocab: distinct values, >= 1.
        num_queries: queries per sequence, `1..num_pairs`; None: every pair, as Zoology
            (in `test` too: `test_num_pairs`).
        length: steps per sequence, `>= 2 * num_pairs + 2 * num_queries`.
        test_length: `test`'s length, `>= length`; None: `2 * length`.
        test_num_pairs: `test`'s pairs, `num_pairs..min(key_vocab, value_vocab)`; None:
            `num_pairs`.
        power_a: the power law of the query slots, > 0 (1: uniform).
        random_non_queries: random tokens (true) or blanks (false) between the queries.

    Raises:
        ConfigError: a setting out of range (the message names `task.<key>`).
    """

    name = "mqar"

    def __init__(
        self,
        seed: int,
        batch_size: int,
        num_pairs: int = 2,
        key_vocab: int = 4,
        value_vocab: int = 4,
        num_queries: int | None = None,
        length: int = 16,
        test_length: int | None = None,
        test_num_pairs: int | None = None,
        power_a: float = 0.01,
        random_non_queries: bool = True,
        eval_batches: int = 4,
        eval_batch_size: int = 128,
    ):
        super().__init__(seed, batch_size, eval_batches, eval_batch_size)
        self.key_vocab = check_int("task.key_vocab", key_vocab, 1)
        self.value_vocab = check_int("task.value_vocab", value_vocab, 1)
        most = min(key_vocab, value_vocab)
        distinct = (
            f" (keys and values are distinct within a sequence: task.key_vocab={key_vocab}, "
            f"task.value_vocab={value_vocab}; raise them or lower the pairs)"
        )
        self.num_pairs = check_int("task.num_pairs", num_pairs, 1, most, why=distinct)
        self.num_queries = check_int(
            "task.num_queries",
            num_queries,
            1,
            num_pairs,
            optional=True,
            why=f" (each query asks one of the task.num_pairs={num_pairs} pairs; null: all)",
        )
        self.length = self._check_length("task.length", length, num_pairs)
        check_int(
            "task.test_length",
            test_length,
            length,
            optional=True,
            why=f" (test sequences are at least task.length={length} long; null: 2 * task.length)",
        )
        self.test_num_pairs = check_int(
            "task.test_num_pairs", test_num_pairs, num_pairs, most, optional=True, why=distinct
        )
        if self.test_num_pairs is None:
            self.test_num_pairs = num_pairs
        self.test_length = self._check_length(
            "task.test_length",
            2 * length if test_length is None else test_length,
            self.test_num_pairs,
        )
        self.power_a = check_float("task.power_a", power_a, 0.0, low_open=True)
        self.random_non_queries = check_bool("task.random_non_queries", random_non_queries)

    def _queries(self, num_pairs: int) -> int:
        return num_pairs if self.num_queries is None else self.num_queries

    def _check_length(self, key: str, length: int, num_pairs: int) -> int:
        queries = self._queries(num_pairs)
        shortest = synthetic.mqar_min_length(num_pairs, queries)
        return check_int(
            key,
            length,
            shortest,
            why=f" ({num_pairs} pairs and {queries} queries at even slots after them need "
            f"{shortest} steps; raise {key} or lower the pairs or queries)",
        )

    @property
    def vocab_size(self) -> int:
        return synthetic.mqar_vocab_size(self.key_vocab, self.value_vocab)

    @property
    def settings(self) -> dict[str, dict[str, Any]]:
        return {
            split: {"length": length, "num_pairs": pairs, "num_queries": self._queries(pairs)}
            for split, length, pairs in (
                ("train", self.length, self.num_pairs),
                ("test", self.test_length, self.test_num_pairs),
            )
        }

    def generate(self, step: int, batch_size: int, stream: int, **settings: Any) -> Batch:
        return synthetic.mqar_batch(
            self.seed,
            step,
            batch_size,
            key_vocab=self.key_vocab,
            value_vocab=self.value_vocab,
            power_a=self.power_a,
            random_non_queries=self.random_non_queries,
            stream=stream,
            **settings,
        )

    def baselines(self) -> dict[str, float]:
        return {
            "baseline/accuracy": 1.0 / self.value_vocab,
            "baseline/cross_entropy": math.log(self.value_vocab),
        }
