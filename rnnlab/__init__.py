"""rnnlab: recurrent neural networks as pure JAX functions."""

from rnnlab.allocator import reuse_freed_memory as _reuse_freed_memory

__version__ = "0.1.0"

MALLOC_NOT_TUNED: str | None = _reuse_freed_memory()
"""Why glibc's allocator keeps its default settings in this process (None: freed memory is kept
for reuse, see `rnnlab.allocator`)."""
