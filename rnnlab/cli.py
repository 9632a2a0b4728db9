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

Where the configs live: `$RNNLAB_CONF` if set, else the `conf/` folder of the source checkout
this package was imported from (a `pip install -e .` install), else `./conf`.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab import distributed
from rnnlab.optim import OptimConfig, build_optimizer
from rnnlab.train import NonFiniteLossError, TrainerConfig, configure_compilation_cache, train
from rnnlab.writers import NOT_HPARAMS, RESOLVED_CONFIG, LoggerConfig, write_results

log = logging.getLogger(__name__)

MODEL_KEYS_NOT_BACKBONE = ("name", "cell")


def config_dir() -> Path:
    """The `conf/` directory (see the module docstring).

    Raises:
        FileNotFoundError: none of the candidates holds `train.yaml`.
    """
    candidates = []
    if os.environ.get("RNNLAB_CONF"):
        candidates.append(Path(os.environ["RNNLAB_CONF"]))
    candidates += [Path(__file__).resolve().parents[1] / "conf", Path.cwd() / "conf"]
    for candidate in candidates:
        if (candidate / "train.yaml").is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        "cannot find rnnlab's conf/ directory (looked in: "
        + ", ".join(str(c) for c in candidates)
        + "). Install rnnlab from a source checkout with `pip install -e .`, run from the "
        "checkout's root, or set RNNLAB_CONF=/path/to/rnnlab/conf."
    )


def register_configs() -> None:
    """Registers the dataclass schemas that type `trainer/`, `optim/` and `logger/` configs."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(group="trainer", name="base_trainer", node=TrainerConfig)
    store.store(group="optim", name="base_optim", node=OptimConfig)
    store.store(group="logger", name="base_logger", node=LoggerConfig)


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
        FileNotFoundError: no `.hydra/config.yaml` in `run_dir`.
    """
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} an rnnlab run directory?")
    cfg = OmegaConf.load(path)
    if data_dir is not None:
        cfg.data_dir = str(data_dir)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def build_task_and_model(cfg: DictConfig) -> tuple[Any, Any]:
    """`(task, model)` a composed config describes: the cell, the backbone fields (with the
    `trainer.unroll` override), the task with the run's seed and batch size, and its model."""
    from hydra.utils import instantiate

    backbone = backbone_fields(cfg.model)
    unroll = OmegaConf.select(cfg, "trainer.unroll", default=None)
    if unroll is not None:
        backbone["unroll"] = unroll
    batch_size = int(OmegaConf.select(cfg, "trainer.batch_size", default=1))
    task = instantiate(cfg.task, seed=int(cfg.seed), batch_size=batch_size)
    return task, task.build_model(instantiate(cfg.model.cell), backbone)


def build(cfg: DictConfig) -> dict[str, Any]:
    """Everything `rnnlab.train.train` needs, built from a composed config.

    Returns:
        `{"task", "model", "optimizer", "schedule", "trainer", "logger", "total_steps"}`.
    """
    from rnnlab.train import resolve_steps

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
    cfg: DictConfig, run_dir: str | os.PathLike[str], hparams: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Builds and trains the run a composed config describes, in `run_dir`.

    A failure writes `results.json` with `status` "failed" (or "diverged" for a non-finite
    loss) and the error, then re-raises, so a sweep records every job's outcome.
    """
    run_dir = Path(run_dir).absolute()
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
            seed=int(cfg.seed),
            run_dir=run_dir,
            total_steps=parts["total_steps"],
            hparams=hparams,
            config_snapshot=config_snapshot(cfg),
        )
    except Exception as err:
        status = "diverged" if isinstance(err, NonFiniteLossError) else "failed"
        log.error("Run failed (%s): %s", status, err)
        if not distributed.is_main_process():
            raise
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


def _quiet_third_party_logs() -> None:
    for name in ("absl", "orbax", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.ERROR)


def hydra_train(cfg: DictConfig) -> float | None:
    """The `@hydra.main` task function: trains in Hydra's output directory.

    Returns:
        The best value of the monitored validation metric (for Hydra sweepers that optimise).
    """
    from hydra.core.hydra_config import HydraConfig

    _quiet_third_party_logs()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.output_subdir is not None and distributed.is_main_process():
        # Hydra's config.yaml keeps interpolations (${data_dir}); this one has the values used.
        saved = run_dir / hydra_cfg.output_subdir / RESOLVED_CONFIG
        saved.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, saved, resolve=True)
    results = train_from_config(cfg, run_dir, hydra_hparams(cfg))
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

    from rnnlab.checkpoint import restore_params
    from rnnlab.data.text import Vocabulary
    from rnnlab.tasks.language_model import VOCAB_FILE, build_language_model, sample

    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    if not (run_dir / VOCAB_FILE).is_file():
        raise FileNotFoundError(
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
    step = None if checkpoint in (None, "latest") else checkpoint
    params, used = restore_params(run_dir, target, step)
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


def sample_main(argv: list[str] | None = None) -> None:
    """Console script `rnnlab-sample` (also `experiments/sample.py`).

    A plain argparse command: run directories of sweeps are named by their overrides
    (`model=lstm,seed=0`), which Hydra's override grammar would make the user quote.
    """
    import argparse

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
    parser.add_argument("--num-tokens", type=int, default=500)
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    parser.add_argument("--top-k", type=int, default=0, help="0 keeps every token")
    parser.add_argument("--checkpoint", default="best", help='"best", "latest" or a step')
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    _quiet_third_party_logs()
    if args.prompt_file:
        prompt = Path(args.prompt_file).read_text(encoding="utf-8")
    else:  # let "\n" and "\t" typed on the command line mean newline and tab
        prompt = args.prompt.replace("\\n", "\n").replace("\\t", "\t")
    checkpoint = int(args.checkpoint) if args.checkpoint.isdigit() else args.checkpoint
    texts, step = sample_from_run(
        args.run_dir,
        prompt,
        args.num_tokens,
        checkpoint,
        args.temperature,
        args.top_k,
        args.num_samples,
        args.seed,
    )
    for index, text in enumerate(texts):
        print(f"--- sample {index} (checkpoint step {step}) ---\n{text}")


def train_main() -> None:
    """Console script `rnnlab-train`: `@hydra.main` over `conf/train.yaml`."""
    import hydra

    register_configs()
    hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")(
        hydra_train
    )()
