"""Padding and resumable batch order.

Every batch is a pure function of `(seed, step)`: a run killed at step `s` and restarted from a
checkpoint that stores only `s` sees exactly the batches it would have seen. Shuffled epochs use
`np.random.default_rng([seed, epoch]).permutation(n)` and batch `k` of an epoch is the `k`-th
slice of that permutation, so no iterator state needs to be saved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TRAIN_STREAM = 0
"""Random stream of training batches (`step_rng(seed, step)`)."""
EVAL_STREAM = 1
"""Random stream of fixed evaluation batches: disjoint from the training stream for every seed."""


def step_rng(seed: int, step: int, stream: int = TRAIN_STREAM) -> np.random.Generator:
    """The generator for batch `step` of random stream `stream`.

    `SeedSequence` ignores trailing zero words, so `stream=0` equals `default_rng([seed, step])`;
    any other stream has a non-zero last word and hence a different entropy for every
    `(seed, step)`.

    Args:
        seed: non-negative run seed.
        step: non-negative step (batch index).
        stream: `TRAIN_STREAM` or `EVAL_STREAM` (any non-negative int).
    """
    return np.random.default_rng([seed, step, stream])


def pad_sequences(
    seqs: Sequence[Sequence[int] | np.ndarray],
    pad_value: int = 0,
    max_len: int | None = None,
    dtype: np.dtype | type = np.int32,
) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads variable-length sequences into one array.

    Args:
        seqs: `n` sequences of token ids.
        pad_value: value written after each sequence's end.
        max_len: if given, the time size `t`; longer sequences keep their first `max_len` items.
            Otherwise `t` is the longest length.
        dtype: dtype of the padded array.

    Returns:
        `(padded, lengths)`: `padded` `[n, t]` and `lengths` `[n]` int32 (after truncation).
    """
    lengths = np.array([len(s) for s in seqs], dtype=np.int32)
    if max_len is not None:
        if max_len < 0:
            raise ValueError(f"max_len must be >= 0, got {max_len}")
        lengths = np.minimum(lengths, max_len)
        t = max_len
    else:
        t = int(lengths.max()) if len(seqs) else 0
    padded = np.full((len(seqs), t), pad_value, dtype=dtype)
    for row, (seq, length) in enumerate(zip(seqs, lengths, strict=True)):
        padded[row, :length] = np.asarray(seq[:length])
    return padded, lengths


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled order of `n` examples in epoch `epoch`.

    Returns:
        `[n]` int64 permutation of `range(n)`, a pure function of `(seed, epoch, n)`.
    """
    return np.random.default_rng([seed, epoch]).permutation(n)


def batches_per_epoch(n: int, batch_size: int, drop_last: bool = True) -> int:
    """Number of batches in one epoch of `n` examples."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    count = n // batch_size if drop_last else -(-n // batch_size)
    if count == 0:
        raise ValueError(
            f"No batch of size {batch_size} fits in {n} examples"
            + (" with drop_last=True" if drop_last and n else "")
        )
    return count


def shuffled_batch_indices(
    seed: int, step: int, n: int, batch_size: int, drop_last: bool = True
) -> tuple[np.ndarray, int]:
    """Example indices of training batch `step`, reshuffled every epoch.

    Step `s` is batch `s % k` of epoch `s // k`, with `k = batches_per_epoch(n, batch_size)`.

    Args:
        seed: run seed.
        step: global training step (0-based).
        n: dataset size.
        batch_size: examples per batch.
        drop_last: drop each epoch's final partial batch (keeps shapes static under `jit`);
            if False that batch is returned shorter.

    Returns:
        `(indices, epoch)`: `indices` `[batch]` int64 into the dataset, and the epoch number.
    """
    epoch, k = divmod(step, batches_per_epoch(n, batch_size, drop_last))
    perm = epoch_permutation(seed, epoch, n)
    return perm[k * batch_size : (k + 1) * batch_size], epoch


def sequential_batches(n: int, batch_size: int) -> list[np.ndarray]:
    """In-order batches for evaluation; the last partial batch is kept.

    Returns:
        `ceil(n / batch_size)` int64 index arrays, each `[batch]` (the last possibly shorter),
        that together are `range(n)`.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
