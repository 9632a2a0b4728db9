"""Provenance names the code a run used: the git commit of a checkout, or, installed from a wheel,
the installed distribution and a digest of the installed code and configs.

A package directory made by the test stands in for an installed rnnlab (`site/rnnlab/` next to a
`rnnlab-*.dist-info` with pip's `direct_url.json`); `tests/test_packaging.py` checks the same on
a real wheel installed into a fresh virtual environment.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from rnnlab import provenance

DIRECT_URL = {"url": "file:///wheels/rnnlab-9.9-py3-none-any.whl", "archive_info": {}}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A `site-packages` holding a small `rnnlab/` package and its `.dist-info`."""
    package = tmp_path / "site" / "rnnlab"
    (package / "conf" / "cell").mkdir(parents=True)
    (package / "__init__.py").write_text('__version__ = "9.9"\n')
    (package / "conf" / "cell" / "lstm.yaml").write_text("hidden_size: 4\n")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "x.py").write_text("cached\n")
    (package / "notes.txt").write_text("not code\n")
    info = tmp_path / "site" / "rnnlab-9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rnnlab\nVersion: 9.9\n")
    (info / "direct_url.json").write_text(json.dumps(DIRECT_URL))
    return tmp_path / "site"


def test_source_digest_covers_code_and_configs_wherever_installed(
    site: Path, tmp_path: Path
) -> None:
    digest = provenance.source_digest(site / "rnnlab")
    assert digest["files"] == 2  # __init__.py and the YAML; no cache, no other files
    moved = shutil.copytree(site / "rnnlab", tmp_path / "elsewhere" / "rnnlab")
    assert provenance.source_digest(moved) == digest  # names and contents, not the location
    (moved / "notes.txt").write_text("changed\n")
    assert provenance.source_digest(moved) == digest
    (moved / "conf" / "cell" / "lstm.yaml").write_text("hidden_size: 5\n")
    assert provenance.source_digest(moved)["sha256"] != digest["sha256"]


def test_installed_distribution_reads_the_metadata_next_to_the_package(site: Path) -> None:
    assert provenance.installed_distribution(site / "rnnlab") == {
        "name": "rnnlab",
        "version": "9.9",
        "direct_url": DIRECT_URL,
    }
    (site / "rnnlab-9.9.dist-info" / "direct_url.json").unlink()
    assert provenance.installed_distribution(site / "rnnlab")["direct_url"] is None
    shutil.rmtree(site / "rnnlab-9.9.dist-info")
    assert provenance.installed_distribution(site / "rnnlab") is None


def _git(cwd: Path, *args: str) -> None:
    ident = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", *ident, *args], cwd=cwd, check=True, capture_output=True)


def test_git_names_only_a_checkout_that_tracks_rnnlab(site: Path) -> None:
    """A virtual environment inside someone's repository is not rnnlab's checkout."""
    provenance.git_state.cache_clear()
    try:
        assert provenance.git_state(site)["commit"] is None  # no repository at all
        _git(site, "init", "-q")
        _git(site, "commit", "-q", "--allow-empty", "-m", "a user's project")
        assert provenance.git_state(site) == {"commit": None, "dirty": None, "describe": None}
        provenance.git_state.cache_clear()
        _git(site, "add", "rnnlab/__init__.py")
        _git(site, "commit", "-q", "-m", "rnnlab")
        state = provenance.git_state(site)
        assert len(state["commit"]) == 40 and state["dirty"] is False
    finally:
        provenance.git_state.cache_clear()


def test_an_attempt_without_a_checkout_names_the_installed_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        provenance, "git_state", lambda: {"commit": None, "dirty": None, "describe": None}
    )
    attempt = provenance.collect(seed=0, start_step=0)
    assert attempt["source"] == provenance.source_state()
    assert attempt["source"]["files"] > 0 and len(attempt["source"]["sha256"]) == 64
    monkeypatch.setattr(
        provenance, "git_state", lambda: {"commit": "a" * 40, "dirty": False, "describe": "a"}
    )
    assert provenance.collect(seed=0, start_step=0)["source"] is None  # git names it


@pytest.mark.parametrize(
    ("flags", "isa"),
    [("fpu sse avx avx2 avx512f avx512bw", "AVX-512"), ("fpu sse avx avx2 fma", "AVX2"),
     ("fpu sse", None)],
)  # fmt: skip
def test_an_attempt_names_the_cpus_widest_vector_instruction_set(
    tmp_path: Path, flags: str, isa: str | None
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n")
    assert provenance.cpu_vector_isa(str(cpuinfo)) == isa
    assert provenance.cpu_vector_isa(str(tmp_path / "missing")) is None
    assert "cpu_isa" in provenance.collect(seed=0, start_step=0)
