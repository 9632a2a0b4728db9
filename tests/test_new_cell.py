"""Adding a cell is one Python file and one YAML file, with no list to edit anywhere.

A throw-away cell (a GRU without reset gate) is written to a temporary directory, outside the
repository: its module goes on the Python path and its `cell/throwaway.yaml` into a config
directory. Then, with nothing else changed,

- the cell-generic tests (`test_cells.py`: the cell contract, scan = Python loop over `step`,
  shapes, finite and numerically checked gradients; `test_recurrence.py`: layer semantics;
  `test_benchmark.py`: the benchmark's models) discover it from `$RNNLAB_CONF/cell/` and pass,
  run in a subprocess on a copy of `conf/` with the YAML added;
- `rnnlab-train` composes it into a model through a Hydra search path (`cell@model.cell=...`)
  and trains it for two steps, on the XLA scan (it declares no native kernel).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from rnnlab import cli, kernels
from tests.test_train import FAST, TASK_OVERRIDES, compose_train, train_losses

REPO = Path(__file__).resolve().parents[1]
MODULE = "rnnlab_throwaway_cell"

CELL_SOURCE = '''
"""A gated cell made up for one test: a GRU without reset gate (update gate z, candidate n)."""

import dataclasses

import jax
import jax.numpy as jnp

from rnnlab.cells.base import (
    HiddenStateCell,
    check_hidden_size,
    init_stacked,
    make_initializer,
    split_gates,
)


@dataclasses.dataclass(frozen=True)
class CoupledGateCell(HiddenStateCell):
    """z = sigma(W_iz x + W_hz h + b_z), n = tanh(W_in x + W_hn h + b_n), h' = z h + (1 - z) n."""

    hidden_size: int
    input_init: str = "glorot_uniform"
    recurrent_init: str = "orthogonal"

    def __post_init__(self):
        check_hidden_size(self)

    @property
    def output_size(self):
        return self.hidden_size

    def init(self, key, input_size):
        h = self.hidden_size
        k_ih, k_hh = jax.random.split(key)
        return {
            "w_ih": init_stacked(make_initializer(self.input_init, h), k_ih, 2, (h, input_size)),
            "w_hh": init_stacked(make_initializer(self.recurrent_init, h), k_hh, 2, (h, h)),
            "b": jnp.zeros((2 * h,), jnp.float32),
        }

    def pointwise(self, params, carry, projected_t, recurrent_t):
        z, n = split_gates(projected_t + recurrent_t, 2)
        z = jax.nn.sigmoid(z)
        h = z * carry + (1.0 - z) * jnp.tanh(n)
        return h, h
'''

CELL_YAML = f"""\
# A throw-away cell (tests/test_new_cell.py): a GRU without reset gate.
_target_: {MODULE}.CoupledGateCell
hidden_size: 16
input_init: glorot_uniform
recurrent_init: orthogonal
"""


@pytest.fixture(scope="module")
def new_cell(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The cell's module directory, a config directory holding only `cell/throwaway.yaml`, and a
    copy of `conf/` with it added."""
    root = tmp_path_factory.mktemp("new_cell")
    (root / "python").mkdir()
    (root / "python" / f"{MODULE}.py").write_text(textwrap.dedent(CELL_SOURCE).lstrip())
    (root / "extra" / "cell").mkdir(parents=True)
    (root / "extra" / "cell" / "throwaway.yaml").write_text(CELL_YAML)
    shutil.copytree(REPO / "conf", root / "conf")
    (root / "conf" / "cell" / "throwaway.yaml").write_text(CELL_YAML)
    return {"python": root / "python", "extra": root / "extra", "conf": root / "conf"}


def test_cell_generic_tests_discover_and_pass_the_new_cell(new_cell: dict[str, Path]) -> None:
    env = dict(os.environ)
    env["RNNLAB_CONF"] = str(new_cell["conf"])
    env["PYTHONPATH"] = os.pathsep.join([str(new_cell["python"]), str(REPO)])
    files = ["tests/test_cells.py", "tests/test_recurrence.py", "tests/test_benchmark.py"]
    command = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-k", "throwaway"]
    proc = subprocess.run(
        [*command, *files], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    passed = set(re.findall(r"::(\w+)\[[^\]]*throwaway[^\]]*\] PASSED", proc.stdout))
    for core in (
        "test_scan_equals_python_loop",  # the scan equals a Python loop over `step`
        "test_shapes",
        "test_jit_grad_finite_and_custom_equals_autodiff",
        "test_check_grads_numerical",
        "test_padding_never_changes_a_result",
        "test_resets_equal_separate_sequences",
        "test_zoneout_rate_one_keeps_the_initial_state",
        "test_bidirectional_merge_modes",
        "test_timed_models_compute_the_same_function",
    ):
        assert core in passed, f"{core} did not run on the new cell:\n{proc.stdout[-4000:]}"
    assert "SKIPPED" not in proc.stdout


def test_new_cell_trains_from_a_search_path(
    new_cell: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(new_cell["python"]))
    cfg = compose_train(
        [
            *FAST,
            *TASK_OVERRIDES["adding"],
            f"hydra.searchpath=[file://{new_cell['extra']}]",
            "cell@model.cell=throwaway",
            "trainer.steps=2",
            "trainer.eval_every=2",
            "trainer.checkpoint_every=2",
        ]
    )
    cell = instantiate(cfg.model.cell)
    assert type(cell).__name__ == "CoupledGateCell" and cell.hidden_size == 8
    assert kernels.cell_kind(cell) is None  # declares no kernel: the scan runs it
    results = cli.train_from_config(cfg, tmp_path)
    assert results["status"] == "completed", results
    losses = train_losses(tmp_path)
    assert len(losses) == 2 and np.all(np.isfinite(losses))
