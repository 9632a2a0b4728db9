"""Every config under conf/ composes, and bad configs fail at start-up with a clear message.

Composition only (Hydra's compose API, in-process); training runs are in `test_train.py`. The
optimiser and schedule builders are checked here too, against their closed forms.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from rnnlab import cli
from rnnlab.optim import OptimConfig, ScheduleConfig, build_optimizer, build_schedule
from rnnlab.tasks.base import Task
from rnnlab.train import TrainerConfig
from rnnlab.writers import LoggerConfig

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    """The options of a config group, discovered from conf/ (no list to keep by hand)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_train(overrides: list[str], hydra_config: bool = False):
    cli.register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=hydra_config)


def test_groups_are_documented() -> None:
    readme = (CONF / "README.md").read_text()
    for group in (
        "model",
        "task",
        "optim",
        "optim/schedule",
        "trainer",
        "logger",
        "experiment",
        "hydra/launcher",
    ):
        assert f"`{group}/`" in readme, group
        for option in options(group):
            assert option in readme, f"{group}/{option} is not described in conf/README.md"
            assert (CONF / group / f"{option}.yaml").read_text().lstrip().startswith("#"), option


def test_default_config_is_the_lstm_adding_job() -> None:
    cfg = compose_train([])
    assert cfg.model.name == "lstm" and cfg.task._target_.endswith("AddingTask")
    assert cfg.optim.name == "adam" and cfg.trainer.steps > 0
    assert isinstance(OmegaConf.to_object(cfg.trainer), TrainerConfig)
    assert isinstance(OmegaConf.to_object(cfg.optim), OptimConfig)
    assert isinstance(OmegaConf.to_object(cfg.logger), LoggerConfig)


@pytest.mark.parametrize("model", options("model"))
def test_every_model_config_builds_its_cell_and_backbone(model: str) -> None:
    cfg = compose_train([f"model={model}"])
    cell = instantiate(cfg.model.cell)
    assert cell.hidden_size == cfg.model.cell.hidden_size
    backbone = cli.backbone_fields(cfg.model)
    assert "cell" not in backbone and "name" not in backbone
    task = get_class(cfg.task._target_)(seed=0, batch_size=2, length=4)
    module = task.build_model(cell, backbone)  # the backbone fields are the model's fields
    assert module.num_layers == cfg.model.num_layers


@pytest.mark.parametrize("task", options("task"))
def test_every_task_config_names_a_task_class(task: str) -> None:
    cfg = compose_train([f"task={task}", "data_dir=/data"])
    cls = get_class(cfg.task._target_)
    assert issubclass(cls, Task)
    if "path" in cfg.task:
        assert cfg.task.path.startswith("/data/")


@pytest.mark.parametrize("search", options("hparams_search"))
def test_every_hparams_search_composes_and_searches_existing_keys(search: str) -> None:
    """Each search preset composes with its experiment, documents itself, and every key it
    searches or fixes is a key of the composed config (a misspelt one would fail only in a
    trial)."""
    assert (CONF / "hparams_search" / f"{search}.yaml").read_text().lstrip().startswith("#")
    assert f"`{search}`" in (CONF / "README.md").read_text()
    experiment = {"mr_optuna": "mr_sentiment", "mr_optuna_lm": "mr_sentiment"}.get(search)
    overrides = [f"hparams_search={search}"] + ([f"experiment={experiment}"] if experiment else [])
    cfg = compose_train(overrides, hydra_config=True)
    OmegaConf.to_object(cfg.trainer)
    assert cfg.hydra.sweeper.params
    absent = object()
    for key, value in cfg.hydra.sweeper.params.items():
        if key in ("model", "task", "optim"):  # a group: its value names options of the group
            assert str(value) in options(key) or str(value).startswith("choice("), (key, value)
        else:
            assert OmegaConf.select(cfg, key, default=absent) is not absent, key


@pytest.mark.parametrize("group", ["optim", "optim/schedule", "trainer", "logger"])
def test_every_typed_option_composes(group: str) -> None:
    for option in options(group):
        cfg = compose_train([f"{group}={option}"])
        node = cfg.optim.schedule if group == "optim/schedule" else cfg[group.split("/")[0]]
        OmegaConf.to_object(node)  # runs the dataclass validation


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_states_command_time_result(experiment: str) -> None:
    header = (CONF / "experiment" / f"{experiment}.yaml").read_text().split("\n\n")[0].lower()
    for word in ("command:", "rnnlab-train", "time", "result"):
        assert word in header, f"experiment/{experiment}.yaml header lacks {word!r}"
    cfg = compose_train([f"experiment={experiment}"], hydra_config=True)
    OmegaConf.to_object(cfg.trainer)
    OmegaConf.to_object(cfg.optim)
    assert cfg.hydra.sweeper.params, "a study preset should pin its sweep"


@pytest.mark.parametrize(
    ("launcher", "target", "plugin"),
    [
        ("local_parallel", "JoblibLauncher", "hydra_plugins.hydra_joblib_launcher"),
        ("slurm", "SlurmLauncher", "hydra_plugins.hydra_submitit_launcher"),
        ("basic", "BasicLauncher", "hydra"),
    ],
)
def test_launcher_configs_compose(launcher: str, target: str, plugin: str) -> None:
    pytest.importorskip(plugin, reason="launcher plugins are the optional `launchers` extra")
    cfg = compose_train([f"hydra/launcher={launcher}"], hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)


def test_sweep_directories_are_named_by_overrides() -> None:
    hydra = OmegaConf.to_container(OmegaConf.load(CONF / "train.yaml").hydra, resolve=False)
    assert hydra["sweep"]["subdir"] == "${hydra.job.override_dirname}"
    cfg = compose_train(["model=gru"], hydra_config=True)
    assert cfg.hydra.job.override_dirname == "model=gru"
    names = cfg.hydra.job.config.override_dirname
    assert names.kv_sep == "=" and names.item_sep == ","


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.stpes=3", "Key 'stpes' not in 'TrainerConfig'"),
        ("trainer.steps=many", "could not be converted to Integer"),
        ("optim.lerning_rate=0.1", "Key 'lerning_rate' not in 'OptimConfig'"),
        ("optim.grad_clip_norm=high", "could not be converted to Float"),
        ("optim.schedule.warmpu=3", "Key 'warmpu' not in 'ScheduleConfig'"),
        ("logger.log_evry=3", "Key 'log_evry' not in 'LoggerConfig'"),
        ("task.lenght=3", "Key 'lenght' is not in struct"),
        ("model=lsmt", "Could not find 'model/lsmt'"),
    ],
)
def test_bad_overrides_fail_at_startup_with_a_clear_message(override: str, message: str) -> None:
    errors = (ConfigCompositionException, ConfigKeyError, ValidationError)
    with pytest.raises(errors) as info:
        compose_train([override])
    text = str(info.value) + str(getattr(info.value, "__cause__", ""))
    assert message in text


@pytest.mark.parametrize(
    ("override", "group", "schema", "message"),
    [
        ("optim.name=adagrad", "optim", OptimConfig, "optim.name must be one of"),
        ("optim.schedule.name=linear", "optim", OptimConfig, "optim.schedule.name must be one"),
        ("trainer.distributed=always", "trainer", TrainerConfig, "trainer.distributed must be"),
        ("trainer.batch_size=0", "trainer", TrainerConfig, "trainer.batch_size must be >= 1"),
        ("logger.log_every=0", "logger", LoggerConfig, "logger.log_every must be >= 1"),
    ],
)
def test_bad_values_fail_at_startup(override: str, group: str, schema: type, message: str) -> None:
    cfg = compose_train([override])
    with pytest.raises(ValueError, match=message):
        cli.as_dataclass(cfg[group], schema)


def test_config_dir_can_be_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli.config_dir() == CONF
    (tmp_path / "train.yaml").write_text("seed: 0\n")
    monkeypatch.setenv("RNNLAB_CONF", str(tmp_path))
    assert cli.config_dir() == tmp_path.resolve()


def test_snapshot_and_flatten() -> None:
    cfg = compose_train(["model.cell.hidden_size=8"])
    snapshot = cli.config_snapshot(cfg)
    assert snapshot["model.cell.hidden_size"] == 8 and snapshot["seed"] == 0
    assert cli.flatten({"a": {"b": [1, 2]}}) == {"a.b": "[1, 2]"}


# ------------------------------------------------------------------------ optimisers, schedules


def test_schedules_follow_their_formulas() -> None:
    lr = 0.5
    # One warm-up for every schedule (optax.linear_schedule): rate 0 at the first update, the
    # full rate at update `warmup`.
    constant = build_schedule(lr, ScheduleConfig(name="constant", warmup=4), 100)
    assert [float(constant(s)) for s in (0, 1, 4, 10)] == pytest.approx([0, lr / 4, lr, lr])
    cosine = build_schedule(lr, ScheduleConfig(name="cosine", warmup=10, min_lr_ratio=0.1), 110)
    assert [float(cosine(s)) for s in (0, 1, 10)] == pytest.approx([0, lr / 10, lr])
    step_warm = ScheduleConfig(name="step", warmup=2, decay_start=3, decay_factor=0.5)
    stepped = build_schedule(lr, step_warm, 100)  # decay counted after the warm-up
    assert [float(stepped(s)) for s in (1, 2, 4, 5, 6)] == pytest.approx(
        [lr / 2, lr, lr, lr / 2, lr / 4]
    )
    assert float(cosine(60)) == pytest.approx(lr * (0.1 + 0.9 * 0.5), rel=1e-5)
    assert float(cosine(110)) == pytest.approx(lr * 0.1, rel=1e-5)
    # Zaremba et al. (2014), small model: 4 epochs at lr, then halve every epoch.
    step = build_schedule(
        1.0,
        ScheduleConfig(name="step", decay_start=4, decay_every=1, decay_factor=0.5, unit="epoch"),
        1000,
        steps_per_epoch=10,
    )
    assert [float(step(e * 10)) for e in range(7)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]
    assert float(step(39)) == 1.0
    with pytest.raises(ValueError, match="unit=epoch"):
        build_schedule(1.0, ScheduleConfig(name="step", unit="epoch"), 10, steps_per_epoch=None)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "rmsprop"])
def test_every_optimizer_descends_a_quadratic(name: str) -> None:
    config = OptimConfig(
        name=name, learning_rate=0.05, momentum=0.5, weight_decay=0.01, grad_clip_norm=1.0
    )
    optimizer, schedule = build_optimizer(config, total_steps=50)
    params = {"w": jnp.ones((3, 3)), "b": jnp.ones(3)}
    state = optimizer.init(params)

    def loss(p):
        return jnp.sum(jnp.square(p["w"])) + jnp.sum(jnp.square(p["b"]))

    start = loss(params)
    for _ in range(20):
        updates, state = optimizer.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert float(loss(params)) < float(start)
    assert float(schedule(0)) == pytest.approx(0.05)


def test_gradient_clipping_and_decay_mask() -> None:
    optimizer, _ = build_optimizer(
        OptimConfig(name="sgd", learning_rate=1.0, grad_clip_norm=1.0, weight_decay=0.5), 10
    )
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    grads = {"w": jnp.full((2, 2), 100.0), "b": jnp.zeros(2)}
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    # clipped gradient has norm 1 (all in w); decay adds 0.5 * w to matrices only
    np.testing.assert_allclose(-updates["w"], 0.5 + 0.5, rtol=1e-6)
    np.testing.assert_allclose(updates["b"], 0.0)
    assert math.isclose(float(optax.tree.norm({"w": -updates["w"] - 0.5})), 1.0, rel_tol=1e-6)


def test_element_clipping_comes_before_the_norm_and_rmsprop_starts_from_initial_scale() -> None:
    """grad_clip_value clips each element, then grad_clip_norm scales the clipped gradient;
    RMSProp's first update is lr * g / sqrt(decay * initial_scale + (1 - decay) * g^2)."""
    sgd, _ = build_optimizer(
        OptimConfig(name="sgd", learning_rate=1.0, grad_clip_value=1.0, grad_clip_norm=1.0), 10
    )
    params = {"w": jnp.zeros(4)}
    grads = {"w": jnp.array([100.0, -100.0, 0.5, 0.0])}
    updates, _ = sgd.update(grads, sgd.init(params), params)
    clipped = np.array([1.0, -1.0, 0.5, 0.0])
    np.testing.assert_allclose(-updates["w"], clipped / np.linalg.norm(clipped), rtol=1e-6)
    for scale in (0.0, 1e-3):
        rms, _ = build_optimizer(
            OptimConfig(name="rmsprop", learning_rate=0.1, decay=0.9, eps=1e-12,
                        initial_scale=scale), 10,
        )  # fmt: skip
        g = jnp.array([0.01, 0.1])
        updates, _ = rms.update({"w": g}, rms.init({"w": jnp.zeros(2)}))
        expected = 0.1 * np.asarray(g) / np.sqrt(0.9 * scale + 0.1 * np.asarray(g) ** 2)
        np.testing.assert_allclose(-updates["w"], expected, rtol=1e-4)
