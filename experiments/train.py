"""Train a model: `python experiments/train.py [group=option ...] [key=value ...]`.

The same as the `rnnlab-train` console script (`rnnlab.cli.train_main`: the same configs, found
the same way, and the same one-line messages for user errors). Configs are in `conf/` (entry
`train.yaml`); the logic lives in `rnnlab.cli` and `rnnlab.train`. Examples:

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

from rnnlab.cli import train_main  # noqa: E402

if __name__ == "__main__":
    train_main()
