"""rnnlab installed from a wheel, used from any directory and from a user's own project.

A wheel is built from a copy of the checkout (`pip wheel --no-build-isolation`, native kernel
skipped) and installed, without the internet, into a fresh virtual environment made inside a
git repository of its own (as a user's `.venv` inside their project would be). Its dependencies
come from this interpreter's `site-packages` through a `.pth` line, which does not run that
directory's own `.pth` files, so the checkout's editable rnnlab stays invisible. Then, from
directories that hold no rnnlab files and with no `RNNLAB_CONF`:

- the wheel carries every `conf/` file as `rnnlab/conf/` and offers the `tensorboard` extra;
- `rnnlab-train --cfg job` composes from the packaged configs, and Hydra's plugin scan finds
  the wheel's resumable Optuna sweeper (`hydra_plugins/rnnlab_sweeper`);
- `rnnlab-train -m` runs a sweep of two tiny jobs of the main job, and each `provenance.json`
  names the code by the installed wheel (no git commit: the enclosing repository is not
  rnnlab's) and the sha256 of the installed code and configs;
- `examples/my_project`, copied elsewhere, trains its own task and cell through
  `rnnlab-train --config-dir conf`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from rnnlab import __version__
from rnnlab.provenance import source_digest
from rnnlab.rundir import PROVENANCE_FILE, RESULTS_FILE

REPO = Path(__file__).resolve().parents[1]
SOURCES = (
    *("pyproject.toml", "setup.py", "README.md", "MANIFEST.in"),
    *("rnnlab", "conf", "csrc", "hydra_plugins"),
)
"""What setup.py builds the wheel from."""
TINY = [
    "trainer=debug",
    "trainer.quiet=true",
    "trainer.steps=2",
    "trainer.eval_every=2",
    "trainer.checkpoint_every=2",
    "trainer.batch_size=4",
    "trainer.compilation_cache_dir=null",
    "model.cell.hidden_size=8",
    "task.length=10",
    "task.eval_batches=1",
    "task.eval_batch_size=8",
]
"""Overrides for a two-step run of the main job (and of the example's task)."""


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel, and a fresh virtual environment with it installed (see the module docstring)."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.so")
            shutil.copytree(REPO / name, source / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, source / name)
    build_env = {**os.environ, "RNNLAB_NATIVE_BUILD": "0"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    wheels = root / "wheels"
    offline = ["-q", "--no-deps", "--no-index"]
    _run(
        [*pip, "wheel", *offline, "--no-build-isolation", "-w", str(wheels), str(source)],
        root,
        build_env,
    )
    (wheel,) = wheels.glob("rnnlab-*.whl")

    project = root / "user_project"  # a git repository of someone else's, holding the venv
    project.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    _run([*git, "init", "-q"], project)
    _run([*git, "commit", "-q", "--allow-empty", "-m", "user's project"], project)
    venv = project / ".venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root)
    python = venv / "bin" / "python"
    _run([*pip, "--python", str(python), "install", *offline, str(wheel)], root)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([str(python), "-c", purelib], root).strip())
    ours = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    (site / "rnnlab_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    return {"wheel": wheel, "bin": venv / "bin", "site": site, "root": root}


def user_env(installed: dict[str, Path]) -> dict[str, str]:
    """The environment of a user who installed the wheel: no RNNLAB_CONF, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("RNNLAB_CONF", "PYTHONPATH")}
    env["PATH"] = f"{installed['bin']}{os.pathsep}{env.get('PATH', '')}"
    env["CI"] = "true"
    return env


def empty_dir(installed: dict[str, Path], name: str) -> Path:
    path = installed["root"] / name
    path.mkdir()
    return path


def test_wheel_carries_the_configs_and_the_tensorboard_extra(installed: dict[str, Path]) -> None:
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        names = set(wheel.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = wheel.read(metadata).decode()
    conf = {p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert conf and {f"rnnlab/conf/{name}" for name in conf} <= names
    assert "hydra_plugins/rnnlab_sweeper/resumable_optuna.py" in names
    assert "Provides-Extra: tensorboard" in meta
    assert any(line.startswith("Requires-Dist: tensorboard") for line in meta.splitlines())


def test_installed_rnnlab_composes_its_packaged_configs(installed: dict[str, Path]) -> None:
    cwd, env = empty_dir(installed, "compose"), user_env(installed)
    where = "import rnnlab, rnnlab.cli; print(rnnlab.__file__, rnnlab.cli.config_dir())"
    where = _run(["python", "-c", where], cwd, env).split()
    assert all(Path(p).is_relative_to(installed["site"] / "rnnlab") for p in where), where
    job = _run(["rnnlab-train", "--cfg", "job", "model=gru", "task=copy"], cwd, env)
    assert "_target_: rnnlab.cells.gru.GRUCell" in job and "_target_: rnnlab.tasks.CopyTask" in job
    assert list(cwd.iterdir()) == []  # printing the config writes nothing
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    scan = "from hydra.core.plugins import Plugins; print(*Plugins.instance().class_name_to_class)"
    found = _run(["python", "-c", scan], cwd, env).split()  # Hydra's own scan, no rnnlab-train
    assert "hydra_plugins.rnnlab_sweeper.resumable_optuna.ResumableOptunaSweeper" in found


def test_installed_rnnlab_sweeps_from_an_empty_directory(installed: dict[str, Path]) -> None:
    cwd = empty_dir(installed, "sweep")
    argv = ["-m", "seed=0,1", *TINY, "hydra.sweep.dir=multirun/s"]
    _run(["rnnlab-train", *argv], cwd, user_env(installed))
    jobs = sorted((cwd / "multirun" / "s").glob("*seed=*"))
    assert len(jobs) == 2
    wheel_sha256 = hashlib.sha256(installed["wheel"].read_bytes()).hexdigest()
    for job in jobs:
        assert json.loads((job / RESULTS_FILE).read_text())["status"] == "completed"
        (attempt,) = json.loads((job / PROVENANCE_FILE).read_text())["attempts"]
        assert attempt["rnnlab"] == __version__
        assert attempt["git"]["commit"] is None  # the enclosing repository is not rnnlab's
        code = attempt["source"]
        assert code == {
            **source_digest(installed["site"] / "rnnlab"),
            "distribution": {
                "name": "rnnlab",
                "version": __version__,
                "direct_url": {
                    "url": installed["wheel"].as_uri(),
                    "archive_info": {
                        "hash": f"sha256={wheel_sha256}",
                        "hashes": {"sha256": wheel_sha256},
                    },
                },
            },
        }
        assert code["files"] > 50  # the code and the configs


def test_example_project_trains_its_own_task_and_cell(installed: dict[str, Path]) -> None:
    project = installed["root"] / "my_project"
    shutil.copytree(REPO / "examples" / "my_project", project)
    argv = ["--config-dir", "conf", "experiment=temporal_order_cells", *TINY]
    _run(["rnnlab-train", *argv, "hydra.run.dir=run"], project, user_env(installed))
    results = json.loads((project / "run" / RESULTS_FILE).read_text())
    assert results["status"] == "completed" and results["task"] == "temporal_order"
    assert results["config"]["model.cell._target_"] == "my_project.cells.UGRNNCell"
    assert results["config"]["task.length"] == 10 and results["steps"] == 2
    assert results["best"]["metric"] == "valid/accuracy"
