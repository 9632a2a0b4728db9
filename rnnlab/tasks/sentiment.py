"""Sentence-level sentiment classification on MR (Pang & Lee 2005), 10-fold cross-validation.

MR has no official split, so results are reported per fold of a seeded 10-fold split (Kim 2014):
fold `fold` is the test set, and `valid_fraction` of the other nine folds is held out for model
selection (the best-by-validation checkpoint is evaluated on the test fold at the end). The split
depends on `split_seed` only, so runs with different `seed`s share it. The vocabulary comes from
the training sentences alone; other words map to `<unk>`.

Model: `SequenceClassifier(vocab_size, num_outputs=2, pooling)` over the padded token ids with
their lengths (padding changes nothing). Loss: cross-entropy; metric: accuracy.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np

from rnnlab.attention import POOLING_KINDS
from rnnlab.checks import check_choice, check_float, check_int, check_path
from rnnlab.data import batching, sentiment
from rnnlab.errors import ConfigError
from rnnlab.models import SequenceClassifier
from rnnlab.tasks.base import Batch, Sums, Task, weighted_cross_entropy
from rnnlab.typing import Array, Carry


class SentimentTask(Task):
    """MR polarity (see the module docstring).

    Every setting is checked at construction: a bad one raises `ConfigError` naming its key
    (`task.fold must be in [0, task.num_folds=10), got 10`). The files are read when the data
    is first used (at start-up, when the trainer asks for `steps_per_epoch`): an empty or
    non-UTF-8 file raises `DataError`, and a split whose training part is smaller than
    `trainer.batch_size` (or too few sentences for the folds) `ConfigError`.

    Args:
        seed: run seed (initialisation, dropout and the order of training examples).
        batch_size: training batch size, at most the number of training sentences.
        path: folder with `rt-polarity.pos` and `rt-polarity.neg`; config key `task.path`.
        num_folds: cross-validation folds, >= 2 and at most the number of sentences.
        fold: the test fold, `0 <= fold < num_folds`.
        split_seed: seed of the fold and validation split (fixed across run seeds), >= 0.
        valid_fraction: share of the training folds held out for validation, in (0, 1).
        max_len: sentences are truncated to this many tokens (MR's longest has 59), >= 1.
        min_count: drop words seen fewer times in the training sentences, >= 1.
        max_vocab: cap on the vocabulary size (`<pad>` and `<unk>` included), >= 2; None for
            no cap.
        pooling: "last", "mean", "max" or "attention" (see `SequenceClassifier`).
        eval_batch_size: evaluation batch size, >= 1.
    """

    name = "sentiment"
    model_class = SequenceClassifier
    monitor = "valid/accuracy"
    monitor_mode = "max"

    def __init__(
        self,
        seed: int,
        batch_size: int,
        path: str,
        num_folds: int = 10,
        fold: int = 0,
        split_seed: int = 0,
        valid_fraction: float = 0.1,
        max_len: int = 64,
        min_count: int = 1,
        max_vocab: int | None = None,
        pooling: str = "last",
        eval_batch_size: int = 256,
    ):
        super().__init__(seed, batch_size)
        self.path = check_path("task.path", path)
        self.num_folds = check_int("task.num_folds", num_folds, 2)
        check_int("task.fold", fold)
        if not 0 <= fold < num_folds:
            raise ConfigError(f"task.fold must be in [0, task.num_folds={num_folds}), got {fold}")
        self.fold = fold
        self.split_seed = check_int("task.split_seed", split_seed, 0)
        self.valid_fraction = check_float(
            "task.valid_fraction", valid_fraction, 0.0, 1.0, low_open=True, high_open=True
        )
        self.max_len = check_int("task.max_len", max_len, 1)
        self.min_count = check_int("task.min_count", min_count, 1)
        self.max_vocab = check_int("task.max_vocab", max_vocab, 2, optional=True)
        self.pooling = check_choice("task.pooling", pooling, POOLING_KINDS)
        self.eval_batch_size = check_int("task.eval_batch_size", eval_batch_size, 1)

    @functools.cached_property
    def data(self) -> dict[str, Any]:
        """Encoded splits: `{split: (ids [n, max_len], lengths [n], labels [n])}` and `vocab`."""
        sentences, labels, _ = sentiment.load_polarity(self.path, config_key="task.path")
        train_pool, test = sentiment.kfold_split(
            len(sentences), self.num_folds, self.fold, self.split_seed
        )
        train_pos, valid_pos = sentiment.train_valid_split(
            len(train_pool), self.valid_fraction, self.split_seed
        )
        indices = {"train": train_pool[train_pos], "valid": train_pool[valid_pos], "test": test}
        if len(indices["train"]) < self.batch_size:
            raise ConfigError(
                f"trainer.batch_size={self.batch_size} is more than the {len(indices['train'])} "
                f"training sentences of fold {self.fold} (the other task.num_folds - 1 folds, "
                f"less task.valid_fraction={self.valid_fraction}): lower trainer.batch_size"
            )
        vocab = sentiment.build_vocab(
            [sentences[i] for i in indices["train"]], self.min_count, self.max_vocab
        )
        data: dict[str, Any] = {"vocab": vocab}
        for split, idx in indices.items():
            ids, lengths = sentiment.encode_and_pad(
                [sentences[i] for i in idx], vocab, max_len=self.max_len
            )
            data[split] = (ids, np.maximum(lengths, 1), labels[idx])
        return data

    @property
    def splits(self) -> tuple[str, ...]:
        return ("valid", "test")

    @property
    def steps_per_epoch(self) -> int:
        return batching.batches_per_epoch(len(self.data["train"][2]), self.batch_size)

    def model_fields(self) -> dict[str, Any]:
        return {"num_outputs": 2, "vocab_size": len(self.data["vocab"]), "pooling": self.pooling}

    def _gather(self, split: str, idx: np.ndarray) -> Batch:
        ids, lengths, labels = self.data[split]
        return {"inputs": ids[idx], "lengths": lengths[idx], "labels": labels[idx]}

    def train_batch(self, step: int) -> Batch:
        idx, _ = batching.shuffled_batch_indices(
            self.seed, step, len(self.data["train"][2]), self.batch_size
        )
        return self._gather("train", idx)

    def eval_batches(self, split: str) -> Iterator[Batch]:
        for idx in batching.sequential_batches(len(self.data[split][2]), self.eval_batch_size):
            yield self._gather(split, idx)

    def model_args(self, batch: Batch, carry: Carry) -> tuple[Any, ...]:
        return (batch["inputs"], batch["lengths"])

    def objective(self, outputs: Array, batch: Batch) -> tuple[Sums, Array]:
        return weighted_cross_entropy(outputs, batch["labels"])

    def tokens(self, batch: Batch) -> int:
        return int(np.sum(batch["lengths"]))

    def baselines(self) -> dict[str, float]:
        labels = self.data["test"][2]
        return {"baseline/accuracy": float(max(labels.mean(), 1 - labels.mean()))}

    def describe(self) -> dict[str, Any]:
        sizes = {f"{k}_examples": len(v[2]) for k, v in self.data.items() if k != "vocab"}
        return {
            "vocab_size": len(self.data["vocab"]),
            "steps_per_epoch": self.steps_per_epoch,
            **sizes,
        }
