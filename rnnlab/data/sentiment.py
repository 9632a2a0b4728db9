"""Sentence classification data: MR (rt-polarity), one-file-per-class corpora, and any CSV, TSV
or JSON-lines file of labelled texts (`read_labelled_table`).

MR (Pang & Lee, "Seeing stars", ACL 2005) has 5,331 positive and 5,331 negative sentences,
lower-cased and tokenized, and no official split: results are 10-fold cross-validation accuracy
(Kim, "Convolutional Neural Networks for Sentence Classification", 2014). `kfold_split` gives the
folds, `train_valid_split` a dev set carved out of the training folds.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rnnlab.checks import check_float
from rnnlab.data.batching import pad_sequences
from rnnlab.data.errors import ConfigError, DataError, StrPath, read_text, require_dir
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


TOKEN_LEVELS = ("word", "char")
"""Choices of `task.level`: whitespace-separated words, or characters."""
SPLIT_NAMES = ("train", "valid", "test")
"""The values a split column may hold."""


@dataclasses.dataclass(frozen=True)
class LabelledTable:
    """The rows of a CSV, TSV or JSON-lines file of labelled texts, as read.

    Attributes:
        texts: `n` texts.
        labels: `n` labels as text (a JSON number becomes its text, e.g. `"1"`).
        splits: `n` split names (`train`, `valid` or `test`), or None without a split column.
        lines: `n` 1-based line numbers (of the record's start), for error messages.
    """

    texts: list[str]
    labels: list[str]
    splits: list[str] | None
    lines: list[int]


def _table_records(path: Path, text: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """`(column names, [(line, record)])` of a CSV/TSV (header row) or JSON-lines file.

    The format follows the suffix: `.jsonl`/`.json` JSON lines (one object a line), `.tsv`
    tab-separated, anything else comma-separated. Blank lines are skipped.
    """
    if path.suffix.lower() in (".jsonl", ".json"):
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{path} line {number} is not JSON ({err.msg}): a JSON-lines file holds one "
                    'object a line, e.g. {"text": "...", "label": "pos"}'
                ) from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{path} line {number} is not a JSON object: a JSON-lines file holds one "
                    'object a line, e.g. {"text": "...", "label": "pos"}'
                )
            records.append((number, record))
        names = list(dict.fromkeys(k for _, record in records for k in record))
        return names, records
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    header = next(reader)
    rows = []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            raise DataError(
                f"{path} line {reader.line_num} has {len(row)} fields, the header (line 1) has "
                f"{len(header)}: fix the row (quote a text that holds the delimiter)"
            )
        rows.append((reader.line_num, dict(zip([h.strip() for h in header], row, strict=True))))
    return [h.strip() for h in header], rows


def read_labelled_table(
    path: StrPath,
    text_column: str = "text",
    label_column: str = "label",
    split_column: str | None = None,
    config_key: str = "task.path",
) -> LabelledTable:
    """Texts, labels and (optionally) split names from a CSV, TSV or JSON-lines file.

    Args:
        path: the file (`.csv`, `.tsv`, `.jsonl`/`.json`; UTF-8; CSV/TSV with a header row).
        text_column, label_column: the columns (JSON keys) of the text and the label; config
            keys `task.text_column`, `task.label_column`.
        split_column: a column holding `train`, `valid` or `test` per row, or None;
            config key `task.split_column`.
        config_key: config key of the path, named in the errors.

    Raises:
        DataNotFoundError: the file does not exist.
        DataError: the file is empty, not UTF-8 or has no rows; a named column is missing
            (the message lists the file's columns and the key to set); a row has an empty text
            or label, or a split name other than train/valid/test (the message gives the line).
    """
    text = read_text(path, config_key)
    path = Path(path)
    names, records = _table_records(path, text)
    if not records:
        raise DataError(f"{path} has no data rows: give {config_key} a file with labelled texts")
    wanted = {"task.text_column": text_column, "task.label_column": label_column}
    if split_column is not None:
        wanted["task.split_column"] = split_column
    for key, column in wanted.items():
        if column not in names:
            raise DataError(
                f"{path} has no column {column!r} (its columns: {', '.join(names)}); set {key} "
                "to the right column"
            )
    table = LabelledTable([], [], [] if split_column is not None else None, [])
    for line, record in records:
        for key in wanted:
            value = record.get(wanted[key])
            if value is None or not str(value).strip():
                raise DataError(
                    f"{path} line {line}: column {wanted[key]!r} ({key}) is empty; fill it or "
                    "remove the row"
                )
        table.texts.append(str(record[text_column]))
        table.labels.append(str(record[label_column]).strip())
        table.lines.append(line)
        if table.splits is not None:
            split = str(record[split_column]).strip()
            if split not in SPLIT_NAMES:
                raise DataError(
                    f"{path} line {line}: column {split_column!r} (task.split_column) holds "
                    f"{split!r}; it must be one of {', '.join(SPLIT_NAMES)}"
                )
            table.splits.append(split)
    return table


def class_ids(labels: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer ids of text labels: the distinct labels sorted (numerically if all are integers).

    Returns:
        `(ids [n] int32, class names)`; class `i` is `names[i]`.
    """
    names = sorted(set(labels))
    if all(name.lstrip("-").isdigit() for name in names):
        names.sort(key=int)
    index = {name: i for i, name in enumerate(names)}
    return np.asarray([index[label] for label in labels], dtype=np.int32), tuple(names)


def tokenize(text: str, level: str = "word", lowercase: bool = False) -> list[str]:
    """Tokens of a text: whitespace-separated words (`level="word"`) or characters (`"char"`)."""
    text = text.lower() if lowercase else text
    return text.split() if level == "word" else list(text)
