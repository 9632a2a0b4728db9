"""The native kernel's run-time ISA dispatch (`rnnlab.kernels.isa`, `RNNLAB_NATIVE_ISA`).

One library holds the kernels for AVX-512, AVX2 and the x86-64 baseline and picks one when it is
loaded. Each path must match the XLA scan (the parity subset of `tests.kernel_checks`, in one
subprocess per ISA since the choice is made once per process), and asking for an ISA that is
unknown or that the CPU lacks must leave the kernel unavailable with a message, never crash."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnlab import kernels

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-5
"""As `tests/test_native_kernel.py`: every path, AVX-512 included, agrees with the XLA scan to
1e-5 (relative to 1 + |value|); the AVX2 and baseline paths differ from the AVX-512 one only in
the last bits (another exp/reciprocal and BLAS instead of the packed GEMM's summation order)."""

needs_library = pytest.mark.skipif(
    not kernels._library_paths() or os.environ.get("RNNLAB_NATIVE") == "0",
    reason="the native library is not built (or RNNLAB_NATIVE=0)",
)


def _run_checks(isa: str, *args: str, **env_vars: str) -> subprocess.Popen:
    """`python -m tests.kernel_checks *args` with `RNNLAB_NATIVE_ISA=isa` (and `env_vars`),
    started (not waited for)."""
    env = {**os.environ, kernels.ISA_ENV: isa, "JAX_PLATFORMS": "cpu", **env_vars}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.kernel_checks", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@needs_library
def test_every_isa_matches_scan_or_explains():
    """All ISAs at once (the subprocesses overlap): an ISA the CPU runs is the one in use and
    matches the scan; one it lacks leaves the kernel unavailable, saying which ones it can run."""
    runs = {isa: _run_checks(isa) for isa in kernels.ISAS}
    for isa, run in runs.items():
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, f"{isa}: exit {run.returncode}\n{err[-3000:]}"
        report = json.loads(out.strip().splitlines()[-1])
        if report["reason"] is not None:
            assert f"this CPU cannot run {isa} code" in report["reason"], report
            continue
        assert report["isa"] == isa
        assert report["errors"], "no cell declares a native kernel"
        worst = max(report["errors"].values())
        assert worst <= TOL, f"{isa}: {report['errors']}"


SPLITS = ("rows", "columns")
"""`RNNLAB_NATIVE_SPLIT`: each thread the whole recurrence of its batch rows; each step's product
split by columns and the gate math by rows (`choose_split`). One thread ("none") is what every
other native test runs (their shapes are below the two-thread size)."""


@needs_library
def test_thread_splits_match_scan_and_each_other(tmp_path):
    """At sizes that take the kernel's second thread, both ways of splitting the work match the
    scan; on the packed AVX-512 product each output element is summed in the same order
    whichever thread computes it, so the two splits agree bit for bit."""
    runs = {
        split: _run_checks(
            "auto", "--threaded", str(tmp_path / f"{split}.npz"), RNNLAB_NATIVE_SPLIT=split
        )
        for split in SPLITS
    }
    reports = {}
    for split, run in runs.items():
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, f"{split}: exit {run.returncode}\n{err[-3000:]}"
        reports[split] = json.loads(out.strip().splitlines()[-1])
    if reports["rows"]["reason"] is not None:
        pytest.skip(reports["rows"]["reason"])
    for split, report in reports.items():
        assert report["errors"], "no cell declares a native kernel"
        assert max(report["errors"].values()) <= TOL, f"{split}: {report['errors']}"
    if reports["rows"]["isa"] != "avx512":
        return  # BLAS may block a column chunk differently from the whole product
    rows, columns = (np.load(tmp_path / f"{split}.npz") for split in SPLITS)
    for name in rows.files:
        np.testing.assert_array_equal(rows[name], columns[name], err_msg=name)


@needs_library
def test_library_holds_the_documented_isas_and_runs_the_best():
    lib = ctypes.CDLL(kernels._library_paths()[0])
    assert kernels._isa_names(lib, supported_only=False) == list(kernels.ISAS)
    here = kernels._isa_names(lib, supported_only=True)
    assert here[-1] == "scalar"  # the baseline runs everywhere
    if os.environ.get(kernels.ISA_ENV, "auto") == "auto" and kernels.available():
        assert kernels.isa() == here[0]


class _FakeLibrary:
    """The ISA part of the library's C interface, for a CPU that runs `supported` only."""

    def __init__(self, supported: list[str]):
        self.supported = supported
        self.selected: list[str] = []
        self.RnnlabIsas = lambda only: ",".join(supported if only else kernels.ISAS).encode()
        self.RnnlabSelectIsa = self._select

    def _select(self, name: bytes) -> int:
        if name.decode() not in self.supported:
            return 0
        self.selected.append(name.decode())
        return 1


def test_unknown_or_unsupported_isa_is_explained():
    lib = _FakeLibrary(["avx2", "scalar"])
    assert kernels._select_isa(lib, "auto") is None
    assert kernels._select_isa(lib, "scalar") is None
    assert lib.selected == ["scalar"]
    unknown = kernels._select_isa(lib, "sse9")
    assert unknown == (
        "RNNLAB_NATIVE_ISA='sse9' is not one of auto, avx512, avx2, scalar; unset it or pick one"
    )
    lacking = kernels._select_isa(lib, "avx512")
    assert lacking == (
        "RNNLAB_NATIVE_ISA=avx512 but this CPU cannot run avx512 code (it can run: avx2, scalar); "
        "unset RNNLAB_NATIVE_ISA or set it to one of those"
    )
    assert lib.selected == ["scalar"]
