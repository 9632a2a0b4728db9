"""TensorBoard's view of a run: names that sort learning curves first, the custom layout."""

from __future__ import annotations

import re

from rnnlab.writers import final_score_names, scalar_layout


def test_best_checkpoint_scores_join_their_split_and_test_keeps_its_name() -> None:
    scored = {"valid/loss": 0.5, "valid/accuracy": 0.8, "test/accuracy": 0.7}
    assert final_score_names(scored, "valid") == {
        "valid/loss_best": 0.5,
        "valid/accuracy_best": 0.8,
        "test/accuracy": 0.7,
    }


def test_layout_puts_train_and_valid_of_each_metric_in_one_chart_first() -> None:
    layout = scalar_layout(["valid/loss", "valid/mse"])
    categories = list(layout)
    assert categories[0] == "learning curves: train and valid"
    assert categories.index("best checkpoint: valid and test") < categories.index("wall clock")
    curves = layout[categories[0]]
    assert sorted(curves) == ["loss", "mse"]
    (kind, (pattern,)) = curves["loss"]
    tags = ["train/loss", "valid/loss", "valid/loss_best", "test/loss", "train/loss_scale"]
    assert kind == "Multiline"
    assert [t for t in tags if re.search(pattern, t)] == ["train/loss", "valid/loss"]
    (_, (best,)) = layout["best checkpoint: valid and test"]["loss"]
    assert [t for t in tags if re.search(best, t)] == ["valid/loss_best", "test/loss"]
