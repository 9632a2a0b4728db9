"""Command-line front ends: `rnnlab-train` (Hydra) and `rnnlab-sample` (argparse).

`experiments/train.py` and `experiments/sample.py` are the same commands as scripts.

This is the only module of the package that imports Hydra; the library (`rnnlab.train`,
`rnnlab.tasks`, ...) takes built objects and plain values. Here a composed `DictConfig` becomes:

    cell      = instantiate(cfg.model.cell)                   # conf/cell/*.yaml (_target_)
    task      = instantiate(cfg.task, seed=..., batch_size=...)   # conf/task/*.yaml (_target_)
    model     = task.build_model(cell, backbone fields of cfg.model)
    optimizer = build_optimizer(OptimConfig)                  # conf/optim/ (schema-checked)
    train(task, model, optimizer, ..., TrainerConfig, LoggerConfig, run_dir=Hydra's output dir)

The trainer, optimiser and logger groups are typed by dataclass schemas registered in Hydra's
ConfigStore (`register_configs`), so a misspelt key or a wrong type stops the run at start-up.

Where the configs live (`config_dir`): `$RNNLAB_CONF` if set, else the copy of `conf/` a wheel
carries inside the package (`rnnlab/conf/`, mapped there by setup.py), else the `conf/` folder of
the source checkout this package was imported from (`pip install -e .`, or `experiments/*.py`).
A user's own config directory joins them through Hydra's `--config-dir` (its groups add options
to rnnlab's), and the launch directory is importable, so its `_target_`s resolve
(`project_importable`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rnnlab import distributed
from rnnlab.checks import check_int
from rnnlab.errors import (
    ConfigError,
    RunNotFoundError,
    UserError,
    env_flag_value,
    report_user_errors,
)
from rnnlab.optim import OptimConfig, build_optimizer
from rnnlab.progress import QUIET_LOGGERS, SweepMonitor
from rnnlab.rundir import (
    CONFIG_FILE,
    HYDRA_DIR,
    HYDRA_FILE,
    OVERRIDES_FILE,
    RESOLVED_CONFIG,
)
from rnnlab.train import (
    DivergenceError,
    TrainerConfig,
    configure_compilation_cache,
    holds_a_run,
    snapshot_diff,
    train,
)
from rnnlab.writers import NOT_HPARAMS, LoggerConfig, write_results

log = logging.getLogger(__name__)

MODEL_KEYS_NOT_BACKBONE = ("name", "cell")


def config_dir() -> Path:
    """rnnlab's config directory, the one holding `train.yaml` (see the module docstring).

    The installed package's copy comes before the checkout's `conf/` so that a wheel never reads
    a `conf/` folder that happens to sit next to it in `site-packages`.

    Raises:
        UserError: none of the candidates holds `train.yaml`.
    """
    package = Path(__file__).resolve().parent
    candidates = [package / "conf", package.parent / "conf"]
    if os.environ.get("RNNLAB_CONF"):
        candidates.insert(0, Path(os.environ["RNNLAB_CONF"]))
    for candidate in candidates:
        if (candidate / "train.yaml").is_file():
            return candidate.resolve()
    raise UserError(
        "cannot find rnnlab's config directory (looked in: "
        + ", ".join(str(c) for c in candidates)
        + "). Reinstall rnnlab (`pip install rnnlab-*.whl`, or `pip install -e .` in a checkout) "
        "or set RNNLAB_CONF=/path/to/rnnlab/conf."
    )


def project_importable(directory: str | os.PathLike[str] | None = None) -> None:
    """Puts `directory` (default: the launch directory) on `sys.path`, after the installed
    packages, so that a user project's `_target_: my_project.tasks.MyTask` imports when
    `rnnlab-train --config-dir conf` runs from the project's root, as `python -m` would.

    A console script's `sys.path` starts with its `bin/` folder, not the launch directory.
    Appended, not prepended: a file of the project never shadows an installed library.
    """
    path = os.path.abspath(directory if directory is not None else os.getcwd())
    if path not in sys.path:
        sys.path.append(path)


def cell_names() -> list[str]:
    """Every cell rnnlab knows: the files of `conf/cell/` (discovered, no list kept anywhere)."""
    return sorted(p.stem for p in (config_dir() / "cell").glob("*.yaml"))


def cell_config(name: str) -> DictConfig:
    """`conf/cell/<name>.yaml` with its `defaults` list (other cell files, `_self_`) merged, for
    `hydra.utils.instantiate` (what `model/*.yaml` composes under `model.cell`)."""
    cfg = OmegaConf.load(config_dir() / "cell" / f"{name}.yaml")
    defaults = cfg.pop("defaults", None)
    if defaults is None:
        return cfg
    parts = [cfg if item == "_self_" else cell_config(str(item)) for item in defaults]
    return OmegaConf.merge(*parts)


def register_configs() -> None:
    """Registers the dataclass schemas that type `trainer/`, `optim/` and `logger/` configs."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(group="trainer", name="base_trainer", node=TrainerConfig)
    store.store(group="optim", name="base_optim", node=OptimConfig)
    store.store(group="logger", name="base_logger", node=LoggerConfig)


def register_plugins() -> None:
    """Registers rnnlab's Hydra plugins with Hydra by hand: its scan of the `hydra_plugins`
    namespace finds them in an installed wheel but not through an editable install's import
    hook (`pip install -e .`). Without the `launchers` extra there is nothing to register."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.rnnlab_sweeper import resumable_optuna

    if resumable_optuna.OptunaSweeper is not None:
        Plugins.instance().register(resumable_optuna.ResumableOptunaSweeper)


def as_dataclass(node: Any, cls: type) -> Any:
    """`node` (a DictConfig, typed or not) as an instance of the dataclass `cls`."""
    value = OmegaConf.to_object(node) if isinstance(node, DictConfig) else node
    return value if isinstance(value, cls) else cls(**value)


def backbone_fields(model_cfg: DictConfig) -> dict[str, Any]:
    """The backbone fields of a `model/*.yaml` (everything but its name and cell)."""
    fields = OmegaConf.to_container(model_cfg, resolve=True)
    return {k: v for k, v in fields.items() if k not in MODEL_KEYS_NOT_BACKBONE}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}` (lists become strings)."""
    if not isinstance(tree, Mapping):
        return {prefix: tree if isinstance(tree, bool | int | float | str | None) else str(tree)}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_snapshot(cfg: DictConfig) -> dict[str, Any]:
    """Flat resolved values of the keys that define a run (stored in its checkpoints)."""
    snapshot: dict[str, Any] = {"seed": cfg.seed}
    for group in ("model", "task", "optim", "trainer"):
        snapshot.update(flatten(OmegaConf.to_container(cfg[group], resolve=True), group))
    return snapshot


def hydra_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The run's hyperparameters for TensorBoard: the group choices, the seed and every
    command-line override (swept or not), with resolved values."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    choices = dict(hydra_cfg.runtime.choices)
    hparams: dict[str, Any] = {g: choices[g] for g in ("model", "task", "optim") if g in choices}
    hparams["seed"] = cfg.seed
    for override in hydra_cfg.overrides.task:
        key, _, raw = override.partition("=")
        key = key.lstrip("+~")
        if key in NOT_HPARAMS:
            continue
        if key in choices:
            hparams[key] = choices[key]
            continue
        value = OmegaConf.select(cfg, key, default=raw)
        hparams[key] = value if isinstance(value, bool | int | float | str) else str(value)
    return hparams


def load_config(
    run_dir: str | os.PathLike[str], data_dir: str | None = None, **overrides: Any
) -> DictConfig:
    """The composed config of a run directory.

    Args:
        run_dir: a run directory of `rnnlab-train`.
        data_dir: replaces the config's `data_dir` (where data-backed tasks find their files).
        **overrides: dotted keys to set, e.g. `{"task.eval_max_windows": 4}`.

    Raises:
        RunNotFoundError: `run_dir` is not a directory, or has no `.hydra/config.yaml` (the
            message names the run directories inside a sweep directory given instead).
        ConfigError: the config file is damaged (not a YAML mapping).
    """
    run_dir = Path(run_dir)
    path = run_dir / HYDRA_DIR / CONFIG_FILE
    if not run_dir.is_dir():
        what = "is a file" if run_dir.exists() else "does not exist"
        raise RunNotFoundError(f"{run_dir} {what}; give a run directory of rnnlab-train")
    if not path.is_file():
        raise RunNotFoundError(
            f"{run_dir} is not a run directory: it has no {HYDRA_DIR}/{CONFIG_FILE}"
            f"{_sweep_hint(run_dir)}; give a directory rnnlab-train wrote "
            "(runs/<task>/<model>/<time>, or one job directory of a sweep)"
        )
    try:
        cfg = OmegaConf.load(path)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        problem = " ".join(str(err).split())
        raise ConfigError(f"{path} is damaged, not readable YAML ({problem})") from err
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path} is damaged: it holds a {type(cfg).__name__}, not a mapping")
    _rename_saved_keys(cfg)
    if data_dir is not None:
        cfg.data_dir = str(data_dir)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def _sweep_hint(path: Path) -> str:
    """Where `path` holds run directories (a sweep): a hint to give those instead."""
    try:
        jobs = sorted(p for p in path.iterdir() if (p / HYDRA_DIR / CONFIG_FILE).is_file())
    except OSError:
        return ""
    if not jobs:
        return ""
    return f" (it holds {len(jobs)} run directories, e.g. {jobs[0]}: give those)"


def build_task_and_model(cfg: DictConfig) -> tuple[Any, Any]:
    """`(task, model)` a composed config describes: the cell, the backbone fields (with the
    `trainer.unroll` override), the task with the run's seed and batch size, and its model."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from rnnlab.tasks.base import check_config_keys

    backbone = backbone_fields(cfg.model)
    unroll = OmegaConf.select(cfg, "trainer.unroll", default=None)
    if unroll is not None:
        backbone["unroll"] = unroll
    batch_size = int(OmegaConf.select(cfg, "trainer.batch_size", default=1))
    check_config_keys(OmegaConf.select(cfg, "task._target_"), [str(k) for k in cfg.task])
    task = instantiate(cfg.task, seed=int(cfg.seed), batch_size=batch_size)
    try:
        cell = instantiate(cfg.model.cell)
        return task, task.build_model(cell, backbone)
    except (ValueError, InstantiationException) as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) else err
        if isinstance(cause, UserError) or not isinstance(cause, ValueError | TypeError):
            raise  # a data error (tasks read their data when building the model) says its own
        # The cell and model constructors check their arguments (ValueError): a config value.
        raise ConfigError(f"model: {cause} (set in model/*.yaml or as model.<key>=...)") from err


def saved_run(
    run_dir: str | os.PathLike[str], data_dir: str | None = None, **overrides: Any
) -> tuple[dict[str, Any], Any, Any, int]:
    """`(config, task, model, seed)` of a run directory, built as `build` did for the run
    (`load_config` + `build_task_and_model`); the config as plain dicts and lists, `${...}`
    unresolved. What `rnnlab.diagnostics` takes; raises as `load_config` does."""
    cfg = load_config(run_dir, data_dir, **overrides)
    task, model = build_task_and_model(cfg)
    return OmegaConf.to_container(cfg), task, model, int(cfg.seed)


def restore_run_dir(
    run_dir: str | os.PathLike[str],
    checkpoint: str | int | None = "best",
    *,
    init: bool = False,
    data_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """A run directory's task, model and params (`rnnlab.diagnostics.LoadedRun`), from its saved
    config alone: `saved_run` builds the task and model, `rnnlab.diagnostics.restore_run`
    restores the checkpoint (or, with `init`, the parameters the run started from).

    Args:
        run_dir: the run directory.
        checkpoint: "best", "latest"/None or a step number.
        init: the run's initial parameters instead of a checkpoint.
        data_dir: replaces the config's `data_dir` (data-backed tasks: char_lm, sentiment, ...).
        overrides: dotted config keys to set before building (e.g. smaller evaluation sets).

    Raises:
        RunNotFoundError, ConfigError, RunDirError: not a run directory, a damaged config, no or
            a damaged checkpoint.
    """
    from rnnlab.diagnostics.loading import restore_run

    cfg, task, model, seed = saved_run(run_dir, data_dir, **dict(overrides or {}))
    return restore_run(run_dir, cfg, task, model, seed, checkpoint, init=init)


def saved_model_name(run_dir: str | os.PathLike[str]) -> str:
    """The model config's `name` of a run directory ("model" where it has none)."""
    return str(load_config(run_dir).model.get("name", "model"))


def build_cell(name: str, hidden_size: int) -> Any:
    """The cell of `conf/cell/<name>.yaml` with `hidden_size` units."""
    from hydra.utils import instantiate

    cfg = cell_config(name)
    cfg.hidden_size = hidden_size
    return instantiate(cfg)


SEED_LIMIT = 2**32


def run_seed(cfg: DictConfig) -> int:
    """The config's `seed`, checked: an integer in [0, 2**32) (what `jax.random.PRNGKey` takes).

    Raises:
        ConfigError: naming `seed`.
    """
    return check_int("seed", OmegaConf.select(cfg, "seed", default=None), 0, SEED_LIMIT - 1)


RUN_IDENTITY = ("model.", "task.", "seed", "trainer.batch_size")
"""Config keys a run directory's run is identified by: a resumed or re-run command must share
them with what the directory holds (else it would mix two experiments or data streams)..."""
NOT_IDENTITY = ("path", "eval_batch_size", "eval_batches", "eval_max_windows", "eval_max_batches")
"""...except where the data lives and how much of it evaluation reads (key suffixes), and the
`.sample_*` settings of language models' text samples."""
NOT_COMPARED = ("trainer.quiet", "trainer.compilation_cache_dir", "trainer.fault_", "trainer.skip_")
"""Keys that say how a run is watched, not what it computes (`trainer.fault_*`: testing aids
that the configs of runs saved by earlier versions hold)."""


IMPLIED_BEFORE = {
    "model.backend": "auto",
    "model.input_projection": "hoisted",
    "model.matmul_dtype": "float32",
    "model.block": "none",
    "model.conv_width": 4,
    "model.mlp_expansion": None,
    "model.slstm_at": "[]",
    "task.windows": "stateful",
    "task.loss_positions": "recall",
    "model.word_dropout": 0.0,
    "optim.grad_clip_value": None,
    "optim.initial_scale": 0.0,
    "trainer.init_from": None,
    "trainer.init_checkpoint": "best",
    "trainer.init_params": None,
}
"""Keys that the configs of runs saved by earlier versions lack, with the value those runs used
(what the code did without the key), so that such runs still compare equal and resume. A key
is implied only where the current config has it (`task.windows`: language-model tasks only)."""


RENAMED_KEYS = {"model.backward": "model.vjp", "model.kernel": "model.backend"}
"""Keys that runs saved by earlier versions hold under another name (`backward` was also a
direction and a native-kernel function; `kernel` is also a Flax weight): read under the new one."""


def _rename_saved_keys(cfg: DictConfig) -> None:
    """Moves `RENAMED_KEYS` of a saved config to their current names, in place."""
    for old, new in RENAMED_KEYS.items():
        parent, _, leaf = old.rpartition(".")
        node = OmegaConf.select(cfg, parent)
        if isinstance(node, DictConfig) and leaf in node:
            value = node.pop(leaf)
            node.setdefault(new.rpartition(".")[2], value)


def compare_configs(
    saved: Mapping[str, Any], current: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """`rnnlab.train.ConfigCompare` for `config_snapshot`s: the `RUN_IDENTITY` keys must agree,
    the others may change (more steps, another learning rate), `NOT_COMPARED` keys are ignored,
    and keys an older saved config lacks take their `IMPLIED_BEFORE` value (keys it saved under
    an earlier name, `RENAMED_KEYS`, their current one)."""
    kept = lambda snapshot: {k: v for k, v in snapshot.items() if not k.startswith(NOT_COMPARED)}
    implied = {k: v for k, v in IMPLIED_BEFORE.items() if k in current}
    saved = {**implied, **{RENAMED_KEYS.get(k, k): v for k, v in saved.items()}}
    diff = snapshot_diff(kept(saved), kept(current))
    strict = [
        line
        for key, line in diff.items()
        if key.startswith(RUN_IDENTITY) and not key.endswith(NOT_IDENTITY) and ".sample_" not in key
    ]
    return strict, [line for line in diff.values() if line not in strict]


def build(cfg: DictConfig) -> dict[str, Any]:
    """Everything `rnnlab.train.train` needs, built from a composed config.

    Returns:
        `{"task", "model", "optimizer", "schedule", "trainer", "logger", "total_steps"}`.
    """
    from rnnlab.train import resolve_steps

    run_seed(cfg)
    trainer = as_dataclass(cfg.trainer, TrainerConfig)
    optim = as_dataclass(cfg.optim, OptimConfig)
    logger = as_dataclass(cfg.logger, LoggerConfig)
    task, model = build_task_and_model(cfg)
    total_steps = resolve_steps(trainer, task.steps_per_epoch)
    optimizer, schedule = build_optimizer(optim, total_steps, task.steps_per_epoch)
    return {
        "task": task,
        "model": model,
        "optimizer": optimizer,
        "schedule": schedule,
        "trainer": trainer,
        "logger": logger,
        "total_steps": total_steps,
    }


def train_from_config(
    cfg: DictConfig,
    run_dir: str | os.PathLike[str],
    hparams: Mapping[str, Any] | None = None,
    on_accept: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Builds and trains the run a composed config describes, in `run_dir`.

    A failure once the run directory has been accepted for this run (or in a directory that
    held no run before) writes `results.json` with `status` "failed" (or "diverged") and the
    error, then re-raises, so a sweep records every job's outcome. A run refused before that
    (bad config, another experiment in the directory) writes nothing: the saved run stays
    byte-identical.

    Args:
        on_accept: passed to `rnnlab.train.train` (called before the first write).
    """
    run_dir = Path(run_dir).absolute()
    held_a_run = holds_a_run(run_dir)
    accepted = False

    def accept() -> None:
        nonlocal accepted
        accepted = True
        if on_accept is not None:
            on_accept()

    try:
        trainer = as_dataclass(cfg.trainer, TrainerConfig)
        distributed.maybe_initialize(trainer.distributed)
        configure_compilation_cache(trainer.compilation_cache_dir)
        parts = build(cfg)
        return train(
            parts["task"],
            parts["model"],
            parts["optimizer"],
            parts["schedule"],
            parts["trainer"],
            parts["logger"],
            seed=run_seed(cfg),
            run_dir=run_dir,
            total_steps=parts["total_steps"],
            hparams=hparams,
            config_snapshot=config_snapshot(cfg),
            compare_configs=compare_configs,
            on_accept=accept,
        )
    except Exception as err:
        status = "diverged" if isinstance(err, DivergenceError) else "failed"
        log.error("Run failed (%s): %s", status, err)
        if not distributed.is_main_process() or (held_a_run and not accepted):
            raise
        if not accepted and on_accept is not None:
            # A new run directory: keep the config that was asked for beside the failure, so
            # that aggregation can say which job of a sweep failed.
            with contextlib.suppress(Exception):
                on_accept()
        run_dir.mkdir(parents=True, exist_ok=True)
        write_results(
            run_dir,
            {
                "status": status,
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(limit=-8),
                "run_dir": str(run_dir),
                "hparams": dict(hparams or {}),
            },
        )
        raise


def save_run_config(run_dir: Path, attempt_dir: Path, cfg: DictConfig) -> None:
    """Makes this attempt's config the run's: copies what Hydra wrote for the attempt
    (`config.yaml`, `overrides.yaml`, `hydra.yaml`) into `<run_dir>/.hydra/` and adds the
    resolved copy `resolved.yaml` (Hydra's keeps interpolations such as `${data_dir}`)."""
    saved = run_dir / HYDRA_DIR
    saved.mkdir(parents=True, exist_ok=True)
    if attempt_dir.resolve() != saved.resolve():
        for name in (CONFIG_FILE, OVERRIDES_FILE, HYDRA_FILE):
            if (attempt_dir / name).is_file():
                shutil.copyfile(attempt_dir / name, saved / (name + ".tmp"))
                os.replace(saved / (name + ".tmp"), saved / name)
    OmegaConf.save(cfg, saved / (RESOLVED_CONFIG + ".tmp"), resolve=True)
    os.replace(saved / (RESOLVED_CONFIG + ".tmp"), saved / RESOLVED_CONFIG)


def _quiet_third_party_logs() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


class CreateSweepDir(Callback):
    """A Hydra callback (`hydra.callbacks`) that creates the sweep directory when a multirun
    starts, before the sweeper runs: Optuna's study storage (`sqlite:///<sweep dir>/optuna.db`,
    `conf/hparams_search/`) lives there, and Hydra makes the directory only with the first job.
    Every other event keeps `Callback`'s default (nothing)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)


def job_label() -> str:
    """`[#3 model=lstm,seed=0]` inside a job of a multirun (its number and its values of the
    swept keys, `SWEPT_KEYS_ENV`; all the overrides that name its directory where those are not
    known), else "": the jobs of a parallel launcher write to one terminal."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return ""
    job = HydraConfig.get().job
    if HydraConfig.get().mode != RunMode.MULTIRUN or job.get("num") is None:
        return ""
    swept = set(filter(None, os.environ.get(SWEPT_KEYS_ENV, "").split(",")))
    overrides = [o for o in job.override_dirname.split(",") if o]
    shown = [o for o in overrides if o.split("=", 1)[0] in swept] if swept else overrides
    return f"[#{job.num} {','.join(shown)}]" if shown else f"[#{job.num}]"


class JobFormatter(logging.Formatter):
    """The log format of `conf/hydra/job_logging/rnnlab.yaml`: `%(job)s` is `job_label()`, or
    the record's own `job` (the sweep monitor's lines say `[sweep]`)."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "job", None) is None:
            record.job = job_label()
        return super().format(record)


SWEPT_KEYS_ENV = "RNNLAB_SWEPT_KEYS"
"""Set by `SweepProgress` for the jobs of a multirun (worker processes inherit it): the keys
that vary between jobs, which `job_label` keeps of a job's overrides."""


def sweep_plan(config: DictConfig) -> tuple[int | None, list[str]]:
    """`(number of jobs, swept keys)` of a multirun. For Hydra's basic sweeper: the product of
    the swept values (`hydra.sweeper.params` and the command line, split as the sweeper splits
    them) and the keys given several values; for another sweeper: its `n_trials` (None where it
    has none) and its `params` keys."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    params = dict(sweeper.get("params") or {})
    if not str(sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        trials = sweeper.get("n_trials")
        return (int(trials) if trials else None), list(params)
    given = [f"{key}={value}" for key, value in params.items()]
    try:
        overrides = OverridesParser.create().parse_overrides([*given, *config.hydra.overrides.task])
    except Exception:  # noqa: BLE001  (e.g. a glob() sweep, which needs Hydra's config loader)
        return None, []
    total = sum(len(batch) for batch in BasicSweeper.split_arguments(overrides, None))
    return total, [o.get_key_element() for o in overrides if o.is_sweep_override()]


class SweepProgress(Callback):
    """A Hydra callback (`hydra.callbacks` in conf/train.yaml) that logs a sweep's progress —
    jobs done, failed and running, elapsed time and ETA — every `logger.progress_every_s`
    seconds while a multirun runs, and a last line when it ends (`rnnlab.progress.SweepMonitor`:
    read from the run directories, so alike for every launcher)."""

    monitor: SweepMonitor | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its thread: parallel launchers send the callbacks to their workers."""
        return {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        every_s = float(OmegaConf.select(config, "logger.progress_every_s", default=30.0))
        total, swept = sweep_plan(config)
        os.environ[SWEPT_KEYS_ENV] = ",".join(swept)
        log.info("Sweep of %s jobs in %s", total or "an open number of", config.hydra.sweep.dir)
        self.monitor = SweepMonitor(config.hydra.sweep.dir, total, every_s, log).start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(SWEPT_KEYS_ENV, None)
        if self.monitor is not None:
            self.monitor.stop()
            self.monitor = None


def hydra_train(cfg: DictConfig) -> float | None:
    """The `@hydra.main` task function: trains in Hydra's output directory.

    Returns:
        The best value of the monitored validation metric (for Hydra sweepers that optimise).
    """
    from hydra.core.hydra_config import HydraConfig

    _quiet_third_party_logs()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)

    def on_accept() -> None:
        if hydra_cfg.output_subdir is not None and distributed.is_main_process():
            save_run_config(run_dir, run_dir / hydra_cfg.output_subdir, cfg)

    results = train_from_config(cfg, run_dir, hydra_hparams(cfg), on_accept)
    return results["best"]["value"]


def sample_from_run(
    run_dir: str | os.PathLike[str],
    prompt: str,
    num_tokens: int,
    checkpoint: str | int | None = "best",
    temperature: float = 1.0,
    top_k: int = 0,
    num_samples: int = 1,
    seed: int = 0,
) -> tuple[list[str], int]:
    """Text sampled from a language-model run's checkpoint.

    Args:
        run_dir: a run directory of a `char_lm`/`word_lm` task (with `.hydra/config.yaml`,
            `vocab.json` and `checkpoints/`).
        prompt: text to continue.
        num_tokens: tokens to generate.
        checkpoint: "best", "latest" (or None) or a step number.
        temperature, top_k: sampling settings.
        num_samples: independent samples.
        seed: sampling seed.

    Returns:
        `(samples, step of the checkpoint used)`.
    """
    import jax
    import jax.numpy as jnp
    from hydra.utils import get_class, instantiate

    from rnnlab.checkpoint import parse_checkpoint, restore_params
    from rnnlab.data.text import Vocabulary
    from rnnlab.tasks.language_model import VOCAB_FILE, build_language_model, sample

    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    if not (run_dir / VOCAB_FILE).is_file():
        raise UserError(
            f"{run_dir / VOCAB_FILE} not found: sampling needs a language-model run "
            "(task=char_lm or task=word_lm)"
        )
    task_class = get_class(cfg.task._target_)
    vocab = Vocabulary.load(run_dir / VOCAB_FILE)
    model = build_language_model(
        instantiate(cfg.model.cell),
        backbone_fields(cfg.model),
        len(vocab),
        bool(cfg.task.get("tie_weights", False)),
    )
    target = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))["params"]
    params, used = restore_params(run_dir, target, parse_checkpoint(checkpoint))
    texts = sample(
        model,
        params,
        vocab,
        prompt,
        num_tokens,
        jax.random.PRNGKey(seed),
        temperature,
        top_k,
        num_samples,
        separator=getattr(task_class, "separator", ""),
    )
    return texts, used


def _read_prompt_file(path: str) -> str:
    """The text of `--prompt-file`, with a message naming it when it cannot be read."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"--prompt-file {path}: not UTF-8 text (byte {err.start}); give a text file"
        ) from None
    except OSError as err:
        raise UserError(f"--prompt-file {path}: {err.strerror or err}") from None


def sample_main(argv: list[str] | None = None) -> None:
    """Console script `rnnlab-sample` (also `experiments/sample.py`).

    A plain argparse command: run directories of sweeps are named by their overrides
    (`model=lstm,seed=0`), which Hydra's override grammar would make the user quote.
    Arguments are checked as they are parsed; user errors are one line (`rnnlab.errors`).
    """
    from rnnlab import argcheck
    from rnnlab.argcheck import float_at_least, int_at_least

    parser = argparse.ArgumentParser(
        prog="rnnlab-sample",
        description="Sample text from a language-model run (task=char_lm or word_lm).",
    )
    parser.add_argument("run_dir", help="a run directory of rnnlab-train")
    parser.add_argument("--prompt", default="\n", help="text to continue (default: newline)")
    parser.add_argument(
        "--prompt-file",
        help="read the prompt from this file (a few lines of context give a model trained with "
        "stateful truncated BPTT a warm state to continue from)",
    )
    parser.add_argument("--num-tokens", type=int_at_least(1), default=500)
    parser.add_argument("--num-samples", type=int_at_least(1), default=1)
    parser.add_argument("--temperature", type=float_at_least(0.0), default=0.8, help="0 is greedy")
    parser.add_argument("--top-k", type=int_at_least(0), default=0, help="0 keeps every token")
    parser.add_argument(
        "--checkpoint", type=argcheck.checkpoint, default="best", help='"best", "latest" or a step'
    )
    parser.add_argument("--seed", type=int_at_least(0, SEED_LIMIT - 1), default=0)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    args = parser.parse_args(argv)
    report_user_errors("rnnlab-sample", _sample, args, debug=args.debug)


def _sample(args: Any) -> None:
    _quiet_third_party_logs()
    run_dir = Path(args.run_dir)
    if args.prompt_file:
        prompt = _read_prompt_file(args.prompt_file)
    else:  # let "\n" and "\t" typed on the command line mean newline and tab
        prompt = args.prompt.replace("\\n", "\n").replace("\\t", "\t")
    try:
        texts, step = sample_from_run(
            run_dir,
            prompt,
            args.num_tokens,
            args.checkpoint,
            args.temperature,
            args.top_k,
            args.num_samples,
            args.seed,
        )
    except KeyError as err:  # a prompt token the vocabulary does not have
        raise UserError(f"--prompt: {err.args[0]}; use tokens of the training text") from None
    for index, text in enumerate(texts):
        print(f"--- sample {index} (checkpoint step {step}) ---\n{text}")


def train_main() -> None:
    """Console script `rnnlab-train`: `@hydra.main` over `conf/train.yaml`.

    Hydra is told to re-raise (`HYDRA_FULL_ERROR=1`) so that `report_user_errors` prints a
    user error as one line; `HYDRA_FULL_ERROR=1` or `RNNLAB_DEBUG=1` set by the user shows its
    traceback, and a programming error always shows it.
    """
    import hydra

    asked = os.environ.get("HYDRA_FULL_ERROR")

    def main() -> None:
        register_configs()
        register_plugins()
        project_importable()
        hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")(
            hydra_train
        )()

    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        report_user_errors("rnnlab-train", main, debug=env_flag_value(asked))
    finally:
        if asked is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = asked
