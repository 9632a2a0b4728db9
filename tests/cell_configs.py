"""Discover every cell from `conf/cell/*.yaml` (no list to update by hand) and build tiny ones."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

CELL_DIR = Path(__file__).resolve().parents[1] / "conf" / "cell"
CELL_NAMES = sorted(p.stem for p in CELL_DIR.glob("*.yaml"))


def build_cell(name: str, hidden_size: int = 4, **overrides):
    """Instantiate `conf/cell/<name>.yaml` with a tiny hidden size (projection kept below it)."""
    args = [f"hidden_size={hidden_size}"] + [f"{k}={v}" for k, v in overrides.items()]
    with initialize_config_dir(config_dir=str(CELL_DIR), version_base="1.3"):
        cfg = compose(config_name=name, overrides=args)
    if cfg.get("proj_size"):
        cfg.proj_size = hidden_size - 1
    return instantiate(cfg)
