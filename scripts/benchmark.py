"""Benchmark rnnlab against torch.nn.LSTM/GRU and flax.linen.RNN (see `rnnlab.bench`).

    python scripts/benchmark.py                    # the default grid, JSON + Markdown in
                                                   # benchmark_results/
    python scripts/benchmark.py --grid tiny        # seconds, for a smoke test
    python scripts/benchmark.py --scaling          # step time vs sequence length and batch
    python scripts/benchmark.py --grid scan        # associative vs sequential scan of the
                                                   # linear recurrences, t = 64..8192, with a
                                                   # PyTorch minGRU (sequential and log-space)

Installed, the same is `rnnlab-benchmark`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from rnnlab.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
