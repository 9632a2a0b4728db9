"""Scale-out through JAX's and Hydra's own machinery, run for real on this machine.

- Two processes joined by `jax.distributed` (a localhost coordinator, one CPU device each, Gloo
  collectives) train exactly like one process with two local devices: same batches split the
  same way, so every logged metric is equal.
- Hydra's submitit launcher (`submitit_local`) runs a sweep's jobs as separate processes.
- Hydra's Optuna sweeper, made resumable (`hydra/sweeper=optuna_resumable`,
  `conf/hparams_search/adding_optuna.yaml`), runs trials as ordinary runs; the same command again
  reruns an interrupted trial in its own directory and runs only the rest of the budget.
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


def test_optuna_search_resumes_an_interrupted_trial_and_keeps_its_budget(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    sweep = tmp_path / "search"
    storage = f"sqlite:///{sweep}/optuna.db"

    def search(n_trials: int) -> list:
        command = [
            *TRAIN, "-m", "hparams_search=adding_optuna", f"hydra.sweeper.n_trials={n_trials}",
            *TINY, "trainer.steps=4", "trainer.eval_every=2", "trainer.checkpoint_every=4",
            f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=trial_${hydra.job.num}",
        ]  # fmt: skip
        done = subprocess.run(
            command, env=_env(), capture_output=True, text=True, timeout=300, cwd=REPO
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return optuna.load_study(study_name="adding_lstm", storage=storage).trials

    first = search(2)
    assert [t.state.name for t in first] == ["COMPLETE", "COMPLETE"]
    # What a sweep killed during its third trial leaves in the study: trial 2 RUNNING, with its
    # searched value and the command's fixed values (the user attributes the sweeper sets).
    interrupted = optuna.load_study(study_name="adding_lstm", storage=storage).ask()
    interrupted.suggest_float("optim.learning_rate", 0.0003, 0.03, log=True)
    for key, value in first[1].user_attrs.items():
        interrupted.set_user_attr(key, value)

    trials = search(4)  # the interrupted trial again, then one more: the budget is 4 in all
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert trials[2].params == interrupted.params
    for trial in trials:  # job k is Optuna's trial k, in trial_k
        results = json.loads((sweep / f"trial_{trial.number}" / "results.json").read_text())
        assert results["best"]["value"] == pytest.approx(trial.value)
        assert results["config"]["optim.learning_rate"] == trial.params["optim.learning_rate"]
    # The resumed sampler is reseeded (seed + trials stored), not asking trial 0's values again.
    assert trials[3].params != trials[0].params
    assert sorted(p.name for p in sweep.glob("trial_*")) == [f"trial_{k}" for k in range(4)]
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_params" in best and "optim.learning_rate" in best
    assert min(t.value for t in trials) == pytest.approx(
        optuna.load_study(study_name="adding_lstm", storage=storage).best_value
    )


def test_optuna_budget_counts_every_finished_trial() -> None:
    resumable = pytest.importorskip("hydra_plugins.rnnlab_sweeper.resumable_optuna")
    states = ["COMPLETE", "FAIL", "PRUNED", "RUNNING", "WAITING"]
    assert resumable.remaining_budget(states, 5) == 2
    assert resumable.remaining_budget(states, 2) == 0
    assert resumable.remaining_budget([], 24) == 24


def test_optuna_sampler_resumes_with_its_seed_plus_the_trials_stored() -> None:
    pytest.importorskip("optuna")
    from omegaconf import OmegaConf

    from hydra_plugins.rnnlab_sweeper.resumable_optuna import reseeded

    seeded = OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": 3})
    first, resumed = reseeded(None, seeded, 0), reseeded(None, seeded, 5)
    again = reseeded(None, OmegaConf.create({**seeded, "seed": 8}), 0)
    draw = [s._rng.uniform() for s in (first, resumed, again)]  # noqa: SLF001
    assert draw[1] == draw[2] != draw[0]  # seed 3 + 5 stored trials = seed 8
    unseeded = OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": None})
    assert reseeded("the sampler", unseeded, 5) == "the sampler"


def test_sweep_dir_callback_creates_the_sweep_dir_before_the_sweeper(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from rnnlab.cli import CreateSweepDir

    target = tmp_path / "multirun" / "search"
    callback = CreateSweepDir()
    callback.on_job_start(config=None, task_function=print)  # as Hydra calls it: nothing
    callback.on_multirun_start(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(target)}}}))
    assert target.is_dir()
