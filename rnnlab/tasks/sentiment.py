"""Text classification: MR sentiment (Pang & Lee 2005), or any CSV/TSV/JSON-lines file of texts
and labels (`TextClassificationTask`), with k-fold cross-validation or the file's own split.

MR has no official split, so results are reported per fold of a seeded 10-fold split (Kim 2014):
fold `fold` is the test set, and `valid_fraction` of the other nine folds is held out for model
selection (the best-by-validation checkpoint is evaluated on the test fold at the end). The split
depends on `split_seed` only, so runs with different `seed`s share it. The vocabulary comes from
the training sentences alone; other words map to `<unk>`.

Model: `SequenceClassifier(vocab_size, num_outputs=2, pooling)` over the padded token ids with
their lengths (padding changes nothing). Loss: cross-entropy; metric: accuracy.

A file of labelled texts (`TextClassificationTask`) goes through the same machinery: its string
labels become class ids (sorted; listed by `describe()` in the run log), its texts are cut into
words or characters, and a split column (`train`/`valid`/`test` per row), when given, replaces
the folds.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np

from rnnlab.attention import POOLING_KINDS
from rnnlab.checks import check_bool, check_choice, check_float, check_int, check_path
from rnnlab.data import batching, registry, sentiment, text
from rnnlab.data.text import Vocabulary
from rnnlab.errors import ConfigError, DataError
from rnnlab.models import SequenceClassifier
from rnnlab.tasks.base import Batch, Sums, Task, weighted_cross_entropy
from rnnlab.tasks.language_model import LanguageModelTask
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

    def load(self) -> tuple[list[list[str]], np.ndarray, tuple[str, ...], list[str] | None]:
        """`(token lists, labels [n] int32, class names, split names or None)` of every example;
        None: the folds decide the split."""
        sentences, labels, names = sentiment.load_polarity(
            registry.ensure(self.path), config_key="task.path"
        )
        return sentences, labels, names, None

    def _split_indices(self, n: int, splits: list[str] | None) -> dict[str, np.ndarray]:
        """Example indices of train, valid and (if any) test: the fold, or the split column
        (valid carved out of train by `valid_fraction` when the column names none)."""
        if splits is None:
            train_pool, test = sentiment.kfold_split(n, self.num_folds, self.fold, self.split_seed)
        else:
            names = np.asarray(splits)
            train_pool, test = np.flatnonzero(names == "train"), np.flatnonzero(names == "test")
            if "valid" in splits:
                return {
                    "train": train_pool,
                    "valid": np.flatnonzero(names == "valid"),
                    "test": test,
                }
        train_pos, valid_pos = sentiment.train_valid_split(
            len(train_pool), self.valid_fraction, self.split_seed
        )
        return {"train": train_pool[train_pos], "valid": train_pool[valid_pos], "test": test}

    @functools.cached_property
    def data(self) -> dict[str, Any]:
        """Encoded splits: `{split: (ids [n, max_len], lengths [n], labels [n])}`, `vocab` and
        `classes` (the class names in id order); a split without examples is left out."""
        sentences, labels, classes, splits = self.load()
        indices = self._split_indices(len(sentences), splits)
        indices = {split: idx for split, idx in indices.items() if len(idx)}
        if len(indices.get("train", ())) < self.batch_size:
            where = (
                f"fold {self.fold} (the other task.num_folds - 1 folds"
                if splits is None
                else ("the rows of split 'train' (task.split_column")
            )
            raise ConfigError(
                f"trainer.batch_size={self.batch_size} is more than the "
                f"{len(indices.get('train', ()))} training sentences of {where}, less "
                f"task.valid_fraction={self.valid_fraction}): lower trainer.batch_size"
            )
        vocab = sentiment.build_vocab(
            [sentences[i] for i in indices["train"]], self.min_count, self.max_vocab
        )
        data: dict[str, Any] = {"vocab": vocab, "classes": classes}
        for split, idx in indices.items():
            ids, lengths = sentiment.encode_and_pad(
                [sentences[i] for i in idx], vocab, max_len=self.max_len
            )
            data[split] = (ids, np.maximum(lengths, 1), labels[idx])
        return data

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(split for split in ("valid", "test") if split in self.data)

    @property
    def vocab(self) -> Vocabulary:
        return self.data["vocab"]

    @property
    def steps_per_epoch(self) -> int:
        return batching.batches_per_epoch(len(self.data["train"][2]), self.batch_size)

    def model_fields(self) -> dict[str, Any]:
        return {
            "num_outputs": len(self.data["classes"]),
            "vocab_size": len(self.data["vocab"]),
            "pooling": self.pooling,
        }

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
        """Accuracy of always answering the most frequent class, on the last split."""
        labels = self.data[self.splits[-1]][2]
        return {"baseline/accuracy": float(np.bincount(labels).max() / len(labels))}

    def describe(self) -> dict[str, Any]:
        sizes = {f"{k}_examples": len(self.data[k][2]) for k in ("train", *self.splits)}
        return {
            "classes": list(self.data["classes"]),
            "vocab_size": len(self.data["vocab"]),
            "steps_per_epoch": self.steps_per_epoch,
            **sizes,
        }


class TextClassificationTask(SentimentTask):
    """Classification of the texts of any CSV, TSV or JSON-lines file (see the module docstring).

    The file is read when the data is first used (at start-up): a missing column, an empty
    text or label, or a split name other than train/valid/test raises a one-line `DataError`
    naming the file, line and key, as do fewer than two classes; fewer training rows than
    `trainer.batch_size` raise `ConfigError`.

    Args:
        seed, batch_size: as `SentimentTask`.
        path: the file (`.csv`, `.tsv`, `.jsonl`/`.json`, UTF-8; CSV/TSV with a header row);
            config key `task.path`.
        text_column: the column (JSON key) of the text.
        label_column: the column of the label; any text (or JSON number): the distinct labels,
            sorted (numerically if all are integers), are the classes.
        split_column: a column holding `train`, `valid` or `test` per row, or None for k-fold
            cross-validation (`num_folds`, `fold`, `split_seed`). Without `valid` rows,
            `valid_fraction` of the train rows are held out; without `test` rows the run has
            no test split.
        level: "word" (whitespace-separated tokens) or "char" (characters).
        lowercase: lower-case the texts before tokenising.
        **kwargs: `SentimentTask`'s (folds, `valid_fraction`, `max_len`, `min_count`, the
            vocabulary cap `max_vocab`, `pooling`, `eval_batch_size`).
    """

    name = "text_classification"

    def __init__(
        self,
        seed: int,
        batch_size: int,
        path: str,
        text_column: str = "text",
        label_column: str = "label",
        split_column: str | None = None,
        level: str = "word",
        lowercase: bool = False,
        **kwargs: Any,
    ):
        super().__init__(seed, batch_size, path, **kwargs)
        for key, value in (("text_column", text_column), ("label_column", label_column)):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"task.{key} must be a column name, got {value!r}")
        if split_column is not None and (not isinstance(split_column, str) or not split_column):
            raise ConfigError(
                f"task.split_column must be a column name or null, got {split_column!r}"
            )
        self.text_column, self.label_column = text_column, label_column
        self.split_column = split_column
        self.level = check_choice("task.level", level, sentiment.TOKEN_LEVELS)
        self.lowercase = check_bool("task.lowercase", lowercase)

    def load(self) -> tuple[list[list[str]], np.ndarray, tuple[str, ...], list[str] | None]:
        table = sentiment.read_labelled_table(
            registry.ensure(self.path),
            self.text_column,
            self.label_column,
            self.split_column,
            config_key="task.path",
        )
        labels, classes = sentiment.class_ids(table.labels)
        if len(classes) < 2:
            raise DataError(
                f"column {self.label_column!r} of {self.path} holds one label only "
                f"({classes[0]!r}): classification needs two or more; set task.label_column to "
                "the column of labels"
            )
        sentences = [sentiment.tokenize(t, self.level, self.lowercase) for t in table.texts]
        return sentences, labels, classes, table.splits


class SentimentLMTask(LanguageModelTask):
    """A word-level language model on the training sentences of MR's split (labels unused): the
    pretraining of Dai & Le (2015, "Semi-supervised Sequence Learning") whose embedding and LSTM
    then start a classifier (`trainer.init_from`).

    The split is `SentimentTask`'s for the same `path`, `num_folds`, `fold`, `split_seed` and
    `valid_fraction`: the model trains on that split's training sentences (in the split's
    order, each followed by `<eos>`, one stream as PTB) and is validated on its validation
    sentences. The test fold is never read: a classifier warm-started from this run and scored on
    that fold has seen none of its sentences. The vocabulary is the classifier's for the same
    `min_count` and `max_vocab` (`<pad>`, `<unk>`, the training words by count) with `<eos>`
    appended, so every word keeps its id; `rnnlab.transfer` would remap rows by token anyway.

    Args:
        seed, batch_size: as `LanguageModelTask` (rows of the training stream).
        path, num_folds, fold, split_seed, valid_fraction, min_count, max_vocab: as
            `SentimentTask`.
        **kwargs: `LanguageModelTask`'s (`bptt`, `windows`, `eval_batch_size`, ...).
    """

    name = "sentiment_lm"
    separator = " "
    report_bpc = False

    def __init__(
        self,
        seed: int,
        batch_size: int,
        path: str,
        num_folds: int = 10,
        fold: int = 0,
        split_seed: int = 0,
        valid_fraction: float = 0.1,
        min_count: int = 1,
        max_vocab: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(seed, batch_size, **kwargs)
        self.split = SentimentTask(
            seed,
            1,
            path,
            num_folds=num_folds,
            fold=fold,
            split_seed=split_seed,
            valid_fraction=valid_fraction,
            min_count=min_count,
            max_vocab=max_vocab,
        )
        self.path = self.split.path

    def load(self) -> dict[str, Any]:
        """`{"train": ids, "valid": ids, "vocab": Vocabulary}`; no test split (see above)."""
        sentences, _, _, splits = self.split.load()
        indices = self.split._split_indices(len(sentences), splits)
        train = [sentences[i] for i in indices["train"]]
        words = sentiment.build_vocab(train, self.split.min_count, self.split.max_vocab)
        vocab = Vocabulary((*words.tokens, text.EOS), unk=words.unk)
        eos = vocab.token_id(text.EOS)

        def stream(idx: np.ndarray) -> np.ndarray:
            parts = [np.append(vocab.encode(sentences[i]), eos) for i in idx]
            return np.concatenate(parts).astype(np.int32)

        return {
            "train": stream(indices["train"]),
            "valid": stream(indices["valid"]),
            "vocab": vocab,
        }


class TextClassificationLMTask(SentimentLMTask):
    """`SentimentLMTask` for a file of labelled texts: a language model on the training texts of
    `TextClassificationTask`'s split (its k-fold split or the file's split column; labels unused,
    the test rows never read), to warm-start a classifier of the same file (`trainer.init_from`).
    At character level (`level: char`) it reports bits per character.

    Args:
        seed, batch_size: as `LanguageModelTask`.
        path, text_column, label_column, split_column, level, lowercase, num_folds, fold,
            split_seed, valid_fraction, min_count, max_vocab: as `TextClassificationTask`.
        **kwargs: `LanguageModelTask`'s.
    """

    name = "text_classification_lm"

    def __init__(
        self,
        seed: int,
        batch_size: int,
        path: str,
        text_column: str = "text",
        label_column: str = "label",
        split_column: str | None = None,
        level: str = "word",
        lowercase: bool = False,
        num_folds: int = 5,
        fold: int = 0,
        split_seed: int = 0,
        valid_fraction: float = 0.1,
        min_count: int = 1,
        max_vocab: int | None = None,
        **kwargs: Any,
    ):
        self.separator = "" if level == "char" else " "
        self.report_bpc = level == "char"
        LanguageModelTask.__init__(self, seed, batch_size, **kwargs)
        self.split = TextClassificationTask(
            seed,
            1,
            path,
            text_column=text_column,
            label_column=label_column,
            split_column=split_column,
            level=level,
            lowercase=lowercase,
            num_folds=num_folds,
            fold=fold,
            split_seed=split_seed,
            valid_fraction=valid_fraction,
            min_count=min_count,
            max_vocab=max_vocab,
        )
        self.path = self.split.path
