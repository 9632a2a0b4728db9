"""The language-model task's two window protocols (`rnnlab.tasks.language_model`).

`windows="stateful"` (the default) is Zaremba et al.'s truncated BPTT over contiguous rows and
stays what it was; `windows="random"` is nanoGPT's: random training windows, a pure function of
`(seed, step)` drawn from the training text, and an evaluation over the consecutive windows of
the validation text, each from a zero carry, which a manual evaluation reproduces.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab import cli
from rnnlab.data import text
from rnnlab.errors import ConfigError
from rnnlab.tasks import CharLMTask
from tests import test_train

B, BPTT = 4, 8


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return test_train.make_tiny_data(tmp_path_factory.mktemp("data"))


def char_task(data_dir: Path, seed: int = 0, **kwargs) -> CharLMTask:
    path = str(data_dir / "tinyshakespeare" / "input.txt")
    return CharLMTask(seed, B, path, bptt=BPTT, eval_batch_size=3, **kwargs)


def test_random_windows_are_a_pure_function_of_seed_and_step_from_the_training_text(
    data_dir: Path,
) -> None:
    task = char_task(data_dir, windows="random")
    train = np.asarray(task.corpus["train"])
    assert not task.stateful and task.resets_carry(7)
    assert task.steps_per_epoch == len(train) // (B * BPTT)
    batch = task.train_batch(5)
    assert batch["inputs"].shape == batch["targets"].shape == (B, BPTT)
    for key in ("inputs", "targets"):
        np.testing.assert_array_equal(
            batch[key], char_task(data_dir, windows="random").train_batch(5)[key]
        )
    assert not np.array_equal(batch["inputs"], task.train_batch(6)["inputs"])
    assert not np.array_equal(
        batch["inputs"], char_task(data_dir, 1, windows="random").train_batch(5)["inputs"]
    )
    for inputs, targets in zip(batch["inputs"], batch["targets"], strict=True):
        window = np.concatenate([inputs, targets[-1:]])  # bptt + 1 consecutive training tokens
        starts = np.lib.stride_tricks.sliding_window_view(train, BPTT + 1)
        assert np.any(np.all(starts == window, axis=1))
        np.testing.assert_array_equal(targets[:-1], inputs[1:])


def test_stateful_windows_stay_the_default_and_unchanged(data_dir: Path) -> None:
    task = char_task(data_dir)
    assert task.windows == "stateful" and task.stateful
    stream = text.lm_stream(task.corpus["train"], B)
    windows = text.lm_num_windows(stream, BPTT)
    assert task.steps_per_epoch == windows
    for step in (0, 1, windows + 1):
        inputs, targets = text.lm_window(stream, step % windows, BPTT)
        np.testing.assert_array_equal(task.train_batch(step)["inputs"], inputs)
        np.testing.assert_array_equal(task.train_batch(step)["targets"], targets)
        assert task.resets_carry(step) == (step % windows == 0)
    valid = text.lm_stream(task.corpus["valid"], 3)
    batches = list(task.eval_batches("valid"))
    assert len(batches) == text.lm_num_windows(valid, BPTT, drop_last=False)
    np.testing.assert_array_equal(batches[1]["inputs"], text.lm_window(valid, 1, BPTT)[0])
    # A run saved before `task.windows` existed (stateful then) resumes; other tasks lack the key.
    current = cli.config_snapshot(test_train.compose_train(["task=char_lm"]))
    saved = {k: v for k, v in current.items() if k != "task.windows"}
    assert cli.compare_configs(saved, current) == ([], [])
    strict, _ = cli.compare_configs(saved, {**current, "task.windows": "random"})
    assert strict == ["task.windows: 'stateful' -> 'random'"]
    adding = cli.config_snapshot(test_train.compose_train([]))
    assert cli.compare_configs(adding, adding) == ([], [])


def test_random_windows_train_and_evaluate_every_window_from_zeros(
    tmp_path: Path, data_dir: Path
) -> None:
    steps = 3
    overrides = [
        "model=mingru_block",
        "task=char_lm",
        "task.windows=random",
        "task.eval_max_windows=null",
        f"trainer.steps={steps}",
        f"trainer.eval_every={steps}",
        f"trainer.checkpoint_every={steps}",
    ]
    results = test_train.run(tmp_path, overrides, data_dir)
    assert results["status"] == "completed"
    assert np.all(np.isfinite(test_train.train_losses(tmp_path)))
    state = test_train.saved_state(tmp_path)
    assert "carry" not in state  # nothing threaded from one step to the next

    cfg = test_train.compose_train(
        test_train.FAST
        + test_train.TASK_OVERRIDES["char_lm"]
        + [f"data_dir={data_dir}", *overrides]
    )
    task, model = cli.build_task_and_model(cfg)
    ids, bptt = np.asarray(task.corpus["valid"]), task.bptt
    count = (len(ids) - 1) // bptt
    assert count > task.eval_batch_size  # several batches, the last one partial
    starts = np.arange(count) * bptt
    inputs = jnp.asarray(ids[starts[:, None] + np.arange(bptt)])
    targets = jnp.asarray(ids[starts[:, None] + np.arange(bptt) + 1])
    logits, _ = model.apply({"params": state["params"]}, inputs, model.zero_carry(count))
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)
    np.testing.assert_allclose(results["final"]["valid/loss"], float(jnp.mean(nll)), rtol=1e-5)


def test_an_unknown_windows_value_names_the_key_and_the_choices(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"task\.windows must be one of stateful, random"):
        char_task(data_dir, windows="shuffled")
