"""Diagnostics of runs: `python experiments/diagnose.py RUN_DIR [RUN_DIR ...] [options]`.

The same as the `rnnlab-diagnose` console script (see `--help`):

    python experiments/diagnose.py runs/adding/lstm/<date> --what grad_flow,gates
    python experiments/diagnose.py multirun/adding_lstm_vs_rnn/<date>/*seed=0* --init
    python experiments/diagnose.py --cells rnn_tanh,lstm,gru --length 100
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

from rnnlab.diagnostics.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
