"""The task contract: a task is one module and one YAML, and its config keys are checked.

- Every `conf/task/*.yaml` composes with the task-agnostic `model=lstm` backbone and honours the
  contract (`rnnlab/tasks/base.py`): the model is the task's `model_class`, training batches are
  a pure function of `(seed, step)`, evaluation batches are fixed, the loss is finite, the
  monitored metric is one the task reports, and every YAML key is a constructor argument.
- A throw-away task written to a temporary directory (a module on the Python path and a
  `task/*.yaml` on a Hydra search path), with nothing else changed, trains through `rnnlab-train`.
- An unknown or misspelt task key stops `rnnlab-train` at start-up with one line naming
  `task.<key>`, the allowed keys and the fix (exit status 2, no traceback), whether it comes
  from an override or from an experiment YAML.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from hydra.utils import get_class

from rnnlab import cli
from rnnlab.rundir import RESULTS_FILE
from rnnlab.tasks import Task, config_keys
from rnnlab.writers import read_jsonl
from tests.test_bad_inputs import TINY, console_script, train
from tests.test_configs import options
from tests.test_train import FAST, TASK_OVERRIDES, compose_train, make_tiny_data

REPO = Path(__file__).resolve().parents[1]
MODULE = "rnnlab_throwaway_task"

TASK_SOURCE = '''
"""A task made up for one test: is the sum of a sequence of +-1 values positive?"""

import numpy as np

from rnnlab.checks import check_int
from rnnlab.models import SequenceClassifier
from rnnlab.tasks.base import Task, weighted_cross_entropy


class MajorityTask(Task):
    """Classify a `[b, length, 1]` sequence of +-1 by the sign of its sum (`length` odd)."""

    name = "majority"
    model_class = SequenceClassifier
    monitor = "valid/accuracy"
    monitor_mode = "max"

    def __init__(self, seed, batch_size, length=9, eval_batch_size=16):
        super().__init__(seed, batch_size)
        self.length = check_int("task.length", length, 1)
        self.eval_batch_size = check_int("task.eval_batch_size", eval_batch_size, 1)

    def model_fields(self):
        return {"num_outputs": 2}

    def _batch(self, stream, index, size):
        rng = np.random.default_rng([self.seed, stream, index])
        inputs = rng.choice([-1.0, 1.0], size=(size, self.length, 1)).astype(np.float32)
        return {"inputs": inputs, "labels": (inputs.sum(axis=(1, 2)) > 0).astype(np.int32)}

    def train_batch(self, step):
        return self._batch(0, step, self.batch_size)

    def eval_batches(self, split):
        return [self._batch(1, i, self.eval_batch_size) for i in range(2)]

    def objective(self, outputs, batch):
        return weighted_cross_entropy(outputs, batch["labels"])
'''

TASK_YAML = f"""\
# A throw-away task (tests/test_task_contract.py): the sign of a sum of +-1 values.
_target_: {MODULE}.MajorityTask
length: 9
eval_batch_size: 16
"""

TYPO_EXPERIMENT = """\
# @package _global_
# An experiment preset with a misspelt task key (tests/test_task_contract.py).
task:
  lenght: 8
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def new_task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The task's module directory and a config directory holding `task/throwaway.yaml` and
    `experiment/typo_task_key.yaml`."""
    root = tmp_path_factory.mktemp("new_task")
    (root / "python").mkdir()
    (root / "python" / f"{MODULE}.py").write_text(textwrap.dedent(TASK_SOURCE).lstrip())
    for group, name, text in (
        ("task", "throwaway", TASK_YAML),
        ("experiment", "typo_task_key", TYPO_EXPERIMENT),
    ):
        (root / "extra" / group).mkdir(parents=True)
        (root / "extra" / group / f"{name}.yaml").write_text(text)
    return {"python": root / "python", "extra": root / "extra"}


@pytest.mark.parametrize("task", options("task"))
def test_every_task_composes_with_lstm_and_keeps_the_contract(task: str, data_dir: Path) -> None:
    cfg = compose_train(
        [*FAST, "model=lstm", f"task={task}", f"data_dir={data_dir}", *TASK_OVERRIDES.get(task, [])]
    )
    cls = get_class(cfg.task._target_)
    assert issubclass(cls, Task)
    yaml_keys = set(yaml.safe_load((REPO / "conf" / "task" / f"{task}.yaml").read_text()))
    assert yaml_keys - {"_target_"} <= set(config_keys(cls))
    built, model = cli.build_task_and_model(cfg)
    assert type(model) is cls.model_class
    assert not set(built.model_fields()) & set(cli.backbone_fields(cfg.model))

    batch = built.train_batch(0)
    again = built.train_batch(0)
    assert batch.keys() == again.keys()
    assert all(np.array_equal(batch[k], again[k]) for k in batch)  # pure in (seed, step)
    params = built.init_params(model, jax.random.PRNGKey(0))
    for split in built.splits:
        first, second = (next(iter(built.eval_batches(split))) for _ in range(2))
        assert all(np.array_equal(first[k], second[k]) for k in first)  # fixed
    carry = built.zero_carry(model, built.batch_size)
    batch = jax.tree_util.tree_map(jnp.asarray, batch)
    loss, (sums, carry) = built.loss(model, params, batch, carry, jax.random.PRNGKey(1))
    assert np.isfinite(float(loss)) and (carry is not None) == built.stateful
    metrics = built.summarize(built.splits[0], jax.device_get(sums))
    assert built.monitor in metrics and all(np.isfinite(v) for v in metrics.values())


def test_a_new_task_is_one_module_and_one_yaml(
    new_task: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(new_task["python"]))
    argv = [
        "trainer=debug",
        "trainer.quiet=true",
        "trainer.compilation_cache_dir=null",
        "model.cell.hidden_size=8",
        f"hydra.searchpath=[file://{new_task['extra']}]",
        "task=throwaway",
        "trainer.steps=2",
        "trainer.eval_every=2",
        "trainer.checkpoint_every=2",
        "logger.log_every=1",
        f"hydra.run.dir={tmp_path}",
    ]
    with console_script("rnnlab-train", argv):  # as `rnnlab-train` runs (not under capsys)
        cli.train_main()
    results = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert results["status"] == "completed" and results["task"] == "majority"
    assert (
        results["model"] == "SequenceClassifier" and results["best"]["metric"] == "valid/accuracy"
    )
    losses = [e["train/loss"] for e in read_jsonl(tmp_path / "metrics.jsonl") if "train/loss" in e]
    assert len(losses) == 2 and np.all(np.isfinite(losses))
    assert not (tmp_path / "vocab.json").exists()  # not a language model: nothing to save


@pytest.mark.parametrize(
    ("argv", "task", "key", "fragments"),
    [
        (["+task.lenght=8"], "adding", "lenght", ["length, eval_batches, eval_batch_size"]),
        (["experiment=typo_task_key"], "adding", "lenght", ["Did you mean task.length?"]),
        (["task=char_lm", "+task.sample_tokens=0"], "char_lm", "sample_tokens", ["bptt"]),
        (["task=throwaway", "+task.eval_batches=2"], "majority", "eval_batches", ["length"]),
        (["+task.batch_size=4"], "adding", "batch_size", ["set trainer.batch_size instead"]),
    ],
    ids=["misspelt-override", "experiment-yaml", "lm-trainer-key", "new-task", "run-argument"],
)
def test_an_unknown_task_key_fails_at_start_up_naming_it(
    argv: list[str],
    task: str,
    key: str,
    fragments: list[str],
    new_task: dict[str, Path],
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.syspath_prepend(str(new_task["python"]))
    extra = [f"hydra.searchpath=[file://{new_task['extra']}]", f"data_dir={data_dir}"]
    tiny = [a for a in TINY if not a.startswith("task.")]  # stopped before the task is built
    outcome = train([*tiny, *extra, f"hydra.run.dir={tmp_path / 'run'}", *argv], capsys)
    assert outcome.code == 2, outcome.text[-3000:]
    (line,) = [x for x in outcome.err.splitlines() if x.startswith("rnnlab-train: error:")]
    assert f"task.{key} " in line and "Traceback" not in outcome.text
    if key != "batch_size":
        assert f"not a setting of task {task}" in line and "Remove or rename it" in line
    for fragment in fragments:
        assert fragment in line, line
    assert not (tmp_path / "run" / "checkpoints").exists()
