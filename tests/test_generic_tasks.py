"""Generic data tasks pointed at a user's own files, with config overrides only.

- Forecasting any CSV (`task=ett` or `task=csv_forecast`): a `Month,Passengers` file (the
  airline-passengers layout) trains with `task.time_column`, `task.target` and fractional
  splits; a text column that is not named stops with one line naming it and the key to set;
  metrics come in normalised and original units.
- Text classification from a CSV / JSON-lines file: string labels become sorted class ids,
  listed by `describe()`; k-fold or a split column; bad files stop with one line.
- Language modelling on any text file or folder (files concatenated in sorted order).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rnnlab import cli
from rnnlab.data import text, timeseries
from rnnlab.errors import ConfigError, DataError
from rnnlab.tasks import ForecastTask, TextClassificationTask, TextLMTask
from rnnlab.writers import read_jsonl
from tests.test_train import FAST, compose_train


def write_passengers(path: Path, rows: int = 60) -> np.ndarray:
    """A monthly series in the layout of the public airline-passengers CSV."""
    months = [f"{1949 + i // 12}-{i % 12 + 1:02d}" for i in range(rows)]
    values = np.round(100 + 2 * np.arange(rows) + 20 * np.sin(np.arange(rows) / 2)).astype(int)
    lines = ['"Month","Passengers"'] + [f'"{m}",{v}' for m, v in zip(months, values, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return values.astype(np.float64)


def train(run_dir: Path, overrides: list[str]) -> dict:
    return cli.train_from_config(compose_train([*FAST, "model=lstm", *overrides]), run_dir)


# ---------------------------------------------------------------- forecasting


def test_split_fractions_and_counts() -> None:
    assert timeseries.resolve_split_rows(144, (0.7, 0.1, 0.2)) == (100, 14, 30)
    assert timeseries.resolve_split_rows(144, (0.5, 0.1, 0.1)) == (72, 14, 14)
    assert timeseries.resolve_split_rows(144, (100, 0.1, 20)) == (100, 14, 20)
    with pytest.raises(ConfigError, match=r"task.val_rows must be a row count .* got 1.5"):
        timeseries.resolve_split_rows(144, (100, 1.5, 20))


def test_unnamed_time_column_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "airline-passengers.csv"
    write_passengers(path)
    sizes = dict(input_len=6, horizon=3, train_rows=0.6, val_rows=0.2, test_rows=0.2)
    task = ForecastTask(0, 4, str(path), target="Passengers", **sizes)  # time_column: date
    with pytest.raises(ConfigError, match=r"task.time_column='date' is not a column .*Month"):
        _ = task.data
    task = ForecastTask(0, 4, str(path), target="Passengers", time_column=None, **sizes)
    with pytest.raises(DataError) as info:
        _ = task.data
    message = str(info.value)
    assert "column 'Month'" in message and "task.time_column=Month" in message
    assert "line 2" in message and "\n" not in message


def test_named_columns_skip_text_and_unknown_names_fail(tmp_path: Path) -> None:
    path = tmp_path / "stations.csv"
    rows = [f"t{i},station {i % 3},{i},{i * i}" for i in range(30)]
    path.write_text("time,name,load,temp\n" + "\n".join(rows) + "\n", encoding="utf-8")
    sizes = dict(input_len=4, horizon=2, train_rows=20, val_rows=5, test_rows=5)
    task = ForecastTask(
        0, 4, str(path), target="temp", features="MS", time_column="time",
        columns=["load", "temp"], **sizes,
    )  # fmt: skip
    assert task.data.columns == ("load", "temp") and task.data.num_features == 2
    bad = ForecastTask(0, 4, str(path), target="temp", time_column="time", columns=["lod"], **sizes)
    with pytest.raises(ConfigError, match=r"task.columns names 'lod'.*its columns: time, name"):
        _ = bad.data


def test_public_series_trains_with_overrides_only(tmp_path: Path) -> None:
    path = tmp_path / "airline-passengers.csv"
    raw = write_passengers(path)
    overrides = [
        "task=ett",
        f"task.path={path}",
        "task.time_column=Month",
        "task.target=Passengers",
        "task.train_rows=0.6",
        "task.val_rows=0.2",
        "task.test_rows=0.2",
        "task.input_len=6",
        "task.horizon=3",
        "task.eval_batch_size=16",
        "trainer.steps=3",
    ]
    results = train(tmp_path / "run", overrides)
    assert results["status"] == "completed"
    events = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    valid = next(e for e in events if "valid/mse" in e)
    std = raw[:36].std()  # 0.6 of 60 rows train; the error scales by the train std
    assert valid["valid/mse_original"] == pytest.approx(valid["valid/mse"] * std**2, rel=1e-4)
    assert valid["valid/mae_original"] == pytest.approx(valid["valid/mae"] * std, rel=1e-4)
    scored = results["best_checkpoint_metrics"]
    assert {"test/mse", "test/mse_original", "test/mae_original"} <= set(scored)
    baselines = results["baselines"]
    assert baselines["baseline/test_mae_original"] == pytest.approx(
        baselines["baseline/test_mae"] * std, rel=1e-4
    )


# ---------------------------------------------------------------- text classification


WORDS = {"pos": "good great fine nice", "neg": "bad awful poor sad", "meh": "so so ok fair"}


def write_reviews(path: Path, rows: int = 60, split: bool = False) -> None:
    rng = np.random.default_rng(0)
    labels = list(WORDS)
    records = []
    for i in range(rows):
        label = labels[i % 3]
        record = {"review": " ".join(rng.choice(WORDS[label].split(), size=5)), "stars": label}
        if split:
            record["part"] = ("train", "train", "train", "valid", "test")[i % 5]
        records.append(record)
    if path.suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    else:
        lines = ["review,stars"] + [f"{r['review']},{r['stars']}" for r in records]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_text_classification_from_a_csv_trains(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    write_reviews(path)
    overrides = [
        "task=text_classification",
        f"task.path={path}",
        "task.text_column=review",
        "task.label_column=stars",
        "task.max_len=8",
        "task.eval_batch_size=16",
        "trainer.steps=3",
    ]
    results = train(tmp_path / "run", overrides)
    assert results["status"] == "completed"
    assert {"test/accuracy", "valid/accuracy"} <= set(results["best_checkpoint_metrics"])
    assert results["baselines"]["baseline/accuracy"] == pytest.approx(1 / 3, abs=0.1)


def test_split_column_and_classes_in_describe(tmp_path: Path) -> None:
    path = tmp_path / "reviews.jsonl"
    write_reviews(path, split=True)
    task = TextClassificationTask(
        0, 4, str(path), text_column="review", label_column="stars", split_column="part",
        level="char", max_vocab=6,
    )  # fmt: skip
    facts = task.describe()
    assert facts["classes"] == ["meh", "neg", "pos"]  # sorted; id i is classes[i]
    assert (facts["train_examples"], facts["valid_examples"], facts["test_examples"]) == (
        36,
        12,
        12,
    )
    assert facts["vocab_size"] == 6 and task.model_fields()["num_outputs"] == 3
    assert task.train_batch(0)["inputs"].shape == (4, task.max_len)


@pytest.mark.parametrize(
    ("content", "kwargs", "expected"),
    [
        (
            "review,stars\nnice,pos\n",
            {"label_column": "label"},
            r"no column 'label'.*review, stars.*task.label_column",
        ),
        ("", {}, r"empty"),
        ("review,stars\n", {}, r"no data rows"),
        ("review,stars\nnice,pos\nbad,\n", {}, r"line 3: column 'stars' \(task.label_column\)"),
        ("review,stars\nnice,pos\nbad,pos\n", {}, r"one label only"),
    ],
    ids=["unknown label column", "empty file", "header only", "empty label", "one class"],
)  # fmt: skip
def test_bad_text_files_are_one_line_data_errors(
    tmp_path: Path, content: str, kwargs: dict, expected: str
) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text(content, encoding="utf-8")
    task = TextClassificationTask(
        0, 2, str(path), text_column="review", **{"label_column": "stars", **kwargs}
    )
    with pytest.raises(DataError, match=expected) as info:
        _ = task.data
    assert "\n" not in str(info.value)


def test_too_few_rows_for_a_batch_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    write_reviews(path, rows=12)
    task = TextClassificationTask(0, 64, str(path), text_column="review", label_column="stars")
    with pytest.raises(ConfigError, match="trainer.batch_size=64"):
        _ = task.steps_per_epoch


# ---------------------------------------------------------------- language modelling


def test_folder_is_its_files_in_sorted_order(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    (folder / "b").mkdir(parents=True)
    (folder / "b" / "two.txt").write_text("second file\n", encoding="utf-8")
    (folder / "a.txt").write_text("first file", encoding="utf-8")  # no final newline
    (folder / ".hidden").write_text("never read\n", encoding="utf-8")
    assert text.read_text_tree(folder) == "first file\nsecond file\n"
    corpus = text.load_text_corpus(folder, "word", 0.5, 0.25)
    assert len(corpus["train"]) == 3 and len(corpus["valid"]) == 1 and len(corpus["test"]) == 2
    assert corpus["vocab"].decode(corpus["train"]) == ["first", "file", "<eos>"]
    assert corpus["vocab"].decode(corpus["valid"]) == ["<unk>"]  # "second" is not in train
    assert corpus["vocab"].decode(corpus["test"]) == ["file", "<eos>"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no file"):
        text.read_text_tree(empty)


def test_language_model_on_a_folder_trains(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    rng = np.random.default_rng(0)
    words = "the cat sat on a mat and dog ran to big red house".split()
    for name in ("one.txt", "two.txt"):
        lines = [" ".join(rng.choice(words, size=8)) for _ in range(30)]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = TextLMTask(0, 4, str(folder), level="word", bptt=8, eval_batch_size=2, max_vocab=8)
    assert len(task.vocab) == 8 and task.splits == ("valid", "test")
    overrides = ["task=text_lm", f"task.path={folder}", "task.bptt=16", "task.eval_batch_size=4"]
    results = train(tmp_path / "run", [*overrides, "task.eval_max_windows=2", "trainer.steps=3"])
    assert results["status"] == "completed"
    assert {"valid/bpc", "test/bpc"} <= set(results["best_checkpoint_metrics"])
    with pytest.raises(ConfigError, match="task.train_fraction \\+ task.valid_fraction"):
        TextLMTask(0, 4, str(folder), train_fraction=0.9, valid_fraction=0.2)
