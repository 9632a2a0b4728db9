"""`rnnlab.allocator`: freed memory is kept for reuse, so a training step's buffers do not fault
in anew every step (see the module's docstring for the measurement)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

import rnnlab
from rnnlab import allocator

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc"
)

_FAULTS = """
import ctypes, json, resource
import rnnlab
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20  # above glibc's largest default mmap threshold (32 MiB)
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"faults": faults, "not_tuned": rnnlab.MALLOC_NOT_TUNED}))
"""


def _faults(**env: str) -> dict:
    """Page faults of each of four malloc/touch/free rounds of 64 MiB in a fresh process."""
    clean = {k: v for k, v in os.environ.items() if k not in (allocator.ENV, "GLIBC_TUNABLES")}
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc_only
def test_freed_blocks_are_reused_without_faulting_in_again():
    tuned, system = _faults(), _faults(**{allocator.ENV: "system"})
    assert tuned["not_tuned"] is None
    assert "RNNLAB_MALLOC=system" in system["not_tuned"]
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    # glibc's defaults: every round maps fresh pages and faults them all in
    assert min(system["faults"][1:]) > pages // 2, system
    # kept: the first round faults the block in, the next ones reuse it
    assert max(tuned["faults"][1:]) < pages // 20, tuned


@glibc_only
def test_an_explicit_glibc_setting_is_left_alone():
    report = _faults(GLIBC_TUNABLES="glibc.malloc.trim_threshold=1000000")
    assert "GLIBC_TUNABLES" in report["not_tuned"]


def test_this_process_reports_whether_it_tuned():
    assert rnnlab.MALLOC_NOT_TUNED == allocator.reuse_freed_memory()
