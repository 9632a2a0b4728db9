"""Sample text from a language-model run: `python experiments/sample.py RUN_DIR [options]`.

The same as the `rnnlab-sample` console script (see `--help`):

    python experiments/sample.py runs/char_lm/lstm/<date> --prompt "ROMEO:" \
        --num-tokens 500 --temperature 0.8 --top-k 10 --checkpoint best
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

from rnnlab.cli import sample_main  # noqa: E402

if __name__ == "__main__":
    sample_main()
