"""Where a result came from: code version, library versions, devices, command, time.

Every run directory gets `provenance.json` (written by `rnnlab.train.train`): one entry per
attempt (a resumed run adds one), each with the command line, the rnnlab version and git commit
(and whether the work tree had uncommitted changes), the versions of the libraries that decide
the numbers, the devices, the seed, the step it started from and its wall time. A table in a
paper can then say exactly which code and which machine produced it.

Installed from a wheel there is no git checkout to ask: `source` then names the code instead, by
a sha256 over the installed package's `.py` and `.yaml` files (its configs included) and the
installed distribution's metadata (version, and pip's `direct_url.json`: where the wheel came
from and its hash).

An attempt's wall time and last step are brought up to date at every checkpoint (`heartbeat`),
so an attempt that was killed (SIGKILL, power loss: no chance to say so) is found still
"running" by the next attempt, which marks it "killed" with the time it had run until its last
checkpoint; `wall_s_total` sums every attempt.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax

from rnnlab import __version__
from rnnlab.rundir import PROVENANCE_FILE, read_json, write_json

PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "hydra-core",
    "omegaconf",
    "tensorboardX",
    "numpy",
)
"""Distributions whose versions are recorded (those that can change a number or a file)."""


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """`{distribution: version}`, None for one that is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


PACKAGE_DIR = Path(__file__).resolve().parent
"""The directory rnnlab is imported from: a checkout's `rnnlab/` or `site-packages/rnnlab/`."""


@functools.cache
def git_state(source: Path | None = None) -> dict[str, Any]:
    """The commit of the source tree rnnlab runs from, and whether it has uncommitted changes.

    `{"commit": None, "dirty": None, "describe": None}` when rnnlab is not running from a git
    checkout (an installed wheel; `source_state` then names the code). A git repository that
    merely contains the package without tracking it (a virtual environment inside a user's
    project) is not rnnlab's checkout.

    Args:
        source: the directory holding the `rnnlab/` package (default: where it is imported from).
    """
    root = source or PACKAGE_DIR.parent
    tracked = _git(["ls-files", "--error-unmatch", "--", "rnnlab/__init__.py"], root)
    commit = _git(["rev-parse", "HEAD"], root) if tracked else None
    if commit is None:
        return {"commit": None, "dirty": None, "describe": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], root)
    return {
        "commit": commit,
        "dirty": bool(status) if status is not None else None,
        "describe": _git(["describe", "--always", "--dirty", "--tags"], root),
    }


SOURCE_SUFFIXES = (".py", ".yaml")
"""The installed files `source_digest` covers: the code and the configs."""


def source_digest(package: Path = PACKAGE_DIR) -> dict[str, Any]:
    """`{"sha256": hex, "files": n}` over the package's `.py` and `.yaml` files.

    Each file enters as its path relative to `package`, a NUL and the sha256 of its bytes, in
    sorted path order, so the digest depends on nothing but the files' names and contents
    (neither the install location nor the time).
    """
    files = sorted(
        path.relative_to(package).as_posix()
        for path in package.rglob("*")
        if path.suffix in SOURCE_SUFFIXES and path.is_file() and "__pycache__" not in path.parts
    )
    digest = hashlib.sha256()
    for name in files:
        digest.update(
            name.encode() + b"\0" + hashlib.sha256((package / name).read_bytes()).digest()
        )
    return {"sha256": digest.hexdigest(), "files": len(files)}


def installed_distribution(package: Path = PACKAGE_DIR) -> dict[str, Any] | None:
    """The metadata of the distribution installed next to `package` (its `*.dist-info`):
    `{"name", "version", "direct_url"}`, `direct_url` being pip's record of where it was
    installed from (PEP 610: a wheel's URL and hash, or a VCS commit) or None. None when no
    distribution of rnnlab sits next to the package (a checkout on `sys.path`)."""
    found = importlib.metadata.distributions(name="rnnlab", path=[str(package.parent)])
    dist = next(iter(found), None)
    if dist is None:
        return None
    direct_url = dist.read_text("direct_url.json")
    return {
        "name": dist.metadata["Name"],
        "version": dist.version,
        "direct_url": json.loads(direct_url) if direct_url else None,
    }


@functools.cache
def source_state(package: Path = PACKAGE_DIR) -> dict[str, Any]:
    """What names the code where git cannot: `source_digest` plus `installed_distribution`."""
    return {**source_digest(package), "distribution": installed_distribution(package)}


def device_info() -> dict[str, Any]:
    """Backend, device kind and counts (global and on this process), process count."""
    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind if devices else None,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
    }


def cpu_model() -> str | None:
    """The CPU's model name (`/proc/cpuinfo`, else `platform.processor()`), None if unknown: with
    `cpu_count`, the machine a wall time or a speed was measured on."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


VECTOR_ISAS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"))
"""`/proc/cpuinfo` flag -> name, widest first."""


def cpu_vector_isa(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU's widest vector instruction set from its `/proc/cpuinfo` flags: "AVX-512"
    (avx512f), "AVX2", "AVX" or None (unknown, or none of those): a 2-core AMD EPYC with
    AVX-512 trains MR's Bi-LSTM about 6x as fast as one with AVX2 only, under the same name."""
    try:
        with open(cpuinfo) as f:
            flags = next(
                (line.partition(":")[2].split() for line in f if line.startswith("flags")), []
            )
    except OSError:
        return None
    return next((name for flag, name in VECTOR_ISAS if flag in flags), None)


def now_utc() -> str:
    """The current time as an ISO-8601 UTC string."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def collect(seed: int, start_step: int) -> dict[str, Any]:
    """The provenance of one attempt of a run, as it starts. The code is named by its git
    commit, or where rnnlab runs from no checkout by `source` (`source_state`)."""
    git = git_state()
    return {
        "started_at": now_utc(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else [],
        "cwd": os.getcwd(),
        "rnnlab": __version__,
        "git": git,
        "source": source_state() if git["commit"] is None else None,
        "python": platform.python_version(),
        "packages": package_versions(),
        "devices": device_info(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        "cpu_isa": cpu_vector_isa(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "seed": seed,
        "start_step": start_step,
        "status": "running",
    }


class ProvenanceRecord:
    """Appends this attempt to `<run_dir>/provenance.json` and completes it at the end.

    Args:
        run_dir: the run directory.
        seed: the run seed.
        start_step: the step this attempt starts from (0, or the resumed checkpoint's step).
        enabled: False on every process but the first of a multi-host job.
    """

    def __init__(self, run_dir: Path, seed: int, start_step: int, enabled: bool = True):
        self.path = Path(run_dir) / PROVENANCE_FILE
        self.enabled = enabled
        self._tic = time.perf_counter()
        self.attempt = collect(seed, start_step)
        self.attempts: list[dict[str, Any]] = []
        if not enabled:
            return
        self.attempts = [mark_killed(a) for a in load(self.path).get("attempts", [])]
        self._write()

    def _write(self) -> None:
        write_json(
            self.path,
            {"attempts": [*self.attempts, self.attempt], "wall_s_total": self.wall_s_total},
        )

    def note(self, **facts: Any) -> None:
        """Adds facts about this attempt (e.g. `init_from`: the run and checkpoint step a warm
        start took its parameters from)."""
        self.attempt.update(facts)
        if self.enabled:
            self._write()

    def heartbeat(self, step: int) -> None:
        """Records how far this attempt has got (called at every checkpoint)."""
        self.attempt.update(last_step=step, wall_s=time.perf_counter() - self._tic)
        if self.enabled:
            self._write()

    def finish(self, status: str, end_step: int | None = None) -> dict[str, Any]:
        """Records the end of this attempt; returns it (with `wall_s`)."""
        self.attempt.update(
            status=status,
            finished_at=now_utc(),
            wall_s=time.perf_counter() - self._tic,
            end_step=end_step,
        )
        if self.enabled:
            self._write()
        return self.attempt

    @property
    def wall_s_total(self) -> float:
        """Wall time of all attempts so far (this one up to now)."""
        done = sum(a.get("wall_s", 0.0) for a in self.attempts)
        if self.attempt["status"] == "running":
            return done + time.perf_counter() - self._tic
        return done + self.attempt["wall_s"]


def process_gone(attempt: Mapping[str, Any]) -> bool:
    """Whether an attempt still marked "running" is known to have ended without a word: it
    recorded this host and a process id that no longer exists here. False where that cannot be
    told (another host, or an attempt saved before `pid` was recorded)."""
    pid = attempt.get("pid")
    if attempt.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def mark_killed(attempt: dict[str, Any]) -> dict[str, Any]:
    """An earlier attempt still marked "running" was killed without a word: mark it "killed",
    its wall time and last step as of its last heartbeat (its last checkpoint)."""
    if attempt.get("status") != "running":
        return attempt
    return {
        **attempt,
        "status": "killed",
        "wall_s": attempt.get("wall_s", 0.0),
        "end_step": attempt.get("last_step"),
    }


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The contents of a `provenance.json` (or of the one in a run directory); {} if absent.

    A damaged file is moved aside (`rundir.set_aside`) and {} returned: the next write starts
    a new record and the old bytes are kept.
    """
    path = Path(path)
    if path.is_dir():
        path = path / PROVENANCE_FILE
    return read_json(path, set_aside_damaged=True) or {}
