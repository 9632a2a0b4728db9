"""Shared test settings: strict JAX promotion (as equinox's tests), float32 on CPU, tiny shapes."""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "standard")


def pytest_report_header(config) -> str:
    """Says whether the native CPU kernels are in use (the parity tests then check them too)."""
    from rnnlab import kernels

    if kernels.available():
        return "rnnlab native CPU kernels: available (backend='auto' uses them)"
    reason = kernels.unavailable_reason()
    return f"rnnlab native CPU kernels: unavailable ({reason}); XLA scans only"
