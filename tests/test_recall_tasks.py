"""Recall tasks: selective copying (Gu & Dao 2023) and multi-query associative recall (Arora et
al. 2023, Zoology).

Every target equals a direct Python computation from the generated tokens (the non-blank data
tokens in order; a dict lookup of the queried key in the context's pairs); keys and values are
distinct; the positions to remember change across the batch; batches are pure in `(seed, step)`
and evaluation sets fixed, the `test` split longer (or with more pairs); bad settings name their
`task.<key>`; the baselines are found by `rnnlab-aggregate`; and a tiny LSTM beats them through
the real runner on the easiest settings.
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
from rnnlab.tasks import CopyTask, MQARTask, RecallTask, SelectiveCopyTask
from tests.test_train import FAST, compose_train

EVAL = {"eval_batches": 2, "eval_batch_size": 32}
"""Two fixed batches of 32 per split."""
COPY = {"length": 8, "num_symbols": 5, "copy_length": 3, **EVAL}
"""Three symbols among 8 steps (test: 16)."""
MQAR = {"num_pairs": 3, "key_vocab": 6, "value_vocab": 7, "length": 12, **EVAL}
"""Three pairs (keys 1..6, values 7..13) and three queries in 12 steps (test: 24)."""


def selective_copy(**kwargs) -> SelectiveCopyTask:
    return SelectiveCopyTask(seed=0, batch_size=16, **{**COPY, **kwargs})


def mqar(**kwargs) -> MQARTask:
    return MQARTask(seed=0, batch_size=16, **{**MQAR, **kwargs})


def all_batches(task: RecallTask) -> dict[str, list[dict[str, np.ndarray]]]:
    """Three training batches and every evaluation batch, by split."""
    splits = {split: task.eval_batches(split) for split in task.splits}
    return {"train": [task.train_batch(step) for step in range(3)], **splits}


def rows(batch: dict[str, np.ndarray]):
    """`(inputs, targets, weights)` of each sequence of a batch, as Python lists."""
    yield from zip(
        batch["inputs"].tolist(), batch["targets"].tolist(), batch["weights"].tolist(), strict=True
    )


@pytest.mark.parametrize("kwargs", [{}, {"copy_length": 1}, {"copy_length": 8, "num_symbols": 1}])
def test_selective_copy_targets_are_the_data_tokens_in_order(kwargs: dict) -> None:
    task = selective_copy(**kwargs)
    marker = task.num_symbols + 1
    for split, batches in all_batches(task).items():
        length = task.test_length if split == "test" else task.length
        for batch in batches:
            assert batch["inputs"].shape[1] == length + task.copy_length
            for inputs, targets, weights in rows(batch):
                data = [t for t in inputs[:length] if t != 0]
                assert len(data) == task.copy_length
                assert all(1 <= t <= task.num_symbols for t in data)
                assert inputs[length:] == [marker] * task.copy_length
                assert targets == [0] * length + data
                assert weights == [0.0] * length + [1.0] * task.copy_length


def test_selective_copy_positions_vary_across_the_batch() -> None:
    task = selective_copy(**{"eval_batch_size": 64})
    for batch in [task.train_batch(0), *task.eval_batches("valid"), *task.eval_batches("test")]:
        length = batch["inputs"].shape[1] - task.copy_length
        placed = [tuple(np.flatnonzero(row[:length])) for row in batch["inputs"]]
        assert len(set(placed)) > len(placed) // 2  # 56 (valid) or 560 (test) subsets to pick
        assert set().union(*placed) == set(range(length))  # not the copy task's first steps


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"num_queries": 1},
        {"random_non_queries": False},
        {"num_pairs": 6, "key_vocab": 6, "length": 24, "power_a": 1.0},
        {"test_num_pairs": 5, "test_length": 20},
    ],
    ids=["zoology", "one-query", "blank-gaps", "all-keys-uniform", "test-more-pairs"],
)
def test_mqar_targets_are_the_values_of_the_queried_keys(kwargs: dict) -> None:
    task = mqar(**kwargs)
    keys_range = range(1, task.key_vocab + 1)
    values_range = range(task.key_vocab + 1, task.vocab_size)
    for split, batches in all_batches(task).items():
        settings = task.settings["test" if split == "test" else "train"]
        context, queries = 2 * settings["num_pairs"], settings["num_queries"]
        for batch in batches:
            assert batch["inputs"].shape[1] == settings["length"]
            for inputs, targets, weights in rows(batch):
                keys, values = inputs[0:context:2], inputs[1:context:2]
                assert len(set(keys)) == len(keys) and set(keys) <= set(keys_range)
                assert len(set(values)) == len(values) and set(values) <= set(values_range)
                table = dict(zip(keys, values, strict=True))
                asked = [i for i, w in enumerate(weights) if w == 1.0]
                assert len(asked) == queries and set(weights) <= {0.0, 1.0}
                assert all(i >= context and (i - context) % 2 == 0 for i in asked)
                queried = [inputs[i] for i in asked]
                assert len(set(queried)) == queries and set(queried) <= set(keys)
                assert all(targets[i] == table[inputs[i]] for i in asked)
                assert all(t == 0 for i, t in enumerate(targets) if i not in asked)
                between = [t for i, t in enumerate(inputs[context:], context) if i not in asked]
                assert all(0 <= t < task.vocab_size for t in between)
                if not task.random_non_queries:
                    assert not any(between)
    if task.num_queries is None:  # Zoology: every pair is asked once
        assert task.settings["train"]["num_queries"] == task.num_pairs


def test_mqar_noise_and_keys_vary_across_the_batch() -> None:
    batch = mqar(length=20, eval_batch_size=64).eval_batches("valid")[0]  # 7 slots for 3
    context = 2 * MQAR["num_pairs"]
    keys = [tuple(row[0:context:2]) for row in batch["inputs"].tolist()]
    asked = [tuple(np.flatnonzero(w)) for w in batch["weights"]]
    assert len(set(keys)) > 32 and len(set(asked)) > 1
    noise = batch["inputs"][:, context:][batch["weights"][:, context:] == 0]
    assert len(set(noise.tolist())) == mqar().vocab_size  # every token appears as noise


def total_variation(a: np.ndarray, b: np.ndarray, bins: int) -> float:
    """Total variation distance between the empirical distributions of two int samples."""
    return 0.5 * float(
        np.abs(
            np.bincount(a, minlength=bins) / a.size - np.bincount(b, minlength=bins) / b.size
        ).sum()
    )


def test_mqar_query_slots_follow_zoologys_power_law() -> None:
    """Slots as Zoology draws them: NumPy's successive `choice(replace=False, p=p)` with `p ∝
    g ** (a - 1)`, the first pair of the context asked at the first slot drawn."""
    size, slots, pairs, a = 4000, 17, 3, 0.01
    p = np.arange(1, slots + 1) ** (a - 1.0)
    rng = np.random.default_rng(123)
    reference = np.array(
        [rng.choice(slots, pairs, replace=False, p=p / p.sum()) for _ in range(size)]
    )
    batch = synthetic.mqar_batch(0, 0, size, 6 + 2 * slots, pairs, 6, 7, power_a=a)
    inputs, weights = batch["inputs"], batch["weights"]
    drawn = (np.nonzero(weights)[1] - 6) // 2
    asked_first = np.argmax((inputs[:, 6:] == inputs[:, :1]) & (weights[:, 6:] == 1), axis=1) // 2
    assert total_variation(drawn, reference.ravel(), slots) < 0.03
    assert total_variation(asked_first, reference[:, 0], slots) < 0.05
    assert np.mean(asked_first == 0) > np.mean(drawn == 0) + 0.04  # drawn first, placed first
    uniform = synthetic.mqar_batch(0, 0, size, 6 + 2 * slots, pairs, 6, 7, power_a=1.0)
    assert abs((np.nonzero(uniform["weights"])[1] - 6).mean() / 2 - 8.0) < 0.2  # mean of 0..16


@pytest.mark.parametrize("make", [selective_copy, mqar], ids=["selective_copy", "mqar"])
def test_batches_are_pure_in_seed_and_step_and_differ_across_steps(make) -> None:
    task, again = make(), make()
    for step in (0, 7):
        first, second = task.train_batch(step), again.train_batch(step)
        assert all(np.array_equal(first[k], second[k]) for k in ("inputs", "targets", "weights"))
    assert not np.array_equal(task.train_batch(0)["inputs"], task.train_batch(1)["inputs"])
    kwargs = COPY if make is selective_copy else MQAR
    other_seed = type(task)(seed=1, batch_size=16, **kwargs)
    assert not np.array_equal(task.train_batch(0)["inputs"], other_seed.train_batch(0)["inputs"])


@pytest.mark.parametrize("make", [selective_copy, mqar], ids=["selective_copy", "mqar"])
def test_evaluation_sets_are_fixed_longer_for_test_and_apart_from_training(make) -> None:
    task, again = make(), make()
    assert task.splits == ("valid", "test")
    for split in task.splits:
        first, second = task.eval_batches(split), again.eval_batches(split)
        assert len(first) == 2 and all(b["inputs"].shape[0] == 32 for b in first)
        for a, b in zip(first, second, strict=True):
            assert all(np.array_equal(a[k], b[k]) for k in a)
    valid, test = (task.eval_batches(s)[0]["inputs"] for s in task.splits)
    assert test.shape[1] > valid.shape[1] == task.train_batch(0)["inputs"].shape[1]
    kwargs = COPY if make is selective_copy else MQAR
    same_size = type(task)(seed=0, batch_size=32, **kwargs)  # the evaluation batches' size
    for step, batch in enumerate(task.eval_batches("valid")):  # another random stream
        assert not np.array_equal(batch["inputs"], same_size.train_batch(step)["inputs"])
    facts = task.describe()
    assert facts["vocab_size"] == task.vocab_size and facts["test_length"] == 2 * task.length


@pytest.mark.parametrize(
    ("make", "kwargs", "key"),
    [
        (selective_copy, {"copy_length": 9}, "length"),  # more symbols than steps to hold them
        (selective_copy, {"copy_length": 0}, "copy_length"),
        (selective_copy, {"num_symbols": 0}, "num_symbols"),
        (selective_copy, {"length": 8.5}, "length"),
        (selective_copy, {"test_length": 8}, "test_length"),
        (selective_copy, {"eval_batches": 0}, "eval_batches"),
        (selective_copy, {"eval_batch_size": 0}, "eval_batch_size"),
        (mqar, {"num_pairs": 7}, "num_pairs"),  # more than key_vocab=6
        (mqar, {"num_pairs": 8, "key_vocab": 9}, "num_pairs"),  # more than value_vocab=7
        (mqar, {"num_pairs": 0}, "num_pairs"),
        (mqar, {"key_vocab": 0}, "key_vocab"),
        (mqar, {"value_vocab": 0}, "value_vocab"),
        (mqar, {"num_queries": 4}, "num_queries"),
        (mqar, {"num_queries": 0}, "num_queries"),
        (mqar, {"length": 11}, "length"),  # 3 pairs and 3 queries need 12 steps
        (mqar, {"test_length": 11}, "test_length"),
        (mqar, {"test_num_pairs": 2}, "test_num_pairs"),
        (mqar, {"test_num_pairs": 7}, "test_num_pairs"),
        (mqar, {"test_num_pairs": 7, "key_vocab": 9, "value_vocab": 9}, "test_length"),  # 24 < 28
        (mqar, {"power_a": 0.0}, "power_a"),
        (mqar, {"power_a": "0.5"}, "power_a"),
        (mqar, {"random_non_queries": "yes"}, "random_non_queries"),
    ],
)
def test_a_bad_setting_names_its_key(make, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^task\.{key}[ =]"):
        make(**kwargs)


def test_the_generators_refuse_what_the_tasks_refuse() -> None:
    with pytest.raises(ConfigError, match=r"^task\.length "):
        synthetic.selective_copy_batch(0, 0, 2, length=2, copy_length=3)
    with pytest.raises(ConfigError, match=r"^task\.num_pairs "):
        synthetic.mqar_batch(0, 0, 2, length=20, num_pairs=5, key_vocab=4, value_vocab=8)
    with pytest.raises(ConfigError, match=r"^task\.num_queries "):
        synthetic.mqar_batch(0, 0, 2, 20, 2, 4, 4, num_queries=3)
    with pytest.raises(ConfigError, match=r"^task\.length "):
        synthetic.mqar_batch(0, 0, 2, length=7, num_pairs=2, key_vocab=4, value_vocab=4)


def test_baselines_are_chance_levels_that_aggregate_finds() -> None:
    run = SimpleNamespace(results={"baselines": selective_copy().baselines()})
    assert baseline_value(run, "valid/accuracy") == pytest.approx(1 / 5)
    assert baseline_value(run, "test/loss") == pytest.approx(math.log(5))
    run = SimpleNamespace(results={"baselines": mqar().baselines()})
    assert baseline_value(run, "test/accuracy") == pytest.approx(1 / 7)
    assert baseline_value(run, "valid/loss") == pytest.approx(math.log(7))


@pytest.mark.parametrize(
    ("task", "settings"),
    [
        ("selective_copy", ["task.length=4", "task.copy_length=1", "task.num_symbols=4"]),
        ("mqar", ["task.num_pairs=1", "task.key_vocab=2", "task.value_vocab=4", "task.length=4"]),
    ],
)
def test_an_lstm_beats_the_baseline_through_the_runner(
    tmp_path: Path, task: str, settings: list[str]
) -> None:
    cfg = compose_train(
        [
            *FAST,
            "model=lstm",
            f"task={task}",
            *settings,
            "task.eval_batches=1",
            "task.eval_batch_size=256",
            "model.cell.hidden_size=16",
            "trainer.batch_size=64",
            "trainer.steps=100",
            "trainer.eval_every=50",
            "trainer.checkpoint_every=100",
            "optim.learning_rate=0.01",
            "logger.log_every=50",
        ]
    )
    results = cli.train_from_config(cfg, tmp_path)
    assert results["status"] == "completed" and results["best"]["metric"] == "valid/accuracy"
    scored, baselines = results["best_checkpoint_metrics"], results["baselines"]
    assert scored["valid/accuracy"] >= baselines["baseline/accuracy"] + 0.5
    assert scored["valid/loss"] < 0.5 * baselines["baseline/cross_entropy"]
    assert "test/accuracy" in scored and results["data"]["test_length"] == 8


def test_the_copy_task_trains_on_every_output_with_loss_positions_all() -> None:
    """loss_positions="all" (Arjovsky et al.): the training loss is the cross-entropy averaged
    over all T outputs, blanks included; the metrics stay on the recall positions and
    `loss_all` reports the training loss, against its memoryless baseline."""
    common = {"seed": 0, "batch_size": 4, "lag": 5, "num_symbols": 3, "copy_length": 2}
    every, recall = CopyTask(**common, loss_positions="all"), CopyTask(**common)
    batch = every.train_batch(0)
    logits = np.random.default_rng(0).normal(size=(*batch["targets"].shape, every.vocab_size))
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_p, batch["targets"][..., None], -1)[..., 0]
    weights = batch["weights"]
    sums, loss = every.objective(logits.astype(np.float32), batch)
    np.testing.assert_allclose(float(loss), nll.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        [float(x) for x in sums["loss_all"]], [nll.sum(), nll.size], rtol=1e-5
    )
    np.testing.assert_allclose(
        [float(x) for x in sums["loss"]], [(nll * weights).sum(), weights.sum()], rtol=1e-5
    )
    sums, loss = recall.objective(logits.astype(np.float32), batch)
    np.testing.assert_allclose(float(loss), (nll * weights).sum() / weights.sum(), rtol=1e-5)
    assert "loss_all" not in sums and "baseline/loss_all" not in recall.baselines()
    assert every.baselines()["baseline/loss_all"] == pytest.approx(2 * np.log(3) / (5 + 4))
    with pytest.raises(ConfigError, match="task.loss_positions must be one of recall, all"):
        CopyTask(**common, loss_positions="blanks")
