"""Sentence classification data: MR (rt-polarity) and any one-file-per-class corpus.

MR (Pang & Lee, "Seeing stars", ACL 2005) has 5,331 positive and 5,331 negative sentences,
lower-cased and tokenized, and no official split: results are 10-fold cross-validation accuracy
(Kim, "Convolutional Neural Networks for Sentence Classification", 2014). `kfold_split` gives the
folds, `train_valid_split` a dev set carved out of the training folds.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rnnlab.checks import check_float
from rnnlab.data.batching import pad_sequences
from rnnlab.data.errors import ConfigError, StrPath, read_text, require_dir
from rnnlab.data.text import Vocabulary

PAD = "<pad>"
UNK = "<unk>"
POLARITY_FILES = {"neg": "rt-polarity.neg", "pos": "rt-polarity.pos"}
_POLARITY_HINT = (
    "download rt-polarity.pos and rt-polarity.neg (Pang & Lee sentence polarity v1.0, e.g. "
    "from dennybritz/cnn-text-classification-tf data/rt-polaritydata/)"
)


def load_labelled_text_files(
    files: Mapping[str, StrPath], config_key: str = "task.path", hint: str | None = None
) -> tuple[list[list[str]], np.ndarray, tuple[str, ...]]:
    """Reads one UTF-8 file per class, one tokenized sentence a line, split on whitespace.

    Blank lines are skipped. Class `i` is the `i`-th key of `files`.

    Args:
        files: class name -> file path, in label order.
        config_key: config key named in the error if a file is missing.
        hint: where to get the files, for the error message.

    Returns:
        `(sentences, labels, class_names)`: `n` token lists, `labels` `[n]` int32, and the names.

    Raises:
        DataNotFoundError: a file does not exist.
        DataError: a file is empty, not UTF-8 or binary (see `read_text`).
        ValueError: no files.
    """
    if not files:
        raise ValueError("load_labelled_text_files needs at least one class file")
    sentences: list[list[str]] = []
    labels: list[int] = []
    for label, path in enumerate(files.values()):
        lines = [line.split() for line in read_text(path, config_key, hint).split("\n")]
        lines = [tokens for tokens in lines if tokens]
        sentences.extend(lines)
        labels.extend([label] * len(lines))
    return sentences, np.asarray(labels, dtype=np.int32), tuple(files)


def load_polarity(
    directory: StrPath, config_key: str = "task.path"
) -> tuple[list[list[str]], np.ndarray, tuple[str, ...]]:
    """The MR sentence polarity dataset: labels 0 = `neg`, 1 = `pos` (5,331 sentences each).

    Args:
        directory: folder holding `rt-polarity.neg` and `rt-polarity.pos` (UTF-8).
        config_key: config key named in the error if the folder or a file is missing.

    Returns:
        `(sentences, labels [n] int32, ("neg", "pos"))`, negatives first.
    """
    folder = require_dir(directory, config_key, _POLARITY_HINT)
    files = {name: Path(folder) / file for name, file in POLARITY_FILES.items()}
    return load_labelled_text_files(files, config_key, _POLARITY_HINT)


def kfold_split(n: int, num_folds: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/test indices of one fold of seeded k-fold cross-validation.

    The examples are shuffled once by `seed` and cut into `num_folds` near-equal folds
    (`np.array_split`); the folds are disjoint and cover `range(n)`.

    Returns:
        `(train_idx, test_idx)`, sorted int64 arrays.

    Raises:
        ConfigError: `num_folds < 2`, `fold` outside `[0, num_folds)`, or fewer than
            `num_folds` examples (named by their config keys `task.num_folds`, `task.fold`).
    """
    if num_folds < 2:
        raise ConfigError(f"task.num_folds must be >= 2, got {num_folds}")
    if not 0 <= fold < num_folds:
        raise ConfigError(f"task.fold must be in [0, task.num_folds={num_folds}), got {fold}")
    if n < num_folds:
        raise ConfigError(
            f"{n} examples are too few for task.num_folds={num_folds} folds: lower task.num_folds"
        )
    folds = np.array_split(np.random.default_rng(seed).permutation(n), num_folds)
    test = np.sort(folds[fold])
    train = np.sort(np.concatenate([f for i, f in enumerate(folds) if i != fold]))
    return train, test


def train_valid_split(n: int, valid_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of `range(n)` into train and validation indices.

    The validation set has `round(n * valid_fraction)` examples (at least 1).

    Returns:
        `(train_idx, valid_idx)`, sorted int64 arrays, disjoint and covering `range(n)`.

    Raises:
        ConfigError: `valid_fraction` is not in (0, 1) or leaves no training example
            (config key `task.valid_fraction`).
    """
    check_float("task.valid_fraction", valid_fraction, 0.0, 1.0, low_open=True, high_open=True)
    num_valid = max(1, round(n * valid_fraction))
    if num_valid >= n:
        raise ConfigError(
            f"task.valid_fraction={valid_fraction} of {n} training examples leaves none for "
            "training: lower task.valid_fraction (or use more data)"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[num_valid:]), np.sort(perm[:num_valid])


def build_vocab(
    sentences: Sequence[Sequence[str]], min_count: int = 1, max_size: int | None = None
) -> Vocabulary:
    """Vocabulary with `<pad>` = 0 and `<unk>` = 1, then words by decreasing count, then A-Z.

    Build it from the training sentences only, so held-out words map to `<unk>`.

    Args:
        sentences: token lists.
        min_count: drop words seen fewer times.
        max_size: cap on the total size, `<pad>` and `<unk>` included.
    """
    counts = collections.Counter(tok for sentence in sentences for tok in sentence)
    words = sorted(
        (tok for tok, c in counts.items() if c >= min_count and tok not in (PAD, UNK)),
        key=lambda tok: (-counts[tok], tok),
    )
    if max_size is not None:
        if max_size < 2:
            raise ConfigError(
                f"task.max_vocab (max_size) must be >= 2 (<pad>, <unk>) or null, got {max_size}"
            )
        words = words[: max_size - 2]
    return Vocabulary((PAD, UNK, *words), unk=UNK)


def encode_and_pad(
    sentences: Sequence[Sequence[str]], vocab: Vocabulary, max_len: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids padded with `<pad>` and truncated to `max_len`.

    Returns:
        `(ids [n, t] int32, lengths [n] int32)`; `t = max_len`, or the longest length if None.
    """
    pad = vocab.token_id(PAD) if PAD in vocab else 0
    return pad_sequences([vocab.encode(s) for s in sentences], pad_value=pad, max_len=max_len)
