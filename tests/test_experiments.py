"""Every `conf/experiment/*.yaml` preset trains: one job of it for two steps on tiny generated data.

`tests/test_configs.py` checks that the presets compose; this runs them, shrunk by overrides
(8 hidden units, batch 4, two steps, evaluation and a checkpoint at step 2, tiny evaluation sets)
so that a preset whose keys, group choices or sweep no longer fit the trainer fails here, not at
the start of a long study. A swept preset (`hydra.sweeper.params`) runs its first job: the first
value of each swept key, as `rnnlab-train -m` would compose it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from rnnlab import cli
from tests.test_configs import compose_train as compose_with_hydra
from tests.test_configs import options
from tests.test_train import FAST, TASK_OVERRIDES, compose_train, make_tiny_data, train_losses

SHRINK = [
    "trainer.steps=2",
    "trainer.epochs=null",
    "trainer.batch_size=4",
    "trainer.eval_every=2",
    "trainer.checkpoint_every=2",
    "trainer.sample_tokens=4",
]
"""Trainer settings every preset pins for its study, shrunk (the model and task ones are in
`tests/test_train.py`'s FAST and TASK_OVERRIDES)."""


def first_job(experiment: str) -> tuple[str, list[str]]:
    """The preset's task and the overrides of its first sweep job (none for a single run)."""
    cfg = compose_with_hydra([f"experiment={experiment}"], hydra_config=True)
    parser = OverridesParser.create()
    job = []
    for key, value in (cfg.hydra.sweeper.params or {}).items():
        override = parser.parse_override(f"{key}={value}")
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()))
        else:
            value = override.get_value_element_as_str()
        job.append(f"{key}={value}")
    return cfg.hydra.runtime.choices.task, job


WARM_START_SOURCES = {
    "mr_lm_init": [*FAST, "experiment=mr_lm_pretrain", *TASK_OVERRIDES["sentiment_lm"], *SHRINK]
}
"""Per preset with `trainer.init_from`: the (shrunk) overrides of the run it starts from."""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_data(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_trains_its_first_job(
    experiment: str, data_dir: Path, tmp_path: Path
) -> None:
    task, job = first_job(experiment)
    overrides = [
        *FAST,
        f"data_dir={data_dir}",
        f"experiment={experiment}",
        *job,
        *TASK_OVERRIDES[task],  # after the job: its task.length=400 becomes the tiny one
        *SHRINK,
    ]
    cfg = compose_train(overrides)
    if cfg.trainer.init_from is not None:  # a warm-started preset: its source run, made tiny
        source = tmp_path / "source"
        source_cfg = compose_train(WARM_START_SOURCES[experiment] + [f"data_dir={data_dir}"])
        assert cli.train_from_config(source_cfg, source)["status"] == "completed"
        (source / ".hydra").mkdir()
        OmegaConf.save(source_cfg, source / ".hydra" / "config.yaml")
        cfg = compose_train([*overrides, f"trainer.init_from={source}"])
    assert cfg.trainer.steps == 2 and cfg.model.cell.hidden_size == 8
    results = cli.train_from_config(cfg, tmp_path / "run")
    assert results["status"] == "completed", results
    losses = train_losses(tmp_path / "run")
    assert len(losses) == 2 and np.all(np.isfinite(losses))
    assert results["best_checkpoint_metrics"]
    assert all(np.isfinite(v) for v in results["best_checkpoint_metrics"].values())
