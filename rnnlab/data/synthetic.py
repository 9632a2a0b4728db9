"""Synthetic tasks, generated on the fly: long-range memory (adding, copy), state tracking
with per-sequence lengths (parity, modular arithmetic) and recall of what only the content marks
(selective copying, multi-query associative recall).

Each batch is a pure function of `(seed, step)` (see `batching.step_rng`), so there is no
dataset to store and a resumed run sees the same batches. `fixed_eval_batches` draws a held-out
set from a separate random stream.

References:
    Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural Computation 1997 (experiments 4
    and 2). Le, Jaitly & Hinton, "A Simple Way to Initialize Recurrent Networks of Rectified
    Linear Units", 2015. Arjovsky, Shah & Bengio, "Unitary Evolution Recurrent Neural Networks",
    ICML 2016. Delétang et al., "Neural Networks and the Chomsky Hierarchy", ICLR 2023 (parity
    check, modular arithmetic). Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective
    State Spaces", 2023 (selective copying). Arora, Eyuboglu et al., "Zoology: Measuring and
    Improving Recall in Efficient Language Models", ICLR 2024 (arXiv 2023; MQAR).
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


# ---------------------------------------------------------------- state tracking
#
# Delétang et al., "Neural Networks and the Chomsky Hierarchy", ICLR 2023: regular tasks whose
# answer needs a finite state carried over the whole sequence. Each sequence has its own length
# (`lengths`); token id `PAD = 0` fills the steps after it, so a batch is `[b, max_length]`
# whatever lengths it holds and a split compiles once.

PAD = 0
"""Token id of the padding after each sequence's last valid step."""
LENGTH_TEST_STREAM = 2
"""Random stream of the fixed length-generalisation (`test`) batches, apart from train (0) and
valid (`EVAL_STREAM`)."""
MODULAR_OPERATORS = "+-*"
"""The operators of the modular arithmetic task, in token-id order."""


def parity_vocab_size() -> int:
    """Vocabulary of the parity task: `PAD`, bit 0 (id 1) and bit 1 (id 2)."""
    return 3


def modular_vocab_size(modulus: int) -> int:
    """Vocabulary of the modular arithmetic task: `PAD`, the digits `0..modulus-1` (ids
    `1..modulus`) and the operators `+ - *` (ids `modulus+1..modulus+3`), whichever are used."""
    return modulus + 1 + len(MODULAR_OPERATORS)


def _check_lengths(min_length: int, max_length: int) -> None:
    if min_length < 1:
        raise ConfigError(f"task.min_length must be >= 1, got {min_length}")
    if max_length < min_length:
        raise ConfigError(
            f"task.max_length must be >= task.min_length={min_length}, got {max_length}"
        )


def parity_batch(
    seed: int,
    step: int,
    batch_size: int,
    min_length: int,
    max_length: int,
    stream: int = TRAIN_STREAM,
) -> dict[str, np.ndarray]:
    """One batch of the parity task (Delétang et al. 2023's "parity check").

    Each sequence has a length `n ~ U{min_length..max_length}` and bits `x_1..x_n ~ U{0, 1}`
    (token id `x_i + 1`, `PAD` after step `n`); its label is `(x_1 + ... + x_n) mod 2`. Every
    label is equally likely, so guessing scores accuracy 1/2 and cross-entropy `log 2`.

    Args:
        seed: run seed.
        step: batch index; the batch is a pure function of `(seed, step, stream)`.
        batch_size: `b`.
        min_length, max_length: the range of lengths, `1 <= min_length <= max_length`.
        stream: random stream (`EVAL_STREAM`, `LENGTH_TEST_STREAM` for held-out batches).

    Returns:
        `inputs` `[b, max_length]` int32 token ids, `lengths` `[b]` int32 and `labels` `[b]`
        int32 in {0, 1}.
    """
    _check_lengths(min_length, max_length)
    rng = step_rng(seed, step, stream)
    lengths = rng.integers(min_length, max_length + 1, size=batch_size, dtype=np.int32)
    valid = np.arange(max_length) < lengths[:, None]
    bits = rng.integers(0, 2, size=(batch_size, max_length), dtype=np.int32) * valid
    return {
        "inputs": np.where(valid, bits + 1, PAD).astype(np.int32),
        "lengths": lengths,
        "labels": (bits.sum(axis=1) % 2).astype(np.int32),
    }


def odd_length_range(min_length: int, max_length: int) -> tuple[int, int] | None:
    """The numbers of operands `(low, high)` of the expressions (always of odd length `2k - 1`)
    whose length lies in `[min_length, max_length]`; None when the range holds no odd length."""
    low, high = (min_length + 2) // 2, (max_length + 1) // 2
    return (low, high) if low <= high else None


def modular_batch(
    seed: int,
    step: int,
    batch_size: int,
    min_length: int,
    max_length: int,
    modulus: int = 5,
    operators: str = MODULAR_OPERATORS,
    stream: int = TRAIN_STREAM,
) -> dict[str, np.ndarray]:
    """One batch of modular arithmetic without brackets (Delétang et al. 2023, "modular
    arithmetic (simple)").

    An expression `d_1 o_1 d_2 o_2 ... d_k` alternates digits `d_i ~ U{0..modulus-1}` and
    operators `o_i ~ U(operators)`, so its length `2k - 1` is odd; `k` is uniform over the
    counts whose length lies in `[min_length, max_length]`. Its label is the value with the
    usual precedence (`*` before `+` and `-`, left to right) mod `modulus`, e.g. mod 5:
    `1 + 2 * 3 = 2`, `1 - 1 - 1 = 4`. A left-to-right reading keeps two numbers mod `modulus`,
    the sum of the finished terms and the signed product of the current one, so the task is
    regular (finite state). Token ids: `PAD`, digit `d` -> `d + 1`, operator `o` ->
    `modulus + 1 + MODULAR_OPERATORS.index(o)`.

    Args:
        seed: run seed.
        step: batch index; the batch is a pure function of `(seed, step, stream)`.
        batch_size: `b`.
        min_length, max_length: the range of lengths (tokens); it must hold an odd length.
        modulus: `m >= 2`, the number of classes.
        operators: a non-empty subset of `MODULAR_OPERATORS`, e.g. "+-" for sums in `Z_m`.
        stream: random stream (`EVAL_STREAM`, `LENGTH_TEST_STREAM` for held-out batches).

    Returns:
        `inputs` `[b, max_length]` int32 token ids, `lengths` `[b]` int32 (odd) and `labels`
        `[b]` int32 in `[0, modulus)`.
    """
    _check_lengths(min_length, max_length)
    counts = odd_length_range(min_length, max_length)
    if counts is None:
        raise ConfigError(
            f"task.min_length={min_length} to task.max_length={max_length} holds no odd length; "
            "an expression (digit, operator, ..., digit) has an odd length"
        )
    if modulus < 2:
        raise ConfigError(f"task.modulus must be >= 2, got {modulus}")
    if not operators or not set(operators) <= set(MODULAR_OPERATORS):
        raise ConfigError(
            f"task.operators must be a non-empty subset of {MODULAR_OPERATORS!r}, got {operators!r}"
        )
    rng = step_rng(seed, step, stream)
    terms = rng.integers(counts[0], counts[1] + 1, size=batch_size, dtype=np.int32)
    digits = rng.integers(0, modulus, size=(batch_size, counts[1]), dtype=np.int64)
    codes = np.array([MODULAR_OPERATORS.index(o) for o in operators])
    ops = codes[rng.integers(0, len(codes), size=(batch_size, counts[1] - 1))]

    finished, current = np.zeros(batch_size, np.int64), digits[:, 0]
    for i in range(1, counts[1]):
        d, op, active = digits[:, i], ops[:, i - 1], i < terms
        times = op == MODULAR_OPERATORS.index("*")
        sign = np.where(op == MODULAR_OPERATORS.index("-"), -1, 1)
        finished = np.where(active & ~times, (finished + current) % modulus, finished)
        current = np.where(active, np.where(times, current * d, sign * d) % modulus, current)

    lengths = 2 * terms - 1
    tokens = np.zeros((batch_size, 2 * counts[1] - 1), np.int32)
    tokens[:, 0::2] = digits + 1
    tokens[:, 1::2] = modulus + 1 + ops
    inputs = np.full((batch_size, max_length), PAD, np.int32)
    inputs[:, : tokens.shape[1]] = tokens
    inputs[np.arange(max_length) >= lengths[:, None]] = PAD
    return {
        "inputs": inputs,
        "lengths": lengths.astype(np.int32),
        "labels": ((finished + current) % modulus).astype(np.int32),
    }


# ---------------------------------------------------------------- recall
#
# Tasks that ask which recurrence can choose what to store. In both, the steps to remember sit
# at positions that change from sequence to sequence and are told apart only by their content,
# so a time-invariant (linear, input-independent) recurrence cannot solve them; the answer is
# scored at the recall steps only (`weights`). One `[b, t]` shape per split.


def selective_copy_batch(
    seed: int,
    step: int,
    batch_size: int,
    length: int,
    num_symbols: int = 8,
    copy_length: int = 4,
    stream: int = TRAIN_STREAM,
) -> dict[str, np.ndarray]:
    """One batch of selective copying (Gu & Dao 2023, "Mamba", Section 3.1 and Figure 2).

    The copy task with the data spread out: `copy_length` symbols `s_1..s_M ~ U{1..num_symbols}`
    lie at `M` distinct positions drawn uniformly from the first `length` steps (in order, the
    rest blank), then `M` markers ask for them. With `T = length + copy_length` and the copy
    task's vocabulary `{0: blank, 1..num_symbols: symbols, num_symbols + 1: marker}`:

    - inputs: blanks with `s_i` at the `i`-th sorted position, then `M` markers;
    - targets: blanks, except the last `M` steps, which are `s_1..s_M`;
    - weights: 1 on the last `M` steps, else 0.

    This is the construction of the S4 repository's `torch_copying_data(L, M, A, variable=True)`
    used by Gu & Dao (`L + M = length`, `A = num_symbols + 2`). A memoryless model scores
    `log(num_symbols)` nats and accuracy `1 / num_symbols` per scored step.

    Args:
        seed: run seed.
        step: batch index; the batch is a pure function of `(seed, step, stream)`.
        batch_size: `b`.
        length: steps holding the data among blanks, `>= copy_length`.
        num_symbols: distinct data symbols, >= 1.
        copy_length: symbols to copy, `M >= 1`.
        stream: random stream (`EVAL_STREAM`, `LENGTH_TEST_STREAM` for held-out batches).

    Returns:
        `inputs` `[b, T]` int32, `targets` `[b, T]` int32, `weights` `[b, T]` float32.
    """
    for key, value in (("num_symbols", num_symbols), ("copy_length", copy_length)):
        if value < 1:
            raise ConfigError(f"task.{key} must be >= 1 for selective copying, got {value}")
    if length < copy_length:
        raise ConfigError(
            f"task.length must be >= task.copy_length={copy_length} (the data lie among the "
            f"first task.length steps), got {length}"
        )
    rng = step_rng(seed, step, stream)
    symbols = rng.integers(1, num_symbols + 1, size=(batch_size, copy_length), dtype=np.int32)
    # A uniform random subset of `copy_length` positions per row, in increasing order.
    positions = np.sort(np.argsort(rng.random((batch_size, length)), axis=1)[:, :copy_length])
    total = length + copy_length
    inputs = np.zeros((batch_size, total), dtype=np.int32)
    np.put_along_axis(inputs, positions, symbols, axis=1)
    inputs[:, length:] = num_symbols + 1
    targets = np.zeros((batch_size, total), dtype=np.int32)
    targets[:, length:] = symbols
    weights = np.zeros((batch_size, total), dtype=np.float32)
    weights[:, length:] = 1.0
    return {"inputs": inputs, "targets": targets, "weights": weights}


def mqar_vocab_size(key_vocab: int, value_vocab: int) -> int:
    """Vocabulary of MQAR: blank (id 0), the keys (ids `1..key_vocab`) and the values (ids
    `key_vocab + 1..key_vocab + value_vocab`)."""
    return 1 + key_vocab + value_vocab


def mqar_min_length(num_pairs: int, num_queries: int) -> int:
    """The shortest MQAR sequence: `2 * num_pairs` context steps and a query region with
    `num_queries` even slots."""
    return 2 * num_pairs + 2 * num_queries


def mqar_batch(
    seed: int,
    step: int,
    batch_size: int,
    length: int,
    num_pairs: int,
    key_vocab: int,
    value_vocab: int,
    num_queries: int | None = None,
    power_a: float = 0.01,
    random_non_queries: bool = True,
    stream: int = TRAIN_STREAM,
) -> dict[str, np.ndarray]:
    """One batch of multi-query associative recall (Arora et al. 2023, "Zoology", Section 3).

    As Zoology's `multiquery_ar`, with `n = num_pairs`, `q = num_queries` and `T = length`:

    - context, steps `0..2n-1`: `k_1 v_1 k_2 v_2 ... k_n v_n`, `n` distinct keys and `n`
      distinct values, each drawn without replacement from its vocabulary;
    - query region, steps `2n..T-1`: `q` of the pairs (all of them when `q = n`, Zoology's
      setting), in context order, are asked at even slots `2n + 2g`, where the slots `g` are
      drawn without replacement from `[0, (T - 2n) // 2)` with probability `∝ (g + 1) ** (a -
      1)` (`a = power_a`: 0.01, Zoology's default, puts most queries near the context, 1 is
      uniform). Every other step is a token drawn uniformly from the whole vocabulary
      (`random_non_queries`, Zoology's default), or blank;
    - targets: at a query of `k_i`, its value `v_i`; weights 1 there, 0 elsewhere.

    Unlike Zoology, the vocabularies are set apart (Zoology splits one in halves) and each
    batch is drawn from `(seed, step)`; the weighted draw of slots without replacement is done
    for the whole batch at once by the Gumbel-top-k trick, which gives the same distribution as
    NumPy's successive `choice(..., replace=False, p=p)` (Kool, van Hoof & Welling, "Stochastic
    Beams and Where to Find Them", ICML 2019). A model that does not bind keys to values scores
    `log(value_vocab)` nats and accuracy `1 / value_vocab` per query.

    Args:
        seed: run seed.
        step: batch index; the batch is a pure function of `(seed, step, stream)`.
        batch_size: `b`.
        length: `T >= mqar_min_length(n, q)`.
        num_pairs: key-value pairs per sequence, `1 <= n <= min(key_vocab, value_vocab)`.
        key_vocab, value_vocab: numbers of distinct keys and values.
        num_queries: `1 <= q <= n`; None: `n`.
        power_a: the power law's `a > 0`.
        random_non_queries: fill the non-query steps of the query region with random tokens.
        stream: random stream (`EVAL_STREAM`, `LENGTH_TEST_STREAM` for held-out batches).

    Returns:
        `inputs` `[b, T]` int32, `targets` `[b, T]` int32 (value token ids at the queries, blank
        elsewhere), `weights` `[b, T]` float32.
    """
    num_queries = num_pairs if num_queries is None else num_queries
    if not 1 <= num_pairs <= min(key_vocab, value_vocab):
        raise ConfigError(
            f"task.num_pairs must be in [1, min(task.key_vocab, task.value_vocab)] = [1, "
            f"{min(key_vocab, value_vocab)}] (keys and values are distinct), got {num_pairs}"
        )
    if not 1 <= num_queries <= num_pairs:
        raise ConfigError(f"task.num_queries must be in [1, {num_pairs}], got {num_queries}")
    if length < mqar_min_length(num_pairs, num_queries):
        raise ConfigError(
            f"task.length must be >= {mqar_min_length(num_pairs, num_queries)} for "
            f"{num_pairs} pairs and {num_queries} queries, got {length}"
        )
    if not power_a > 0:
        raise ConfigError(f"task.power_a must be > 0, got {power_a}")
    rng = step_rng(seed, step, stream)
    rows = np.arange(batch_size)[:, None]
    keys = np.argsort(rng.random((batch_size, key_vocab)), axis=1)[:, :num_pairs] + 1
    values = np.argsort(rng.random((batch_size, value_vocab)), axis=1)[:, :num_pairs]
    values = values + key_vocab + 1
    context = 2 * num_pairs
    slots = (length - context) // 2
    scores = (power_a - 1.0) * np.log(np.arange(1, slots + 1)) + rng.gumbel(
        size=(batch_size, slots)
    )
    gaps = np.argsort(-scores, axis=1)[:, :num_queries]  # in the order drawn
    asked = np.sort(np.argsort(rng.random((batch_size, num_pairs)), axis=1)[:, :num_queries])
    where = context + 2 * gaps

    vocab = mqar_vocab_size(key_vocab, value_vocab)
    inputs = np.zeros((batch_size, length), dtype=np.int32)
    if random_non_queries:
        noise = rng.integers(0, vocab, size=(batch_size, length - context), dtype=np.int32)
        inputs[:, context:] = noise
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    inputs[rows, where] = keys[rows, asked]
    targets = np.zeros((batch_size, length), dtype=np.int32)
    targets[rows, where] = values[rows, asked]
    weights = np.zeros((batch_size, length), dtype=np.float32)
    weights[rows, where] = 1.0
    return {"inputs": inputs, "targets": targets, "weights": weights}
