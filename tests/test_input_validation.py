"""Bad input where data and task settings enter: a `DataError` or `ConfigError` that names the
file, line and column, or the config key and its range (issue 11).

Everything is built directly in Python from small files in `tmp_path`: no shared data, no
network, no Hydra launch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hydra.utils import get_class

from rnnlab.data import text as text_data
from rnnlab.data.errors import DataNotFoundError, read_text
from rnnlab.data.sentiment import kfold_split, load_labelled_text_files, train_valid_split
from rnnlab.data.timeseries import (
    ett_borders,
    fill_missing,
    fit_standardizer,
    load_ett,
    normalize,
    parse_numeric_csv,
    read_numeric_csv,
)
from rnnlab.errors import ConfigError, DataError, UserError, user_message
from rnnlab.tasks import AddingTask, CharLMTask, CopyTask, ETTTask, SentimentTask, WordLMTask
from rnnlab.tasks.base import config_keys

CONF_TASK = Path(__file__).resolve().parents[1] / "conf" / "task"
HEADER = "date,HUFL,OT"


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def one_line(err: BaseException) -> str:
    """The message, checked to be what a console script prints: one line, a user error."""
    message = str(err)
    assert isinstance(err, UserError) and isinstance(err, ValueError)
    assert "\n" not in message and user_message(err) == message
    return message


# ---------------------------------------------------------------- numeric CSV content

CSV_ERRORS = [
    # (file content, task.missing policy, fragments of the message)
    pytest.param(
        f"{HEADER}\nd0,1,2\nd1,3,abc\n",
        "error",
        ["line 3", "column 'OT'", "field 3", "'abc'", "non-numeric", "fix the cell"],
        id="text-cell",
    ),
    pytest.param(
        f"{HEADER}\nd0,1,2\nd1,x1,4\n", "drop", ["line 3", "column 'HUFL'", "'x1'"], id="text-drop"
    ),
    pytest.param(
        f"{HEADER}\nd0,1,2\nd1,1,NA\n", "ffill", ["line 3", "'OT'", "'NA'", "non-numeric"], id="NA"
    ),
    pytest.param(
        f"{HEADER}\nd0,1,2\nd1,3,4\nd2,inf,5\n",
        "error",
        ["line 4", "column 'HUFL'", "'inf'", "not a finite number", "task.missing"],
        id="inf",
    ),
    pytest.param(
        f"{HEADER}\nd0,1,-Infinity\n", "interpolate", ["line 2", "'OT'", "finite"], id="-inf"
    ),
    pytest.param(f"{HEADER}\nd0,1,2\nd1,1e999,3\n", "drop", ["line 3", "'1e999'"], id="overflow"),
    pytest.param(
        f"{HEADER}\nd0,1,inf\nd1,abc,3\n", "error", ["line 2", "'OT'", "finite"], id="inf-first"
    ),
    pytest.param(
        f"{HEADER}\nd0,1,2\nd1,3,\n",
        "error",
        ["line 3", "column 'OT'", "empty cell", "task.missing=drop, ffill or interpolate"],
        id="empty-cell",
    ),
    pytest.param(
        f"{HEADER}\nd0,1,2\nd1,3,4\nd2,nan,6\n",
        "error",
        ["line 4", "column 'HUFL'", "'nan'", "missing value"],
        id="nan",
    ),
    pytest.param(
        f"{HEADER}\n\nd0,1,2\n\nd1,3, NaN \n", "error", ["line 5", "' NaN '"], id="blank-lines"
    ),
    pytest.param(f"{HEADER}\nd0,1,2\nd1,3\n", "error", ["line 3", "2 fields", "3"], id="ragged"),
    pytest.param(f"{HEADER}\n", "error", ["header but no data rows"], id="header-only"),
    pytest.param("", "error", ["empty", "task.path"], id="empty-file"),
    pytest.param("date,OT,OT\nd0,1,2\n", "error", ["line 1", "'OT' twice"], id="dup-column"),
    pytest.param(
        f"{HEADER}\nd0,1,\nd1,2,3\n",
        "ffill",
        ["line 2", "'OT'", "before the first number", "task.missing=ffill", "task.missing=drop"],
        id="ffill-leading",
    ),
    pytest.param(
        f"{HEADER}\nd0,1,nan\nd1,2,3\n",
        "interpolate",
        ["line 2", "'OT'", "before the first number"],
        id="interp-leading",
    ),
    pytest.param(
        f"{HEADER}\nd0,1,2\nd1,2,3\nd2,3,\n",
        "interpolate",
        ["line 4", "'OT'", "after the last number", "task.missing=interpolate"],
        id="interp-trailing",
    ),
    pytest.param(
        f"{HEADER}\nd0,1,\nd1,2,nan\n", "ffill", ["'OT'", "no numbers at all"], id="all-missing"
    ),
    pytest.param(
        f"{HEADER}\nd0,1,\nd1,,3\n", "drop", ["every row has a missing value"], id="drop-all"
    ),
]


@pytest.mark.parametrize(("content", "missing", "fragments"), CSV_ERRORS)
def test_bad_csv_names_file_line_and_column(
    tmp_path: Path, content: str, missing: str, fragments: list[str]
):
    path = write(tmp_path / "ETTh1.csv", content)
    with pytest.raises(DataError) as info:
        read_numeric_csv(path, missing=missing)
    message = one_line(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_bad_cell_reported_by_load_ett_too(tmp_path: Path):
    path = write(tmp_path / "ETTh1.csv", f"{HEADER}\n" + "d,1,2\n" * 15 + "d,1,abc\n")
    with pytest.raises(DataError, match=r"ETTh1.csv line 17, column 'OT' \(field 3\): 'abc'"):
        load_ett(path, input_len=1, train_rows=2, val_rows=1, test_rows=1)


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"date,OT\nd0,1\nd1,\xff2\n", ["byte offset 16", "line 3", "0xff", "iconv"]),
        (b"a" * 20000 + b"\n\xe9t\xe9\n", ["byte offset 20001", "line 2", "0xe9"]),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), ["byte offset 0", "line 1", "0x89"]),
        (b"hello\nwor\x00ld\n", ["NUL byte", "byte offset 9", "line 2", "binary"]),
        (b"", ["empty"]),
        (b" \n\t\n\n", ["empty"]),
    ],
    ids=["csv-latin1", "past-8k", "png", "nul", "empty", "blank"],
)
@pytest.mark.parametrize(
    "load",
    [
        lambda p: text_data.load_char_corpus(p),
        lambda p: text_data.load_word_corpus(train=p),
        lambda p: load_labelled_text_files({"pos": p}),
        lambda p: load_ett(p, input_len=1, train_rows=1, val_rows=1, test_rows=1),
    ],
    ids=["char", "word", "sentiment", "ett"],
)
def test_binary_empty_or_non_utf8_file_is_a_data_error(
    tmp_path: Path, content: bytes, fragments: list[str], load: Callable[[Path], Any]
):
    path = write(tmp_path / "corpus.txt", content)
    with pytest.raises(DataError) as info:
        load(path)
    message = one_line(info.value)
    assert str(path) in message and "task.path" in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# ---------------------------------------------------------------- task settings


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small files for every data-backed task: 100 ETT rows, a 2,000-character text, PTB and
    MR folders."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    rows = [f"d{i},{v:.3f},{w:.3f}" for i, (v, w) in enumerate(rng.normal(size=(100, 2)))]
    ett = write(root / "ETTh1.csv", "\n".join([HEADER, *rows]) + "\n")
    words = "the cat sat on a mat and dog ran to big red house".split()
    char = write(root / "input.txt", " ".join(rng.choice(words, size=500)) + "\n")
    ptb = root / "ptb"
    ptb.mkdir()
    for split, n in (("train", 40), ("valid", 10), ("test", 10)):
        lines = [" ".join(rng.choice(words, size=6)) for _ in range(n)]
        write(ptb / f"ptb.{split}.txt", "\n".join(lines) + "\n")
    mr = root / "mr"
    mr.mkdir()
    for name in ("pos", "neg"):
        lines = [" ".join(rng.choice(words, size=5)) for _ in range(30)]
        write(mr / f"rt-polarity.{name}", "\n".join(lines) + "\n")
    return {"ett": ett, "char": char, "ptb": ptb, "mr": mr}


ETT = dict(input_len=8, horizon=4, train_rows=60, val_rows=20, test_rows=20)
TASKS: dict[str, Callable[..., Any]] = {
    "adding": lambda d, **kw: AddingTask(0, kw.pop("batch_size", 4), **kw),
    "copy": lambda d, **kw: CopyTask(0, kw.pop("batch_size", 4), **kw),
    "ett": lambda d, **kw: ETTTask(0, kw.pop("batch_size", 4), d["ett"], **{**ETT, **kw}),
    "sentiment": lambda d, **kw: SentimentTask(0, kw.pop("batch_size", 4), d["mr"], **kw),
    "char_lm": lambda d, **kw: CharLMTask(
        0, kw.pop("batch_size", 4), d["char"], **{"bptt": 8, "eval_batch_size": 2, **kw}
    ),
    "word_lm": lambda d, **kw: WordLMTask(
        0, kw.pop("batch_size", 4), d["ptb"], **{"bptt": 8, "eval_batch_size": 2, **kw}
    ),
}

BAD_SETTINGS = [
    # (task, settings, fragments of the message)
    ("adding", {"length": 1}, ["task.length must be >= 2, got 1"]),
    ("adding", {"length": "long"}, ["task.length must be an integer, got 'long'"]),
    ("adding", {"length": 2.5}, ["task.length must be an integer"]),
    ("adding", {"length": True}, ["task.length must be an integer"]),
    ("adding", {"eval_batches": 0}, ["task.eval_batches must be >= 1, got 0"]),
    ("adding", {"eval_batch_size": -3}, ["task.eval_batch_size must be >= 1, got -3"]),
    ("adding", {"batch_size": 0}, ["trainer.batch_size must be >= 1, got 0"]),
    ("copy", {"lag": 0}, ["task.lag must be >= 1, got 0"]),
    ("copy", {"num_symbols": 0}, ["task.num_symbols must be >= 1, got 0"]),
    ("copy", {"copy_length": -1}, ["task.copy_length must be >= 1, got -1"]),
    ("copy", {"eval_batches": 0}, ["task.eval_batches must be >= 1"]),
    ("ett", {"horizon": 0}, ["task.horizon must be >= 1, got 0"]),
    ("ett", {"input_len": 0}, ["task.input_len must be >= 1, got 0"]),
    ("ett", {"train_rows": 0}, ["task.train_rows must be >= 1, got 0"]),
    ("ett", {"val_rows": -1}, ["task.val_rows must be >= 1, got -1"]),
    ("ett", {"features": "X"}, ["task.features must be one of S, M, MS; got 'X'"]),
    ("ett", {"missing": "bfill"}, ["task.missing must be one of error, drop, ffill, interpolate"]),
    ("ett", {"target": "XX"}, ["task.target='XX' is not a numeric column", "HUFL, OT"]),
    ("ett", {"target": None}, ["task.target must be a column name"]),
    ("ett", {"eval_batch_size": 0}, ["task.eval_batch_size must be >= 1"]),
    ("ett", {"eval_max_batches": 0}, ["task.eval_max_batches must be >= 1, got 0"]),
    ("ett", {"residual": "yes"}, ["task.residual must be true or false"]),
    ("ett", {"input_len": 50, "horizon": 11}, ["= 61 rows do not fit in task.train_rows=60"]),
    ("ett", {"horizon": 21}, ["task.horizon=21 is longer than task.val_rows=20"]),
    ("ett", {"test_rows": 3}, ["task.horizon=4 is longer than task.test_rows=3"]),
    ("ett", {"batch_size": 50}, ["trainer.batch_size=50 is more than the 49 training windows"]),
    ("ett", {"test_rows": 21}, ["has 100 data rows", "task.train_rows + task.val_rows"]),
    ("ett", {"path": None}, ["task.path must be a file or directory path"]),
    ("sentiment", {"fold": 10}, ["task.fold must be in [0, task.num_folds=10), got 10"]),
    ("sentiment", {"fold": -1, "num_folds": 5}, ["task.fold must be in [0, task.num_folds=5)"]),
    ("sentiment", {"num_folds": 1}, ["task.num_folds must be >= 2, got 1"]),
    ("sentiment", {"num_folds": 61}, ["60 examples are too few for task.num_folds=61"]),
    ("sentiment", {"valid_fraction": 1.0}, ["task.valid_fraction must be in (0, 1), got 1"]),
    ("sentiment", {"valid_fraction": float("nan")}, ["task.valid_fraction must be in (0, 1)"]),
    ("sentiment", {"valid_fraction": 0.999}, ["leaves none for training"]),
    ("sentiment", {"max_len": 0}, ["task.max_len must be >= 1, got 0"]),
    ("sentiment", {"min_count": 0}, ["task.min_count must be >= 1, got 0"]),
    ("sentiment", {"max_vocab": 1}, ["task.max_vocab must be >= 2, got 1"]),
    ("sentiment", {"pooling": "first"}, ["task.pooling must be one of last, mean, max, attention"]),
    ("sentiment", {"split_seed": -1}, ["task.split_seed must be >= 0, got -1"]),
    ("sentiment", {"batch_size": 50}, ["trainer.batch_size=50 is more than the 49 training"]),
    ("char_lm", {"bptt": 0}, ["task.bptt must be >= 1, got 0"]),
    ("char_lm", {"train_fraction": 1.0}, ["task.train_fraction must be in (0, 1), got 1"]),
    ("char_lm", {"train_fraction": 0.0001}, ["too few for task.train_fraction=0.0001"]),
    ("char_lm", {"eval_max_windows": 0}, ["task.eval_max_windows must be >= 1, got 0"]),
    ("char_lm", {"init_scale": 0.0}, ["task.init_scale must be > 0, got 0"]),
    ("char_lm", {"sample_temperature": -1}, ["task.sample_temperature must be >= 0, got -1"]),
    ("char_lm", {"sample_top_k": -1}, ["task.sample_top_k must be >= 0, got -1"]),
    ("char_lm", {"sample_top_k": 99}, ["task.sample_top_k must be in [0, 17]", "got 99"]),
    ("char_lm", {"sample_prompt": ""}, ["task.sample_prompt must be a text"]),
    ("char_lm", {"sample_prompt": "Zq! cat"}, ["task.sample_prompt has characters", "'!Zq'"]),
    ("char_lm", {"tie_weights": 1}, ["task.tie_weights must be true or false"]),
    ("char_lm", {"batch_size": 1000}, ["too few for trainer.batch_size=1000 rows"]),
    ("char_lm", {"bptt": 500}, ["too short for task.bptt=500", "trainer.batch_size=4"]),
    ("char_lm", {"eval_batch_size": 200}, ["valid text", "task.eval_batch_size=200"]),
    ("word_lm", {"sample_prompt": "  \n"}, ["task.sample_prompt must be a text"]),
    ("word_lm", {"eval_batch_size": 40}, ["valid text", "has 70 tokens"]),
    ("word_lm", {"seed": -1}, ["seed must be >= 0, got -1"]),
]


@pytest.mark.parametrize(
    ("task", "settings", "fragments"),
    BAD_SETTINGS,
    ids=[f"{t}-{'-'.join(map(str, s))}-{i}" for i, (t, s, _) in enumerate(BAD_SETTINGS)],
)
def test_bad_setting_names_the_key_and_range(
    data: dict[str, Path], task: str, settings: dict[str, Any], fragments: list[str]
):
    settings = dict(settings)
    build = TASKS[task]
    if "seed" in settings:  # the seed is positional
        seed = settings.pop("seed")
        build = lambda d, **kw: WordLMTask(seed, 4, d["ptb"], bptt=8, eval_batch_size=2, **kw)  # noqa: E731
    if "path" in settings:
        path = settings.pop("path")
        build = lambda d, **kw: ETTTask(0, 4, path, **{**ETT, **kw})  # noqa: E731
    with pytest.raises(ConfigError) as info:
        built = build(data, **settings)
        built.steps_per_epoch  # noqa: B018 - the trainer's first question: reads the data
    message = one_line(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize(
    ("task", "settings"),
    [
        ("adding", {"length": 2, "eval_batches": 1, "eval_batch_size": 1, "batch_size": 1}),
        ("copy", {"lag": 1, "num_symbols": 1, "copy_length": 1}),
        ("ett", {"input_len": 56, "horizon": 4, "batch_size": 1}),  # one training window
        ("ett", {"horizon": 20, "input_len": 1, "batch_size": 40}),  # horizon = val_rows
        ("ett", {"test_rows": 20, "val_rows": 20, "train_rows": 60}),  # 100 rows exactly
        ("sentiment", {"fold": 9, "max_vocab": 2, "batch_size": 49}),
        ("char_lm", {"sample_prompt": "the cat", "sample_top_k": 17, "init_scale": 0.05}),
        ("word_lm", {"sample_prompt": "zebra", "eval_max_windows": 1}),  # <unk> for zebra
    ],
)
def test_settings_at_the_edge_of_their_range_are_accepted(
    data: dict[str, Path], task: str, settings: dict[str, Any]
):
    built = TASKS[task](data, **settings)
    built.train_batch(0)
    for split in built.splits:
        assert next(iter(built.eval_batches(split)))


def test_ett_window_boundary_is_exact(data: dict[str, Path]):
    task = TASKS["ett"](data, input_len=56, horizon=4, batch_size=1)
    assert task.steps_per_epoch == 1 and task.describe()["train_windows"] == 1


def test_every_task_config_key_is_a_constructor_argument():
    for config in CONF_TASK.glob("*.yaml"):
        settings = yaml.safe_load(config.read_text())
        cls = get_class(settings.pop("_target_"))  # every preset, no list to keep
        allowed = config_keys(cls)
        assert set(settings) <= set(allowed), (config.name, set(settings) - set(allowed))
    assert yaml.safe_load((CONF_TASK / "ett.yaml").read_text())["missing"] == "error"


def test_data_helpers_name_the_task_keys():
    with pytest.raises(ConfigError, match=r"task\.fold must be in \[0, task\.num_folds=3\)"):
        kfold_split(10, 3, 3, seed=0)
    with pytest.raises(ConfigError, match=r"task\.valid_fraction must be in \(0, 1\)"):
        train_valid_split(10, 0.0, seed=0)
    with pytest.raises(ConfigError, match=r"task\.input_len must be in \[1, task\.train_rows=5\]"):
        ett_borders(6, 5, 1, 1)
    with pytest.raises(ConfigError, match=r"task\.missing must be one of"):
        read_numeric_csv("never-read.csv", missing="mean")


# ---------------------------------------------------------------- missing-value policies

TINY = "date,A,OT\nd0,1,10\nd1,,\nd2,3,nan\nd3,4,40\n"
"""Row 1 misses A and OT, row 2 misses OT; the numbers are on the lines 2, 3, 4, 5."""


@pytest.mark.parametrize(
    ("missing", "expected"),
    [
        ("drop", [[1, 10], [4, 40]]),
        ("ffill", [[1, 10], [1, 10], [3, 10], [4, 40]]),
        ("interpolate", [[1, 10], [2, 20], [3, 30], [4, 40]]),
    ],
)
def test_missing_policy_gives_hand_computed_values(tmp_path: Path, missing: str, expected):
    path = write(tmp_path / "tiny.csv", TINY)
    values, columns = read_numeric_csv(path, missing=missing)
    assert columns == ("A", "OT") and values.dtype == np.float64
    np.testing.assert_array_equal(values, np.array(expected, dtype=np.float64))


def test_missing_policy_error_names_the_first_gap(tmp_path: Path):
    path = write(tmp_path / "tiny.csv", TINY)
    with pytest.raises(DataError, match=r"tiny.csv line 3, column 'A' \(field 2\): missing value"):
        read_numeric_csv(path)
    table = parse_numeric_csv(path)
    assert np.isnan(table.values).sum() == 3 and list(table.lines) == [2, 3, 4, 5]
    with pytest.raises(DataError, match=r"line 3, column 'OT' \(field 3\): missing value"):
        fill_missing(table.select([1]))  # only the OT column


def test_policy_applies_to_the_columns_used(tmp_path: Path):
    # HUFL has a gap, OT has none: univariate ("S") forecasting is unaffected by it.
    rows = [f"d{i},{'' if i == 3 else i},{i * i}" for i in range(8)]
    path = write(tmp_path / "ETTh1.csv", "\n".join([HEADER, *rows]) + "\n")
    sizes = dict(input_len=1, train_rows=4, val_rows=2, test_rows=2)
    univariate = load_ett(path, features="S", **sizes)
    raw = np.arange(8.0)[:, None] ** 2
    mean, std = fit_standardizer(raw[:4])
    np.testing.assert_array_equal(univariate.train, normalize(raw, mean, std)[:4])
    with pytest.raises(DataError, match=r"line 5, column 'HUFL'"):
        load_ett(path, features="M", **sizes)
    # interpolate fills HUFL row 3 with 3 (between 2 and 4): the clean series exactly.
    filled = load_ett(path, features="M", missing="interpolate", **sizes)
    full = np.stack([np.arange(8.0), raw[:, 0]], axis=1)
    mean, std = fit_standardizer(full[:4])
    np.testing.assert_array_equal(filled.train, normalize(full, mean, std)[:4])
    np.testing.assert_array_equal(filled.test, normalize(full, mean, std)[5:8])
    # drop removes row 3, so the splits count the 7 rows left: 4 + 2 + 2 = 8 do not fit.
    with pytest.raises(ConfigError, match=r"has 7 data rows \(1 dropped by task.missing=drop\)"):
        load_ett(path, features="M", missing="drop", **sizes)
    dropped = load_ett(
        path, features="M", missing="drop", input_len=1, train_rows=4, val_rows=2, test_rows=1
    )
    kept = full[[0, 1, 2, 4, 5, 6, 7]]
    mean, std = fit_standardizer(kept[:4])
    np.testing.assert_array_equal(dropped.train, normalize(kept, mean, std)[:4])


def test_ett_task_passes_its_policy_to_the_loader(tmp_path: Path):
    rows = [f"d{i},{i},{'' if i in (3, 4) else 2 * i}" for i in range(30)]
    path = write(tmp_path / "ETTh1.csv", "\n".join([HEADER, *rows]) + "\n")
    sizes = dict(input_len=2, horizon=2, train_rows=10, val_rows=10, test_rows=10)
    task = ETTTask(0, 2, str(path), **sizes)  # reads the file when its data is first used
    with pytest.raises(DataError, match=r"line 5, column 'OT' .*task\.missing=drop, ffill"):
        task.steps_per_epoch  # noqa: B018
    task = ETTTask(0, 2, str(path), missing="ffill", **sizes)
    raw = np.array([2.0 * i for i in range(30)])
    raw[3:5] = 4.0  # the last number above the gap
    mean, std = fit_standardizer(raw[:10, None])
    np.testing.assert_array_equal(task.data.train, normalize(raw[:, None], mean, std)[:10])


# ---------------------------------------------------------------- clean files are unchanged


def reference_ett(path: Path, input_len: int, sizes: dict[str, int]) -> np.ndarray:
    """The loader before issue 11: `float()` of every cell, train-split z-scoring (all columns)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    raw = np.array([[float(v) for v in line.split(",")[1:]] for line in lines[1:] if line])
    mean, std = fit_standardizer(raw[: sizes["train_rows"]])
    return normalize(raw, mean, std)


@pytest.mark.parametrize("missing", ["error", "drop", "ffill", "interpolate"])
def test_clean_csv_loads_bit_identically_under_every_policy(tmp_path: Path, missing: str):
    rng = np.random.default_rng(3)
    raw = rng.normal(10.0, 4.0, size=(40, 7))
    header = "date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT"
    rows = [f"d{i}," + ",".join(repr(float(v)) for v in row) for i, row in enumerate(raw)]
    path = write(tmp_path / "ETTh1.csv", "\n".join([header, *rows]) + "\n")
    sizes = dict(train_rows=20, val_rows=10, test_rows=10)
    ett = load_ett(path, input_len=3, features="M", missing=missing, **sizes)
    expected = reference_ett(path, 3, sizes)
    assert ett.train.dtype == np.float32
    assert ett.train.tobytes() == expected[:20].tobytes()
    assert ett.valid.tobytes() == expected[17:30].tobytes()
    assert ett.test.tobytes() == expected[27:40].tobytes()
    values, _ = read_numeric_csv(path, missing=missing)
    assert values.tobytes() == raw.tobytes()  # repr round-trips exactly


def test_clean_text_reads_as_before(tmp_path: Path):
    content = "caf\u00e9 na\u00efve\r\nline two\rthree\n" + "\u00e9" * 5000
    path = write(tmp_path / "input.txt", content.encode("utf-8"))
    assert read_text(path, "task.path") == path.read_text(encoding="utf-8")
    train, valid, vocab = text_data.load_char_corpus(path)
    assert "".join(vocab.decode(np.concatenate([train, valid]))) == path.read_text("utf-8")


def test_settings_are_checked_before_the_file_is_read(tmp_path: Path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(ConfigError, match=r"task\.horizon must be >= 1, got 0"):
        ETTTask(0, 4, str(missing), **{**ETT, "horizon": 0})
    task = ETTTask(0, 4, str(missing), **ETT)  # the trainer's steps_per_epoch reads the file
    with pytest.raises(DataNotFoundError, match=r"task\.path"):
        task.steps_per_epoch  # noqa: B018


def test_two_hydra_modes_at_once_is_a_one_line_error() -> None:
    """`rnnlab-train -m ... --cfg job`: Hydra's ValueError becomes one line saying what to drop."""
    err = ValueError(
        "Only one of --run, --multirun, --cfg, --info and --shell_completion can be specified"
    )
    message = user_message(err)
    assert message is not None and "\n" not in message and "leave out -m" in message
    assert user_message(ValueError("a programming error")) is None
