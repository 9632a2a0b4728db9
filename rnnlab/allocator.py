"""Keep freed memory in the process, so that XLA's per-step buffers do not fault in every step.

XLA on CPU allocates each executable's buffers per call with `malloc` (the temporaries of a
training step as one block: 57 MiB for an LSTM step at batch 32, 128 steps, hidden 256) and frees
them when the call returns. glibc serves a block that large with a fresh `mmap` and unmaps it on
`free`, so every step touches brand-new pages and the kernel zero-fills them one 4 KiB fault at a
time: measured with `perf` on the 2-core AMD EPYC, a third of that training step's time went to
page faults, and the step ran 1.5-2.2x slower than with the memory kept (`scripts/benchmark.py`
rows in the README's performance section; PyTorch in the same process gains as well).

`reuse_freed_memory()` raises glibc's mmap threshold to 1 GiB (blocks below it come from the
heap and are reused after `free`) and its trim threshold so that freed heap memory is not handed
back to the OS. The cost: the process keeps its peak heap, as a caching allocator does. It is
applied when `rnnlab` is imported, on Linux with glibc only; `RNNLAB_MALLOC=system` leaves
glibc's defaults (or set `GLIBC_TUNABLES`/`MALLOC_*_` yourself: an explicit setting wins, since
this reads the environment first).
"""

from __future__ import annotations

import ctypes
import os

ENV = "RNNLAB_MALLOC"
"""Environment variable: "system" (or "0") keeps glibc's allocator settings as they are."""

MMAP_THRESHOLD = 1 << 30
"""Blocks below 1 GiB come from the heap (glibc's default starts at 128 KiB and adapts up to
32 MiB, below one training step's temporaries)."""

TRIM_THRESHOLD = 2**31 - 1
"""Freed heap memory at the top is returned to the OS only above this (2 GiB; an `int` for
`mallopt`)."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's malloc.h

_GLIBC_SETTINGS = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _glibc_version() -> str:
    """ "glibc 2.36" where the C library is glibc, else "" (asked of the library itself: no
    scan of the interpreter's binary or `ldconfig` call at import time)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):  # no such name on this platform
        return ""


def reuse_freed_memory() -> str | None:
    """Apply the settings above; None when applied, else why not (nothing changed then).

    Idempotent. Not applied: off Linux/glibc, with `RNNLAB_MALLOC=system` or `0`, or when the
    environment already sets glibc's allocator (`GLIBC_TUNABLES`, `MALLOC_MMAP_THRESHOLD_`,
    `MALLOC_TRIM_THRESHOLD_`): the user's choice stays."""
    if os.environ.get(ENV, "").strip().lower() in ("system", "0"):
        return f"{ENV}={os.environ[ENV]}"
    if not _glibc_version():
        return "not Linux with glibc"
    explicit = [name for name in _GLIBC_SETTINGS if name in os.environ]
    if explicit:
        return f"the environment sets glibc's allocator ({', '.join(explicit)})"
    try:
        libc = ctypes.CDLL("libc.so.6")
        applied = (
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            and libc.mallopt(_M_ARENA_MAX, 1)
        )
    except (OSError, AttributeError) as error:
        return f"mallopt unavailable: {error}"
    return None if applied else "mallopt refused the thresholds"
