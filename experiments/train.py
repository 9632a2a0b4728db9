"""Train a model: `python experiments/train.py [group=option ...] [key=value ...]`.

The same as the `rnnlab-train` console script. Configs are in `conf/` (entry `train.yaml`); the
logic lives in `rnnlab.cli` and `rnnlab.train`. Examples:

    python experiments/train.py                                  # LSTM on the adding problem
    python experiments/train.py model=gru task=copy
    python experiments/train.py -m model=lstm,gru seed=0,1,2     # a sweep, one dir per job
    python experiments/train.py experiment=char_lm_shakespeare
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from rnnlab.cli import hydra_train, register_configs  # noqa: E402

register_configs()


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return hydra_train(cfg)


if __name__ == "__main__":
    main()
