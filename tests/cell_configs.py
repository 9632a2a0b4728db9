"""Discover every cell from `conf/cell/*.yaml` (no list to update by hand) and build tiny ones.

The config directory is the one the tools use (`rnnlab.cli.config_dir`: `$RNNLAB_CONF`, else the
checkout's `conf/`), so a cell added there is tested by every cell-generic test. What a test may
skip for a cell, it learns from the cell's declared capabilities (`rnnlab.cells.base.declared`).
"""

from __future__ import annotations

import functools

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rnnlab.cells.base import declared
from rnnlab.cli import config_dir

CELL_DIR = config_dir() / "cell"
CELL_NAMES = sorted(p.stem for p in CELL_DIR.glob("*.yaml"))


@functools.cache
def build_cell(name: str, hidden_size: int = 4, **overrides):
    """Instantiate `conf/cell/<name>.yaml` with a tiny hidden size (projection kept below it,
    heads reduced to divide it)."""
    args = [f"hidden_size={hidden_size}"] + [f"{k}={v}" for k, v in overrides.items()]
    with initialize_config_dir(config_dir=str(CELL_DIR), version_base="1.3"):
        cfg = compose(config_name=name, overrides=args)
    if cfg.get("proj_size"):
        cfg.proj_size = hidden_size - 1
    if cfg.get("num_heads"):  # the most heads up to the config's that divide the tiny size
        cfg.num_heads = max(n for n in range(1, cfg.num_heads + 1) if hidden_size % n == 0)
    return instantiate(cfg)


def cells_declaring(capability: str, hidden_size: int = 4) -> list[str]:
    """The discovered cells whose class declares `capability` (not None) at these settings."""
    return [n for n in CELL_NAMES if declared(build_cell(n, hidden_size), capability) is not None]


def cells_lacking(capability: str, hidden_size: int = 4) -> list[str]:
    """The discovered cells that declare no `capability`."""
    having = cells_declaring(capability, hidden_size)
    return [n for n in CELL_NAMES if n not in having]
