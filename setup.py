"""Builds the optional native CPU kernels (`csrc/` -> `rnnlab/kernels/_rnn_kernels*.so`).

Everything else is configured in pyproject.toml. The extension is optional: when it cannot be
compiled (no C++ compiler, unsupported platform) the install still succeeds and rnnlab runs on
its XLA scan path. It is a plain shared library loaded with ctypes and registered with XLA's FFI
(see `rnnlab/kernels/__init__.py`), not a Python extension module: the headers come from jaxlib
(`xla/ffi/api/ffi.h`) and BLAS (`scipy-openblas32`) is resolved when the library is loaded.
Compiled with `-march=native` for the machine it is built on; set `RNNLAB_NATIVE_ARCH` to another
`-march` value (e.g. `x86-64-v3`) when building for other machines, or `RNNLAB_NATIVE_BUILD=0` to
skip it.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _jaxlib_include() -> str | None:
    try:
        import jaxlib
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(jaxlib.__file__), "include")
    return path if os.path.exists(os.path.join(path, "xla", "ffi", "api", "ffi.h")) else None


class OptionalBuildExt(build_ext):
    """Build the kernels if possible; warn and carry on otherwise."""

    def build_extension(self, ext):
        include = _jaxlib_include()
        if include is None:
            self.warn("rnnlab native kernels skipped: jaxlib's FFI headers were not found")
            return
        ext.include_dirs.append(include)
        # Plain C++: no Python symbols are used, so drop the C-only flag setuptools adds.
        try:
            super().build_extension(ext)
        except Exception as error:  # noqa: BLE001 - any compiler failure leaves the XLA path
            self.warn(f"rnnlab native kernels not built ({error}); falling back to XLA scans")

    def get_export_symbols(self, ext):
        return []  # no PyInit_: loaded with ctypes


def _extensions() -> list[Extension]:
    if os.environ.get("RNNLAB_NATIVE_BUILD", "1") == "0" or not sys.platform.startswith("linux"):
        return []
    arch = os.environ.get("RNNLAB_NATIVE_ARCH", "native")
    return [
        Extension(
            "rnnlab.kernels._rnn_kernels",
            sources=["csrc/rnn_kernels.cc"],
            language="c++",
            extra_compile_args=[
                "-std=c++17",
                "-O3",
                f"-march={arch}",
                "-mprefer-vector-width=512",
                "-ffast-math",
                "-fno-finite-math-only",
                "-fvisibility=hidden",
                "-Wno-attributes",
                "-Wno-return-type",
                "-Wno-sign-compare",
            ],
            optional=True,
        )
    ]


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
