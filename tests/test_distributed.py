"""Scale-out through JAX's and Hydra's own machinery, run for real on this machine.

- Two processes joined by `jax.distributed` (a localhost coordinator, one CPU device each, Gloo
  collectives) train exactly like one process with two local devices: same batches split the
  same way, so every logged metric is equal.
- Hydra's submitit launcher (`submitit_local`) runs a sweep's jobs as separate processes.
- Hydra's Optuna sweeper (`conf/hparams_search/adding_optuna.yaml`) runs trials as ordinary runs
  and continues its study when the same command is run again in the same sweep directory.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.subprocess_runs import REPO, TINY_MODEL, TINY_TASK, TRAIN

TINY = [*TINY_MODEL, *TINY_TASK]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_FLAGS"))}
    return {**env, "CI": "true", "JAX_PLATFORMS": "cpu", **extra}


def _metrics(run_dir: Path) -> list[dict]:
    """`metrics.jsonl` without wall-clock fields."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("wall/", "time"))} for r in rows]


def test_two_processes_train_like_one_process_with_two_devices(tmp_path: Path) -> None:
    args = [*TRAIN, *TINY, "trainer.steps=6", "trainer.eval_every=3", "trainer.batch_size=8"]
    one = subprocess.run(
        [*args, f"hydra.run.dir={tmp_path / 'one'}"],
        env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"),
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    cluster = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{_free_port()}", "JAX_NUM_PROCESSES": "2"}
    processes = [
        subprocess.Popen(
            [*args, f"hydra.run.dir={tmp_path / 'two'}"],
            env=_env(**cluster, JAX_PROCESS_ID=str(index)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )  # fmt: skip
        for index in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "on 2 device(s)" in outputs[0]
    assert _metrics(tmp_path / "two") == _metrics(tmp_path / "one")
    assert len(_metrics(tmp_path / "one")) >= 3


def test_a_bad_cluster_environment_is_one_line() -> None:
    from rnnlab.distributed import explicit_cluster

    assert explicit_cluster({}) is None
    cluster = {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": "2"}
    assert explicit_cluster({**cluster, "JAX_PROCESS_ID": "1"})["process_id"] == 1
    for bad in ({}, {"JAX_PROCESS_ID": "two"}, {"JAX_PROCESS_ID": "2"}):
        with pytest.raises(ValueError, match="JAX_"):
            explicit_cluster({**cluster, **bad})


def test_submitit_local_launcher_runs_the_sweep_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [*TRAIN, "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"]
    done = subprocess.run(
        [*args, "seed=0,1", *TINY, "trainer.steps=2", f"hydra.sweep.dir={sweep}"],
        env=_env(), capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert (sweep / ".submitit").is_dir()  # the jobs went through submitit


def test_optuna_search_runs_trials_and_continues_its_study(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    sweep = tmp_path / "search"
    command = [
        *TRAIN, "-m", "hparams_search=adding_optuna", "hydra.sweeper.n_trials=2", *TINY,
        "trainer.steps=4", "trainer.eval_every=2", "trainer.checkpoint_every=4",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    for trials in (2, 4):  # the second command continues the study stored in the sweep dir
        done = subprocess.run(
            command, env=_env(), capture_output=True, text=True, timeout=300, cwd=REPO
        )
        assert done.returncode == 0, done.stderr[-3000:]
        study = optuna.load_study(study_name="adding_lstm", storage=f"sqlite:///{sweep}/optuna.db")
        finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(finished) == trials
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_params" in best and "optim.learning_rate" in best
    assert min(t.value for t in finished) == pytest.approx(study.best_value)
    runs = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    assert {r["best"]["value"] for r in runs} >= {t.value for t in finished[:2]}


def test_sweep_dir_callback_creates_the_sweep_dir_before_the_sweeper(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from rnnlab.cli import CreateSweepDir

    target = tmp_path / "multirun" / "search"
    callback = CreateSweepDir()
    callback.on_job_start(config=None, task_function=print)  # as Hydra calls it: nothing
    callback.on_multirun_start(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(target)}}}))
    assert target.is_dir()
