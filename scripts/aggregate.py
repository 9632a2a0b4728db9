"""Aggregate sweeps into paper artefacts (see `rnnlab.aggregate`).

    python scripts/aggregate.py multirun/2026-11-22_05-21-41     # tables, CSV, plots in
                                                                 # multirun/.../aggregate/
    python scripts/aggregate.py sweep_a sweep_b --out paper/ --metrics valid/mse,test/accuracy
    python scripts/aggregate.py sweep --group-by model --x-key task.length

Installed, the same is `rnnlab-aggregate`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from rnnlab.aggregate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
