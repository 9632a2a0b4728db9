"""Synthetic long-range memory tasks, generated on the fly.

Each batch is a pure function of `(seed, step)` (see `batching.step_rng`), so there is no
dataset to store and a resumed run sees the same batches. `fixed_eval_batches` draws a held-out
set from a separate random stream.

References:
    Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural Computation 1997 (experiments 4
    and 2). Le, Jaitly & Hinton, "A Simple Way to Initialize Recurrent Networks of Rectified
    Linear Units", 2015. Arjovsky, Shah & Bengio, "Unitary Evolution Recurrent Neural Networks",
    ICML 2016.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from rnnlab.data.batching import EVAL_STREAM, TRAIN_STREAM, step_rng
from rnnlab.errors import ConfigError

ADDING_BASELINE_MSE = 1.0 / 6.0
"""MSE of always predicting 1.0 on the adding task: Var(U1 + U2) = 2 / 12 = 1/6 ≈ 0.167."""


def adding_batch(
    seed: int, step: int, batch_size: int, length: int, stream: int = TRAIN_STREAM
) -> dict[str, np.ndarray]:
    """One batch of the adding problem.

    Channel 0 holds values `u_t ~ U[0, 1)`; channel 1 is a marker that is 1 at exactly two
    positions, one drawn uniformly from the first half `[0, length // 2)` and one from the second
    half `[length // 2, length)` (the variant of Le et al. 2015 and Arjovsky et al. 2016; the
    1997 original places the markers differently). The target is the sum of the two marked values.
    Predicting the constant 1.0 gives MSE `ADDING_BASELINE_MSE = 1/6 ≈ 0.167`; a model "solves"
    the task well below that.

    Args:
        seed: run seed.
        step: batch index; the batch is a pure function of `(seed, step, stream)`.
        batch_size: `b`.
        length: sequence length `t` (>= 2).
        stream: random stream (`EVAL_STREAM` for held-out batches).

    Returns:
        `inputs` `[b, t, 2]` float32 and `targets` `[b, 1]` float32.
    """
    if length < 2:
        raise ConfigError(f"task.length must be >= 2 for the adding task, got {length}")
    rng = step_rng(seed, step, stream)
    values = rng.random((batch_size, length), dtype=np.float32)
    half = length // 2
    first = rng.integers(0, half, size=batch_size)
    second = rng.integers(half, length, size=batch_size)
    rows = np.arange(batch_size)
    markers = np.zeros((batch_size, length), dtype=np.float32)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = values[rows, first] + values[rows, second]
    return {
        "inputs": np.stack([values, markers], axis=-1),
        "targets": targets[:, None].astype(np.float32),
    }


def copy_batch(
    seed: int,
    step: int,
    batch_size: int,
    lag: int,
    num_symbols: int = 8,
    copy_length: int = 10,
    stream: int = TRAIN_STREAM,
) -> dict[str, np.ndarray]:
    """One batch of the copy (memory) task of Arjovsky et al. 2016.

    With `T = lag + 2 * copy_length` and vocabulary `{0: blank, 1..num_symbols: symbols,
    num_symbols + 1: delimiter}` (size `num_symbols + 2`):

    - inputs: `copy_length` random symbols, then blanks, with the delimiter at position
      `copy_length + lag - 1`, then `copy_length` blanks;
    - targets: blanks, except the last `copy_length` steps, which repeat the input symbols;
    - weights: 1 on the last `copy_length` steps (the positions that test memory), else 0.

    Arjovsky et al. average the cross-entropy over all `T` positions; see
    `copy_baseline_cross_entropy` for the memoryless baseline.

    Args:
        seed: run seed.
        step: batch index; the batch is a pure function of `(seed, step, stream)`.
        batch_size: `b`.
        lag: blanks between the symbols and the recall phase, counting the delimiter (>= 1).
        num_symbols: number of distinct data symbols.
        copy_length: number of symbols to remember.
        stream: random stream (`EVAL_STREAM` for held-out batches).

    Returns:
        `inputs` `[b, T]` int32, `targets` `[b, T]` int32, `weights` `[b, T]` float32.
    """
    for key, value in (("lag", lag), ("copy_length", copy_length), ("num_symbols", num_symbols)):
        if value < 1:
            raise ConfigError(f"task.{key} must be >= 1 for the copy task, got {value}")
    total = lag + 2 * copy_length
    rng = step_rng(seed, step, stream)
    symbols = rng.integers(1, num_symbols + 1, size=(batch_size, copy_length), dtype=np.int32)
    inputs = np.zeros((batch_size, total), dtype=np.int32)
    inputs[:, :copy_length] = symbols
    inputs[:, copy_length + lag - 1] = num_symbols + 1
    targets = np.zeros((batch_size, total), dtype=np.int32)
    targets[:, -copy_length:] = symbols
    weights = np.zeros((batch_size, total), dtype=np.float32)
    weights[:, -copy_length:] = 1.0
    return {"inputs": inputs, "targets": targets, "weights": weights}


def copy_vocab_size(num_symbols: int = 8) -> int:
    """Vocabulary size of the copy task: blank, `num_symbols` symbols and the delimiter."""
    return num_symbols + 2


def copy_baseline_cross_entropy(
    num_symbols: int, copy_length: int, lag: int, scored_only: bool = False
) -> float:
    """Cross-entropy (nats) of the memoryless strategy on the copy task.

    The strategy predicts blank until the recall phase, then a uniform guess over the symbols.
    Averaged over all `T = lag + 2 * copy_length` positions (Arjovsky et al. 2016) this is
    `copy_length * log(num_symbols) / T`; averaged over the scored (last `copy_length`)
    positions only, i.e. with `weights`, it is `log(num_symbols)`.

    Args:
        num_symbols: number of distinct data symbols.
        copy_length: number of symbols to remember.
        lag: as in `copy_batch`.
        scored_only: return the per-scored-position baseline `log(num_symbols)`.
    """
    if scored_only:
        return math.log(num_symbols)
    return copy_length * math.log(num_symbols) / (lag + 2 * copy_length)


def fixed_eval_batches(
    fn: Callable[..., Any], seed: int, num_batches: int, **kwargs: Any
) -> list[Any]:
    """A fixed held-out set: `fn(seed, i, stream=EVAL_STREAM, **kwargs)` for `i < num_batches`.

    The evaluation stream is disjoint from the training stream for every seed and step, so
    evaluation batches never repeat training batches.

    Args:
        fn: a batch function `fn(seed, step, ..., stream=...)` such as `adding_batch`.
        seed: run seed.
        num_batches: number of batches.
        **kwargs: further arguments of `fn` (`batch_size`, `length`, ...).
    """
    return [fn(seed, i, stream=EVAL_STREAM, **kwargs) for i in range(num_batches)]
