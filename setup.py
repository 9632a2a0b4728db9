"""Builds the optional native CPU kernels (`csrc/` -> `rnnlab/kernels/_rnn_kernels*.so`) and
maps the configs into the package (`conf/` -> `rnnlab/conf/`, `CONFIG_PACKAGE`).

Everything else is configured in pyproject.toml. The extension is optional: when it cannot be
compiled (no C++ compiler, unsupported platform) the install still succeeds and rnnlab runs on
its XLA scan path. It is a plain shared library loaded with ctypes and registered with XLA's FFI
(see `rnnlab/kernels/__init__.py`), not a Python extension module: the headers come from jaxlib
(`xla/ffi/api/ffi.h`) and BLAS (`scipy-openblas32`) is resolved when the library is loaded.
Built on Linux x86-64 only (elsewhere rnnlab runs on XLA), with GCC, for the portable baseline
`-march=x86-64`: the AVX-512 and AVX2 code inside it is chosen at load time by a CPU check (see
`csrc/rnn_kernels.cc`), so one wheel runs on any x86-64. `RNNLAB_NATIVE_ARCH` sets another
baseline `-march` (e.g. `native`: then the library runs only on CPUs like the build machine);
a change of the flags rebuilds the library. `RNNLAB_NATIVE_BUILD=0` skips it. The library is
stripped (`-s`).
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext


def _jaxlib_include() -> str | None:
    try:
        import jaxlib
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(jaxlib.__file__), "include")
    return path if os.path.exists(os.path.join(path, "xla", "ffi", "api", "ffi.h")) else None


class OptionalBuildExt(build_ext):
    """Build the kernels if possible; warn and carry on otherwise.

    A library built with other flags (e.g. another `RNNLAB_NATIVE_ARCH`) is rebuilt even when it
    is newer than its sources: the flags are kept in a stamp file in the build directory and a
    missing or different stamp forces the build (`build_ext --force` for this extension)."""

    def build_extension(self, ext):
        include = _jaxlib_include()
        if include is None:
            self.warn("rnnlab native kernels skipped: jaxlib's FFI headers were not found")
            return
        ext.include_dirs.append(include)
        stamp = Path(self.build_temp) / f"{ext.name}.flags"
        flags = " ".join([*ext.extra_compile_args, *ext.extra_link_args])
        forced = self.force
        self.force = forced or not stamp.is_file() or stamp.read_text() != flags
        try:
            super().build_extension(ext)
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(flags)
        except Exception as error:  # noqa: BLE001 - any compiler failure leaves the XLA path
            self.warn(f"rnnlab native kernels not built ({error}); falling back to XLA scans")
        finally:
            self.force = forced

    def get_export_symbols(self, ext):
        return []  # no PyInit_: loaded with ctypes


def _extensions() -> list[Extension]:
    """The kernel library: Linux x86-64 only (the target's platform, so a cross build is right)."""
    if os.environ.get("RNNLAB_NATIVE_BUILD", "1") == "0":
        return []
    if sysconfig.get_platform() != "linux-x86_64":
        return []
    arch = os.environ.get("RNNLAB_NATIVE_ARCH", "x86-64")
    return [
        Extension(
            "rnnlab.kernels._rnn_kernels",
            sources=["csrc/rnn_kernels.cc"],
            depends=["csrc/rnn_kernels_isa.inc"],
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
            extra_link_args=["-s"],
            optional=True,
        )
    ]


PLUGIN_PACKAGE = "hydra_plugins.rnnlab_sweeper"
CONFIG_PACKAGE = "rnnlab.conf"
"""The checkout's `conf/` ships inside the package as `rnnlab/conf/` (wheels carry a copy that
`rnnlab.cli.config_dir` finds; an editable install keeps reading the checkout's `conf/`)."""


setup(
    # hydra_plugins.rnnlab_sweeper: a portion of Hydra's plugin namespace (its resumable Optuna
    # sweeper), found by Hydra's plugin scan.
    packages=[*find_packages(include=["rnnlab", "rnnlab.*"]), CONFIG_PACKAGE, PLUGIN_PACKAGE],
    package_dir={CONFIG_PACKAGE: "conf"},
    package_data={CONFIG_PACKAGE: ["**/*.yaml", "*.md"]},
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
