"""Shared test settings: strict JAX promotion (as equinox's tests), float32 on CPU, tiny shapes."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Datasets: never the network, never the user's cache (`rnnlab.data.registry`): a test that
# points a task at a missing file must see "not found", on a machine with internet too.
# `tests/test_datasets.py` serves its files from 127.0.0.1 and sets these itself.
os.environ["RNNLAB_DATA_OFFLINE"] = "1"
os.environ.pop("RNNLAB_DATA", None)
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="rnnlab-test-cache-")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "standard")


def pytest_report_header(config) -> str:
    """Says whether the native CPU kernels are in use (the parity tests then check them too)."""
    from rnnlab import kernels

    if kernels.available():
        return f"rnnlab native CPU kernels: {kernels.isa()} code (backend='auto' uses them)"
    reason = kernels.unavailable_reason()
    return f"rnnlab native CPU kernels: unavailable ({reason}); XLA scans only"
