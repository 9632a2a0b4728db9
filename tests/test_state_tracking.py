"""State-tracking tasks with a length-generalisation split: parity and modular arithmetic.

Every generated label equals a direct Python computation (the bits' sum mod 2; Python's own
`eval` of the expression, mod m); lengths lie in each split's range (test ones longer than any
trained on); batches are pure in `(seed, step)` and evaluation sets fixed; bad settings name
their `task.<key>`; the baselines are found by `rnnlab-aggregate`; and a tiny LSTM learns short
parity through the real runner.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from rnnlab import cli
from rnnlab.aggregate import baseline_value
from rnnlab.data import synthetic
from rnnlab.errors import ConfigError
from rnnlab.tasks import ModularArithmeticTask, ParityTask, StateTrackingTask
from tests.test_train import FAST, compose_train

SMALL = {"min_length": 2, "max_length": 9, "eval_batches": 2, "eval_batch_size": 64}
"""Lengths 2..9 (test 10..18), two fixed batches of 64 per split."""


def parity(**kwargs) -> ParityTask:
    return ParityTask(seed=0, batch_size=32, **{**SMALL, **kwargs})


def modular(**kwargs) -> ModularArithmeticTask:
    return ModularArithmeticTask(seed=0, batch_size=32, **{**SMALL, **kwargs})


def all_batches(task: StateTrackingTask) -> dict[str, list[dict[str, np.ndarray]]]:
    """Three training batches and every evaluation batch, by split."""
    splits = {split: task.eval_batches(split) for split in task.splits}
    return {"train": [task.train_batch(step) for step in range(3)], **splits}


def examples(batch: dict[str, np.ndarray]):
    """`(valid tokens, padding, label)` of each sequence of a batch."""
    for tokens, length, label in zip(
        batch["inputs"], batch["lengths"], batch["labels"], strict=True
    ):
        yield tokens[:length], tokens[length:], int(label)


def expression(tokens: np.ndarray, modulus: int) -> str:
    """The text of an expression from its token ids (digit d -> d + 1, then the operators)."""
    return "".join(
        str(t - 1) if t <= modulus else synthetic.MODULAR_OPERATORS[t - modulus - 1]
        for t in tokens.tolist()
    )


def test_parity_labels_are_the_parity_of_the_bits() -> None:
    for batch in (b for batches in all_batches(parity()).values() for b in batches):
        for tokens, padding, label in examples(batch):
            assert set(tokens.tolist()) <= {1, 2} and not padding.any()
            assert label == sum(t - 1 for t in tokens.tolist()) % 2


@pytest.mark.parametrize(
    ("modulus", "operators"), [(5, "+-*"), (7, "+-"), (3, "*"), (2, "-*"), (11, "*+")]
)
def test_modular_labels_are_the_value_of_the_expression(modulus: int, operators: str) -> None:
    task = modular(modulus=modulus, operators=operators)
    seen = set()
    for batch in (b for batches in all_batches(task).values() for b in batches):
        for tokens, padding, label in examples(batch):
            text = expression(tokens, modulus)
            assert not padding.any() and set(text) - set("0123456789") <= set(operators)
            assert label == eval(text) % modulus, text  # Python's precedence: * before + and -
            seen.update(c for c in text if not c.isdigit())
    assert seen == set(operators)


def test_modular_examples_match_the_papers() -> None:
    """Delétang et al.'s examples mod 5, through the generator's own evaluation."""
    for text, value in (("1+2*3", 2), ("1-1-1", 4), ("0*1+4*3-2", 0)):
        assert eval(text) % 5 == value
    task = modular(max_length=21)
    texts = [
        (expression(tokens, 5), label)
        for batch in task.eval_batches("valid")
        for tokens, _, label in examples(batch)
    ]
    assert all(eval(text) % 5 == label for text, label in texts)
    assert any("*" in t and ("+" in t or "-" in t) for t, _ in texts)  # precedence exercised


@pytest.mark.parametrize("make", [parity, modular], ids=["parity", "modular"])
def test_lengths_lie_in_each_splits_range_and_test_is_longer(make) -> None:
    task = make()
    ranges = {"train": (2, 9), "valid": (2, 9), "test": (10, 18)}  # test_max_length: 2 * 9
    assert task.length_ranges == ranges and task.describe()["test_lengths"] == [10, 18]
    for split, batches in all_batches(task).items():
        low, high = ranges[split]
        lengths = np.concatenate([b["lengths"] for b in batches])
        assert all(b["inputs"].shape[1] == high for b in batches)  # one shape per split
        assert lengths.min() >= low and lengths.max() <= high
        if isinstance(task, ModularArithmeticTask):
            assert np.all(lengths % 2 == 1)  # digit, operator, ..., digit
            assert set(lengths.tolist()) == set(range(low | 1, high + 1, 2))
        else:
            assert set(lengths.tolist()) == set(range(low, high + 1))
    assert make(test_max_length=30).length_ranges["test"] == (10, 30)


@pytest.mark.parametrize("make", [parity, modular], ids=["parity", "modular"])
def test_batches_are_pure_in_seed_and_step_and_differ_across_steps(make) -> None:
    task, again = make(), make()
    for step in (0, 5):
        first, second = task.train_batch(step), again.train_batch(step)
        assert all(np.array_equal(first[k], second[k]) for k in first)
    assert not np.array_equal(task.train_batch(0)["inputs"], task.train_batch(1)["inputs"])
    other_seed = type(task)(seed=1, batch_size=32, **SMALL)
    assert not np.array_equal(task.train_batch(0)["inputs"], other_seed.train_batch(0)["inputs"])


@pytest.mark.parametrize("make", [parity, modular], ids=["parity", "modular"])
def test_evaluation_sets_are_fixed_and_apart_from_training(make) -> None:
    task, again = make(), make()
    assert task.splits == ("valid", "test")
    for split in task.splits:
        first, second = task.eval_batches(split), again.eval_batches(split)
        assert len(first) == 2 and all(b["inputs"].shape[0] == 64 for b in first)
        for a, b in zip(first, second, strict=True):
            assert all(np.array_equal(a[k], b[k]) for k in a)
    valid = task.eval_batches("valid")[0]["inputs"]
    train = [task.train_batch(step)["inputs"] for step in range(2)]
    assert not any(np.array_equal(valid[:32], t) for t in train)


@pytest.mark.parametrize(
    ("make", "kwargs", "key"),
    [
        (parity, {"min_length": 0}, "min_length"),
        (parity, {"max_length": 1}, "max_length"),
        (parity, {"max_length": 4.5}, "max_length"),
        (parity, {"test_max_length": 9}, "test_max_length"),
        (parity, {"eval_batches": 0}, "eval_batches"),
        (parity, {"eval_batch_size": 0}, "eval_batch_size"),
        (modular, {"modulus": 1}, "modulus"),
        (modular, {"operators": "+/"}, "operators"),
        (modular, {"operators": "++"}, "operators"),
        (modular, {"operators": ""}, "operators"),
        (modular, {"operators": ["+"]}, "operators"),
        (modular, {"min_length": 4, "max_length": 4}, "max_length"),
        (modular, {"max_length": 9, "test_max_length": 10}, "test_max_length"),
    ],
)
def test_a_bad_setting_names_its_key(make, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^task\.{key}[ =]"):
        make(**kwargs)


def test_baselines_are_chance_levels_that_aggregate_finds() -> None:
    run = SimpleNamespace(results={"baselines": parity().baselines()})
    assert baseline_value(run, "valid/accuracy") == 0.5
    assert baseline_value(run, "test/loss") == pytest.approx(math.log(2))

    sums = modular(operators="+-", eval_batch_size=512).baselines()
    assert sums["baseline/accuracy"] == 0.2 and sums["baseline/cross_entropy"] == math.log(5)
    assert sums["baseline/valid_accuracy"] == pytest.approx(0.2, abs=0.05)  # uniform labels
    products = modular(operators="*", eval_batch_size=512).baselines()
    assert products["baseline/test_accuracy"] > 0.5  # a product of 5+ digits is mostly 0
    run = SimpleNamespace(results={"baselines": products})
    assert baseline_value(run, "test/accuracy") == products["baseline/test_accuracy"]
    assert baseline_value(run, "valid/loss") == products["baseline/valid_loss"] < math.log(5)


def test_tokens_count_valid_steps_only() -> None:
    batch = parity().train_batch(0)
    assert parity().tokens(batch) == int(batch["lengths"].sum()) < batch["inputs"].size


def test_an_lstm_learns_short_parity_through_the_runner(tmp_path: Path) -> None:
    cfg = compose_train(
        [
            *FAST,
            "model=lstm",
            "task=parity",
            "task.min_length=2",
            "task.max_length=6",
            "task.eval_batches=1",
            "task.eval_batch_size=256",
            "model.cell.hidden_size=16",
            "trainer.batch_size=64",
            "trainer.steps=120",
            "trainer.eval_every=60",
            "trainer.checkpoint_every=120",
            "optim.learning_rate=0.01",
            "logger.log_every=60",
        ]
    )
    results = cli.train_from_config(cfg, tmp_path)
    assert results["status"] == "completed" and results["best"]["metric"] == "valid/accuracy"
    scored = results["best_checkpoint_metrics"]
    assert scored["valid/accuracy"] >= 0.9 > results["baselines"]["baseline/accuracy"] + 0.3
    assert "test/accuracy" in scored and results["data"]["test_lengths"] == [7, 12]
