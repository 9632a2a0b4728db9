"""Warm starts: a new run's parameters taken from another run's checkpoint (`trainer.init_from`).

Pretraining then fine-tuning (Dai & Le 2015, "Semi-supervised Sequence Learning": a language
model's embedding and LSTM start a sentence classifier) needs the parameters two models share by
name. Every leaf of the new model whose path (`embed/embedding`, `stack/layer_0/...`) is in the
source run and selected by `trainer.init_params` is copied; every other leaf keeps its fresh
initialisation (a classifier's head, or what `init_params` leaves out). A leaf whose path matches
but whose shape differs is an error, never a silent partial copy. The forward direction of a
bidirectional layer (`stack/layer_0/forward/...`) reads left to right as a language model's
layer does, so it takes the source's unidirectional layer of the same index
(`stack/layer_0/...`) when the source has no `forward` of its own; the backward direction keeps
its initialisation.

An embedding table is copied by token, not by row: when both runs have a vocabulary (language
models and text classifiers do), row `i` of the new table takes the source row of the token the
new vocabulary has at `i`, and tokens the source never saw keep their fresh rows. So a language
model with its own vocabulary (with `<eos>`, its own order and size) starts a classifier whose
vocabulary is ordered and cut differently.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from rnnlab.data.text import Vocabulary
from rnnlab.errors import ConfigError, UserError
from rnnlab.typing import Params

log = logging.getLogger(__name__)

EMBEDDING_LEAF = "embedding"
"""Name of an `nn.Embed` table's leaf (`[vocab, embed_dim]`), remapped by token."""


@dataclasses.dataclass(frozen=True)
class Source:
    """What a warm start reads from the source run.

    Attributes:
        run_dir: the source run directory.
        step: the checkpoint's step.
        params: its parameters.
        vocab: its task's vocabulary, or None (a task without tokens).
    """

    run_dir: str
    step: int
    params: Params
    vocab: Vocabulary | None


@dataclasses.dataclass(frozen=True)
class Transfer:
    """What `transfer` did, leaf paths joined with "/".

    Attributes:
        copied: leaves taken from the source (embedding tables included).
        fresh: leaves of the new model left at their initialisation.
        tokens_matched: per remapped embedding table, `(rows found in the source, rows)`.
    """

    copied: tuple[str, ...]
    fresh: tuple[str, ...]
    tokens_matched: Mapping[str, tuple[int, int]]

    def summary(self) -> str:
        """One line for the run log."""
        tables = "".join(
            f"; {path}: {found} of {rows} tokens found in the source vocabulary"
            for path, (found, rows) in self.tokens_matched.items()
        )
        fresh = ", ".join(self.fresh) if self.fresh else "none"
        return f"{len(self.copied)} arrays copied{tables}; kept fresh: {fresh}"


def _flat(params: Params) -> dict[str, Any]:
    return traverse_util.flatten_dict(params, sep="/")


def _source_path(path: str, flat_source: Mapping[str, Any]) -> str | None:
    """The source leaf that `path` takes: the same path, or for a forward direction the
    unidirectional layer's (see the module docstring); None when the source has neither."""
    if path in flat_source:
        return path
    unidirectional = path.replace("/forward/", "/", 1)
    return unidirectional if unidirectional != path and unidirectional in flat_source else None


def _remap_rows(
    path: str, target: Any, source: Any, target_vocab: Vocabulary, source_vocab: Vocabulary
) -> tuple[Any, int]:
    """The target table `[v, d]` with the rows of the tokens the source has taken from it."""
    if target.shape[1:] != source.shape[1:]:
        raise ConfigError(
            f"trainer.init_from: {path} is {tuple(target.shape)} here and "
            f"{tuple(source.shape)} in the source run: the embedding widths differ; set "
            "model.embed_dim to the source's, or leave the table out with trainer.init_params"
        )
    index = {token: i for i, token in enumerate(source_vocab.tokens)}
    rows = [(i, index[token]) for i, token in enumerate(target_vocab.tokens) if token in index]
    table = np.array(target)
    if rows:
        new_rows, source_rows = (np.asarray(side) for side in zip(*rows, strict=True))
        table[new_rows] = np.asarray(source)[source_rows]
    return jnp.asarray(table, dtype=target.dtype), len(rows)


def transfer(
    target: Params,
    source: Params,
    include: Sequence[str] | None = None,
    target_vocab: Vocabulary | None = None,
    source_vocab: Vocabulary | None = None,
) -> tuple[Params, Transfer]:
    """`target` with the leaves the source shares copied in (see the module docstring).

    Args:
        target: the new model's freshly initialised params.
        source: the source run's params.
        include: glob patterns of leaf paths to take (`["embed/*", "stack/*"]`); None for every
            leaf the source has.
        target_vocab, source_vocab: the two tasks' vocabularies; with both, `embedding` leaves
            are remapped by token.

    Returns:
        `(params, Transfer)`.

    Raises:
        ConfigError: a selected leaf's shape differs from the source's, a pattern selects no
            leaf, or nothing at all is copied (naming the paths on both sides).
    """
    flat_target, flat_source = _flat(target), _flat(source)
    patterns = list(include) if include is not None else ["*"]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(path, pattern) for path in flat_target):
            raise ConfigError(
                f"trainer.init_params: {pattern!r} selects no parameter of this model; its "
                f"parameters are {', '.join(sorted(flat_target))}"
            )
    out, copied, matched = dict(flat_target), [], {}
    for path, value in flat_target.items():
        source_path = _source_path(path, flat_source)
        if source_path is None or not any(fnmatch.fnmatchcase(path, p) for p in patterns):
            continue
        theirs = flat_source[source_path]
        remap = path.rsplit("/", 1)[-1] == EMBEDDING_LEAF and None not in (
            target_vocab,
            source_vocab,
        )
        if remap and value.shape[0] == len(target_vocab) and theirs.shape[0] == len(source_vocab):
            out[path], found = _remap_rows(path, value, theirs, target_vocab, source_vocab)
            matched[path] = (found, value.shape[0])
        elif value.shape != theirs.shape:
            raise ConfigError(
                f"trainer.init_from: {path} is {tuple(value.shape)} here and "
                f"{tuple(theirs.shape)} in the source run ({source_path}); make the model's "
                "sizes match the source's, or leave this parameter out with trainer.init_params"
            )
        else:
            out[path] = jnp.asarray(theirs, dtype=value.dtype)
        copied.append(path)
    if not copied:
        raise ConfigError(
            "trainer.init_from: no parameter of this model is in the source run (this model: "
            f"{', '.join(sorted(flat_target))}; the source: {', '.join(sorted(flat_source))}); "
            "the two need the same layer names (e.g. both unidirectional stacks)"
        )
    fresh = tuple(path for path in flat_target if path not in copied)
    report = Transfer(tuple(copied), fresh, matched)
    return traverse_util.unflatten_dict(out, sep="/"), report


def load_source(run_dir: str | os.PathLike[str], checkpoint: str | int = "best") -> Source:
    """The params (and vocabulary) of a run directory's checkpoint, rebuilt from its saved config.

    Raises:
        RunNotFoundError, ConfigError, RunDirError: as `rnnlab.cli.restore_run_dir`, the
            message prefixed with `trainer.init_from=<run_dir>`.
    """
    from rnnlab.cli import restore_run_dir  # the front end rebuilds a run from its config

    try:
        loaded = restore_run_dir(run_dir, checkpoint)
    except UserError as err:  # the same error, naming the key that gave the directory
        raise type(err)(f"trainer.init_from={run_dir}: {err}") from None
    return Source(str(run_dir), loaded.step, loaded.params, loaded.task.vocab)


def warm_start(
    params: Params,
    vocab: Vocabulary | None,
    source: Source,
    include: Sequence[str] | None = None,
) -> Params:
    """`params` with what the `source` run shares copied in; logs what was taken."""
    params, report = transfer(params, source.params, include, vocab, source.vocab)
    log.info(
        "Initialised from %s (checkpoint step %d): %s",
        source.run_dir,
        source.step,
        report.summary(),
    )
    return params
