"""`trainer.score_final`: the final state scored on every split, next to the best checkpoint's
scores (papers that report the last epoch's test score, e.g. Zaremba et al.'s PTB)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rnnlab import cli
from tests.test_train import FAST, TASK_OVERRIDES, compose_train, make_tiny_data


def _train(run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    results = cli.train_from_config(compose_train(overrides), run_dir)
    assert results["status"] == "completed"
    return results


def test_score_final_adds_the_final_states_test_metrics(tmp_path: Path) -> None:
    data = make_tiny_data(tmp_path / "data")
    common = [
        *FAST,
        "model=lstm",
        "task=word_lm",
        *TASK_OVERRIDES["word_lm"],
        f"data_dir={data}",
        "trainer.steps=6",
        "trainer.eval_every=2",
        "trainer.checkpoint_every=2",
        "trainer.sample_tokens=0",
    ]
    # the highest validation loss counts as best: an early checkpoint, not the final state
    both = _train(tmp_path / "both", [*common, "trainer.score_final=true", "trainer.best_mode=max"])
    final_only = _train(tmp_path / "final", [*common, "trainer.keep_best=false"])
    plain = _train(tmp_path / "plain", [*common, "trainer.best_mode=max"])

    assert both["best_checkpoint_step"] < both["steps"] == final_only["best_checkpoint_step"]
    test_names = [k for k in final_only["best_checkpoint_metrics"] if k.startswith("test/")]
    assert test_names
    for name in test_names:  # the same training run, so the same final state
        assert both["final"][name] == pytest.approx(final_only["best_checkpoint_metrics"][name])
        assert both["final"][name] != both["best_checkpoint_metrics"][name]
    assert not any(k.startswith("test/") for k in plain["final"])
    assert plain["best_checkpoint_metrics"] == both["best_checkpoint_metrics"]
