"""Character- and word-level language modelling: stateful truncated BPTT, or random windows.

`windows="stateful"` (the default) follows Zaremba, Sutskever & Vinyals (2014), "Recurrent Neural
Network Regularization": the training text is cut into `batch_size` contiguous rows
(`rnnlab.data.lm_stream`); training step `s` reads window `s % n` of `bptt` tokens of every row
(`n` windows per epoch), and the carry from window `i` (behind `stop_gradient`) starts window
`i + 1`. The carry restarts from zeros at every epoch. The trainer checkpoints the carry with the
parameters, so a resumed run continues the stream mid-epoch exactly. Evaluation runs over the
whole validation (and test) text the same way, with `eval_batch_size` rows and the carry threaded
across all windows from zeros, so every token is scored once with its full left context up to
the row start.

`windows="random"` is nanoGPT's protocol (Karpathy, `train.py`: `get_batch`, `estimate_loss`), the
one Feng et al. (2024, "Were RNNs All We Needed?") follow for Shakespeare: training step `s` reads
`batch_size` windows of `bptt + 1` tokens at random offsets of the training text
(`rnnlab.data.random_lm_windows`, a pure function of `(seed, s)`), each from a zero carry, so the
task is not stateful (no carry in the training state). An epoch is `len(train) // (batch_size *
bptt)` steps: as many predicted tokens as the text has (it sets `trainer.epochs` and epoch-based
schedules; windows are drawn with replacement, so an epoch is not one pass). Evaluation cuts the
validation (and test) text into its consecutive, non-overlapping windows of `bptt` tokens (a final
shorter rest, under `bptt` tokens, is not scored), each from a zero carry, `eval_batch_size`
windows a batch, and averages the loss over every predicted token: the deterministic form of
nanoGPT's `estimate_loss`, which averages random windows. Every token is then predicted from 1 to
`bptt` tokens of context, as in training.

Metrics: `loss` is the mean negative log-likelihood in nats per token, `perplexity = exp(loss)`
(the word-level figure of Mikolov et al.), and at character level `bpc = loss / ln 2` (bits per
character); `accuracy` is next-token top-1 accuracy.

Language models alone have a vocabulary to save and text to generate: the trainer calls
`save_vocab` (the run's `vocab.json`, which `rnnlab-sample` reads) and `sample_text` (the text
sample logged at each evaluation) for a `LanguageModelTask`; other tasks know nothing of them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells.base import Cell
from rnnlab.checks import check_bool, check_choice, check_float, check_int, check_path
from rnnlab.data import registry, text
from rnnlab.errors import ConfigError
from rnnlab.models import LanguageModel, generate
from rnnlab.tasks.base import Batch, Sums, Task, make_model, weighted_cross_entropy
from rnnlab.typing import Array, Carry, Params, PRNGKey

VOCAB_FILE = "vocab.json"
WINDOWS = ("stateful", "random")
"""Choices of `task.windows`: stateful truncated BPTT over contiguous rows (Zaremba et al.), or
random windows each from a zero carry (nanoGPT)."""


def build_language_model(
    cell: Cell,
    backbone: Mapping[str, Any],
    vocab_size: int,
    tie_weights: bool = False,
    init_scale: float | None = None,
) -> LanguageModel:
    """`LanguageModel` from a cell and the backbone fields (shared by training and sampling)."""
    return make_model(
        LanguageModel,
        cell,
        backbone,
        vocab_size=vocab_size,
        tie_weights=tie_weights,
        init_scale=init_scale,
    )


def sample(
    model: LanguageModel,
    params: Params,
    vocab: text.Vocabulary,
    prompt: str,
    num_tokens: int,
    key: PRNGKey,
    temperature: float = 1.0,
    top_k: int = 0,
    num_samples: int = 1,
    separator: str = "",
) -> list[str]:
    """Generated continuations of `prompt`, decoded to strings (prompt included).

    Args:
        model, params: the language model and its parameters.
        vocab: its vocabulary (`vocab.json` of the run).
        prompt: text to continue (characters, or words separated by spaces when `separator`
            is " "); unknown tokens raise `KeyError` unless the vocabulary has an unk token.
        num_tokens: tokens to generate.
        key: PRNG key.
        temperature, top_k: sampling settings (see `rnnlab.models.sample_logits`).
        num_samples: independent samples (rows).
        separator: "" for characters, " " for words.
    """
    tokens = prompt.split() if separator == " " else list(prompt)
    if not tokens:
        raise ValueError("the prompt must contain at least one token")
    ids = np.tile(vocab.encode(tokens)[None, :], (num_samples, 1))
    generated = generate(
        model, params, jnp.asarray(ids), num_tokens, key, temperature=temperature, top_k=top_k
    )
    generated = np.asarray(jax.device_get(generated))
    return [separator.join(tokens + vocab.decode(row)) for row in generated]


class LanguageModelTask(Task):
    """Shared logic of the char- and word-level tasks (see the module docstring).

    Every setting is checked at construction: a bad one raises `ConfigError` naming its key
    (`task.bptt must be >= 1, got 0`). The text is read when it is first used (at start-up,
    when the trainer asks for `steps_per_epoch`): an empty, non-UTF-8 or binary file raises
    `DataError` naming the file (and byte offset), and a text too short for the batch layout
    (fewer than 2 tokens a row, or no `bptt` window in training) or a sample prompt the
    vocabulary cannot encode `ConfigError` naming the keys to change.

    Args:
        seed: run seed (the random windows and sampling; the stateful stream order is fixed).
        batch_size: rows of the training stream (each row needs at least `bptt + 1` tokens), or
            random windows per step.
        bptt: window length (truncated-BPTT steps), >= 1.
        windows: "stateful" (truncated BPTT, the carry threaded across consecutive windows of
            each row) or "random" (nanoGPT: random training windows and consecutive evaluation
            windows, each from a zero carry); see the module docstring.
        eval_batch_size: rows of the evaluation streams, >= 1; each row needs at least 2
            tokens of the valid (and test) text. With random windows: windows per evaluation
            batch.
        eval_max_windows: evaluate only the first windows (speed), >= 1; None for the whole
            text. With random windows: the first windows of the text.
        tie_weights: share the embedding with the output layer.
        init_scale: U(-init_scale, init_scale) init of the embedding and output layer
            (`LanguageModel.init_scale`), > 0; None for Flax's defaults.
        sum_loss_over_time: minimise the NLL summed over the `bptt` steps and averaged over
            the batch, as Zaremba et al.'s code and TensorFlow's PTB tutorial do, instead of the
            per-token mean. It scales the gradient by `bptt`, which their learning rate (1.0) and
            clipping norm (5) assume. Reported losses stay per token either way.
        sample_prompt: text the sample continues (at least one token; at character level
            every character must occur in the corpus); None (the default) continues the first
            `bptt` tokens of the validation text. A model trained with stateful truncated BPTT
            starts from a zero carry only once per epoch and row, so from a short prompt it
            needs a few tokens to find its footing; real context shows its quality.
        sample_temperature, sample_top_k: sampling settings for that sample: temperature
            >= 0 (0 is greedy), top-k in [0, vocabulary size] (0 keeps all).
    """

    model_class = LanguageModel
    monitor = "valid/loss"
    stateful = True
    separator = ""
    report_bpc = True

    def __init__(
        self,
        seed: int,
        batch_size: int,
        bptt: int = 100,
        windows: str = "stateful",
        eval_batch_size: int = 16,
        eval_max_windows: int | None = None,
        tie_weights: bool = False,
        init_scale: float | None = None,
        sum_loss_over_time: bool = False,
        sample_prompt: str | None = None,
        sample_temperature: float = 0.8,
        sample_top_k: int = 0,
    ):
        super().__init__(seed, batch_size)
        self.bptt = check_int("task.bptt", bptt, 1)
        self.windows = check_choice("task.windows", windows, WINDOWS)
        if self.windows == "random":
            self.stateful = False  # every window starts from zeros: no carry in the state
        self.eval_batch_size = check_int("task.eval_batch_size", eval_batch_size, 1)
        self.eval_max_windows = check_int(
            "task.eval_max_windows", eval_max_windows, 1, optional=True
        )
        self.tie_weights = check_bool("task.tie_weights", tie_weights)
        self.init_scale = check_float(
            "task.init_scale", init_scale, 0.0, low_open=True, optional=True
        )
        self.sum_loss_over_time = check_bool("task.sum_loss_over_time", sum_loss_over_time)
        if sample_prompt is not None and (
            not isinstance(sample_prompt, str)
            or not (sample_prompt.split() if self.separator else sample_prompt)
        ):
            raise ConfigError(
                f"task.sample_prompt must be a text with at least one token, or null (continue "
                f"the validation text), got {sample_prompt!r}"
            )
        self.sample_prompt = sample_prompt
        self.sample_temperature = check_float("task.sample_temperature", sample_temperature, 0.0)
        self.sample_top_k = check_int("task.sample_top_k", sample_top_k, 0)

    def load(self) -> dict[str, Any]:
        """`{"train": ids, "valid": ids, ["test": ids,] "vocab": Vocabulary}`."""
        raise NotImplementedError

    def _check_corpus(self, corpus: Mapping[str, Any]) -> None:
        """`ConfigError` unless the settings fit the corpus `load` returned."""
        path = getattr(self, "path", "the corpus")
        num_train = len(corpus["train"])
        row = num_train // self.batch_size
        if self.windows == "random":
            for split in ("train", "valid", "test"):
                if split in corpus and len(corpus[split]) <= self.bptt:
                    raise ConfigError(
                        f"the {split} text of {path} has {len(corpus[split])} tokens: too few "
                        f"for one window of task.bptt={self.bptt} (a window needs bptt + 1 "
                        "tokens) under task.windows=random; lower task.bptt"
                    )
        elif row < 2:
            raise ConfigError(
                f"the training text of {path} has {num_train} tokens: too few for "
                f"trainer.batch_size={self.batch_size} rows of at least 2 tokens; lower "
                "trainer.batch_size (or use a longer text)"
            )
        elif (row - 1) // self.bptt < 1:
            raise ConfigError(
                f"the training text gives trainer.batch_size={self.batch_size} rows of {row} "
                f"tokens: too short for task.bptt={self.bptt} (a window needs bptt + 1 tokens); "
                "lower trainer.batch_size or task.bptt"
            )
        for split in ("valid", "test"):
            if split not in corpus or self.windows == "random":
                continue
            tokens = len(corpus[split])
            if tokens // self.eval_batch_size < 2:
                raise ConfigError(
                    f"the {split} text of {path} has {tokens} tokens: too few for "
                    f"task.eval_batch_size={self.eval_batch_size} rows of at least 2 tokens; "
                    "lower task.eval_batch_size"
                )
        vocab = corpus["vocab"]
        if self.sample_top_k > len(vocab):
            raise ConfigError(
                f"task.sample_top_k must be in [0, {len(vocab)}] (the vocabulary size), got "
                f"{self.sample_top_k}"
            )
        if self.sample_prompt is not None and vocab.unk is None:
            unknown = sorted({c for c in self.sample_prompt if c not in vocab})
            if unknown:
                raise ConfigError(
                    f"task.sample_prompt has characters that do not occur in {path}: "
                    f"{''.join(unknown)!r}; change task.sample_prompt, or set it to null to "
                    "continue the validation text"
                )

    @functools.cached_property
    def corpus(self) -> dict[str, Any]:
        corpus = self.load()
        self._check_corpus(corpus)
        return corpus

    @property
    def vocab(self) -> text.Vocabulary:
        return self.corpus["vocab"]

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(s for s in ("valid", "test") if s in self.corpus)

    @functools.cached_property
    def _train_stream(self) -> np.ndarray:
        return text.lm_stream(self.corpus["train"], self.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        """Stateful: the windows of a row. Random windows: `len(train) // (batch_size * bptt)`,
        as many predicted tokens as the training text has (at least one step)."""
        if self.windows == "random":
            return max(1, len(self.corpus["train"]) // (self.batch_size * self.bptt))
        windows = text.lm_num_windows(self._train_stream, self.bptt)
        if windows < 1:
            raise ConfigError(
                f"the training text gives trainer.batch_size={self.batch_size} rows of "
                f"{self._train_stream.shape[1]} tokens: too short for task.bptt={self.bptt} "
                "(a window needs bptt + 1 tokens); lower trainer.batch_size or task.bptt"
            )
        return windows

    def model_fields(self) -> dict[str, Any]:
        return {
            "vocab_size": len(self.vocab),
            "tie_weights": self.tie_weights,
            "init_scale": self.init_scale,
        }

    def train_batch(self, step: int) -> Batch:
        if self.windows == "random":
            inputs, targets = text.random_lm_windows(
                self.corpus["train"], self.seed, step, self.batch_size, self.bptt
            )
            return {"inputs": inputs, "targets": targets}
        _, window = text.lm_epoch_and_window(step, self.steps_per_epoch)
        inputs, targets = text.lm_window(self._train_stream, window, self.bptt)
        return {"inputs": inputs, "targets": targets}

    def resets_carry(self, step: int) -> bool:
        return self.windows == "random" or step % self.steps_per_epoch == 0

    def eval_batches(self, split: str) -> Iterator[Batch]:
        if self.windows == "random":
            yield from self._eval_windows(split)
            return
        stream = text.lm_stream(self.corpus[split], self.eval_batch_size)
        count = text.lm_num_windows(stream, self.bptt, drop_last=False)
        if self.eval_max_windows is not None:
            count = min(count, self.eval_max_windows)
        for index in range(count):
            inputs, targets = text.lm_window(stream, index, self.bptt)
            yield {"inputs": inputs, "targets": targets}

    def _eval_windows(self, split: str) -> Iterator[Batch]:
        """The split's consecutive `bptt`-token windows (`[n, bptt]`, the rest under `bptt`
        tokens dropped), `eval_batch_size` a batch (the last batch may hold fewer)."""
        ids = np.asarray(self.corpus[split])
        count = (len(ids) - 1) // self.bptt  # >= 1: `_check_corpus`
        if self.eval_max_windows is not None:
            count = min(count, self.eval_max_windows)
        used = ids[: count * self.bptt + 1]
        inputs = used[:-1].reshape(count, self.bptt)
        targets = used[1:].reshape(count, self.bptt)
        for start in range(0, count, self.eval_batch_size):
            stop = start + self.eval_batch_size
            yield {"inputs": inputs[start:stop], "targets": targets[start:stop]}

    def zero_carry(self, model: nn.Module, batch_size: int) -> Carry:
        return model.zero_carry(batch_size)

    def model_args(self, batch: Batch, carry: Carry) -> tuple[Any, ...]:
        return (batch["inputs"], carry)

    def split_outputs(self, outputs: Any) -> tuple[Array, Carry]:
        """The `LanguageModel` returns `(logits, carry)` always; with random windows the carry
        is dropped (every window starts from zeros)."""
        logits, carry = outputs
        return logits, carry if self.stateful else None

    def objective(self, outputs: Array, batch: Batch) -> tuple[Sums, Array]:
        sums, loss = weighted_cross_entropy(outputs, batch["targets"])
        if self.sum_loss_over_time:
            loss = loss * batch["targets"].shape[1]
        return sums, loss

    def derived(self, means: Mapping[str, float]) -> dict[str, float]:
        loss = means["loss"]
        derived = {"perplexity": math.exp(min(loss, 700.0))}
        if self.report_bpc:
            derived["bpc"] = loss / math.log(2.0)
        return derived

    def baselines(self) -> dict[str, float]:
        return {"baseline/loss": math.log(len(self.vocab))}

    def describe(self) -> dict[str, Any]:
        sizes = {f"{k}_tokens": int(len(v)) for k, v in self.corpus.items() if k != "vocab"}
        return {"vocab_size": len(self.vocab), "steps_per_epoch": self.steps_per_epoch, **sizes}


class CharLMTask(LanguageModelTask):
    """Character-level LM on one text file, split nanoGPT-style (first 90% train, rest valid).

    Args:
        path: the text file (e.g. tinyshakespeare `input.txt`, UTF-8); config key `task.path`.
        train_fraction: fraction of characters used for training, in (0, 1).
        **kwargs: see `LanguageModelTask`.
    """

    name = "char_lm"

    def __init__(
        self, seed: int, batch_size: int, path: str, train_fraction: float = 0.9, **kwargs
    ):
        super().__init__(seed, batch_size, **kwargs)
        self.path = check_path("task.path", path)
        self.train_fraction = check_float(
            "task.train_fraction", train_fraction, 0.0, 1.0, low_open=True, high_open=True
        )

    def load(self) -> dict[str, Any]:
        train, valid, vocab = text.load_char_corpus(
            registry.ensure(self.path), self.train_fraction, "task.path"
        )
        return {"train": train, "valid": valid, "vocab": vocab}


class WordLMTask(LanguageModelTask):
    """Word-level LM on PTB-format files (one sentence a line, `<eos>` appended; Mikolov).

    Args:
        path: folder with `ptb.train.txt`, `ptb.valid.txt`, `ptb.test.txt`; config key
            `task.path`.
        **kwargs: see `LanguageModelTask`.
    """

    name = "word_lm"
    separator = " "
    report_bpc = False

    def __init__(self, seed: int, batch_size: int, path: str, **kwargs):
        super().__init__(seed, batch_size, **kwargs)
        self.path = check_path("task.path", path)

    def load(self) -> dict[str, Any]:
        return text.load_word_corpus(registry.ensure(self.path), config_key="task.path")


def save_vocab(task: LanguageModelTask, run_dir: str | Path) -> None:
    """Writes the task's vocabulary to `run_dir/vocab.json` (what `rnnlab-sample` reads)."""
    task.vocab.save(Path(run_dir) / VOCAB_FILE)


def sample_text(
    task: LanguageModelTask, model: nn.Module, params: Params, key: PRNGKey, num_tokens: int
) -> str:
    """A text sample for TensorBoard: the prompt, a marker line, then `num_tokens` sampled
    tokens, with the task's sample settings (`task.sample_prompt`, `task.sample_temperature`,
    `task.sample_top_k`; by default the prompt is the first `bptt` tokens of the validation
    text)."""
    if task.sample_prompt is None:
        tokens = task.vocab.decode(task.corpus["valid"][: task.bptt])
    else:
        tokens = task.sample_prompt.split() if task.separator else list(task.sample_prompt)
    prompt = task.separator.join(tokens)
    text = sample(
        model,
        params,
        task.vocab,
        prompt,
        num_tokens,
        key,
        task.sample_temperature,
        task.sample_top_k,
        separator=task.separator,
    )[0]
    return f"{prompt}\n[... sampled ...]\n{text[len(prompt) :].lstrip(' ')}"


class TextLMTask(LanguageModelTask):
    """Character- or word-level LM on any text file, or on every file of a folder.

    A folder's files are read in sorted order (recursively; hidden names skipped) and
    concatenated, each ending with a newline (`text.read_text_tree`). The tokens are split in
    order: the first `train_fraction` train, the next `valid_fraction` valid, the rest test (no
    test split when the fractions add up to 1). See `text.load_text_corpus`.

    Args:
        path: a UTF-8 text file or a folder of them; config key `task.path`.
        level: "char" (characters; bits per character reported) or "word" (whitespace-
            separated words, `<eos>` after every line, as PTB; perplexity reported).
        train_fraction, valid_fraction: split fractions, each in (0, 1), adding up to at most 1.
        max_vocab: vocabulary cap, `<unk>` included (the most frequent train tokens), >= 2; None
            for every token (character level: every character of the text; word level: every
            word of the train split plus `<unk>`).
        **kwargs: see `LanguageModelTask`.
    """

    name = "text_lm"

    def __init__(
        self,
        seed: int,
        batch_size: int,
        path: str,
        level: str = "char",
        train_fraction: float = 0.9,
        valid_fraction: float = 0.05,
        max_vocab: int | None = None,
        **kwargs: Any,
    ):
        self.level = check_choice("task.level", level, text.TEXT_LEVELS)
        self.separator = " " if self.level == "word" else ""
        self.report_bpc = self.level == "char"
        super().__init__(seed, batch_size, **kwargs)
        self.path = check_path("task.path", path)
        fractions = {"train_fraction": train_fraction, "valid_fraction": valid_fraction}
        for key, value in fractions.items():
            check_float(f"task.{key}", value, 0.0, 1.0, low_open=True, high_open=True)
        if train_fraction + valid_fraction > 1.0 + 1e-9:
            raise ConfigError(
                f"task.train_fraction + task.valid_fraction = {train_fraction} + {valid_fraction} "
                "is more than 1: lower one of them (the test split gets what they leave)"
            )
        self.train_fraction, self.valid_fraction = float(train_fraction), float(valid_fraction)
        self.max_vocab = check_int("task.max_vocab", max_vocab, 2, optional=True)

    def load(self) -> dict[str, Any]:
        return text.load_text_corpus(
            registry.ensure(self.path),
            self.level,
            self.train_fraction,
            self.valid_fraction,
            self.max_vocab,
            config_key="task.path",
        )
