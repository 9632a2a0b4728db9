"""Data layer: determinism in (seed, step), task layouts, splits, and loaders on tiny files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rnnlab import data
from rnnlab.data import (
    ADDING_BASELINE_MSE,
    DataNotFoundError,
    Vocabulary,
    adding_batch,
    copy_baseline_cross_entropy,
    copy_batch,
    epoch_permutation,
    ett_borders,
    fixed_eval_batches,
    forecast_batch,
    forecast_windows,
    kfold_split,
    lm_num_windows,
    lm_stream,
    lm_window,
    load_char_corpus,
    load_ett,
    load_labelled_text_files,
    load_polarity,
    load_word_corpus,
    pad_sequences,
    random_lm_windows,
    sequential_batches,
    shuffled_batch_indices,
    train_valid_split,
)

# ---------------------------------------------------------------- batching


def test_pad_sequences_pads_and_truncates():
    padded, lengths = pad_sequences([[1, 2, 3], [4], np.array([5, 6])], pad_value=-1)
    np.testing.assert_array_equal(padded, [[1, 2, 3], [4, -1, -1], [5, 6, -1]])
    np.testing.assert_array_equal(lengths, [3, 1, 2])
    padded, lengths = pad_sequences([[1, 2, 3], [4]], max_len=2)
    np.testing.assert_array_equal(padded, [[1, 2], [4, 0]])
    np.testing.assert_array_equal(lengths, [2, 1])
    assert padded.dtype == np.int32 and lengths.dtype == np.int32


def test_shuffled_batches_are_pure_in_step_and_cover_each_epoch():
    n, b = 10, 3  # 3 batches an epoch, one example dropped
    first = [shuffled_batch_indices(7, s, n, b) for s in range(6)]
    again = [shuffled_batch_indices(7, s, n, b) for s in reversed(range(6))][::-1]
    for (x, ex), (y, ey) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
        assert ex == ey
    assert [e for _, e in first] == [0, 0, 0, 1, 1, 1]
    epoch0 = np.concatenate([x for x, _ in first[:3]])
    assert len(set(epoch0.tolist())) == 9
    np.testing.assert_array_equal(epoch0, epoch_permutation(7, 0, n)[:9])
    assert not np.array_equal(epoch_permutation(7, 0, n), epoch_permutation(7, 1, n))
    last, _ = shuffled_batch_indices(7, 3, n, b, drop_last=False)
    assert len(last) == 1


def test_sequential_batches_keep_last_partial():
    batches = sequential_batches(7, 3)
    assert [len(x) for x in batches] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate(batches), np.arange(7))


# ---------------------------------------------------------------- synthetic


def test_adding_batch_deterministic_and_correct():
    a = adding_batch(0, 3, batch_size=4, length=10)
    b = adding_batch(0, 3, batch_size=4, length=10)
    c = adding_batch(0, 4, batch_size=4, length=10)
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    assert not np.array_equal(a["inputs"], c["inputs"])
    x, y = a["inputs"], a["targets"]
    assert x.shape == (4, 10, 2) and y.shape == (4, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    markers = x[..., 1]
    np.testing.assert_array_equal(markers.sum(1), 2)
    np.testing.assert_array_equal(markers[:, :5].sum(1), 1)
    np.testing.assert_allclose(y[:, 0], (x[..., 0] * markers).sum(1), rtol=1e-6)


def test_adding_baseline_mse():
    y = adding_batch(1, 0, batch_size=20000, length=4)["targets"]
    assert abs(np.mean((y - 1.0) ** 2) - ADDING_BASELINE_MSE) < 0.01


def test_copy_batch_layout():
    lag, k, s = 5, 3, 4
    batch = copy_batch(0, 0, batch_size=2, lag=lag, num_symbols=s, copy_length=k)
    x, y, w = batch["inputs"], batch["targets"], batch["weights"]
    total = lag + 2 * k
    assert x.shape == y.shape == w.shape == (2, total)
    assert ((x[:, :k] >= 1) & (x[:, :k] <= s)).all()
    np.testing.assert_array_equal(x[:, k + lag - 1], s + 1)
    assert (np.delete(x[:, k:], lag - 1, axis=1) == 0).all()
    np.testing.assert_array_equal(y[:, -k:], x[:, :k])
    assert (y[:, :-k] == 0).all()
    np.testing.assert_array_equal(w, (np.arange(total) >= total - k)[None].repeat(2, 0))
    assert x.max() < data.copy_vocab_size(s)
    assert math.isclose(copy_baseline_cross_entropy(8, 10, 100), 10 * math.log(8) / 120)
    assert math.isclose(copy_baseline_cross_entropy(8, 10, 100, scored_only=True), math.log(8))


def test_fixed_eval_batches_differ_from_training():
    evals = fixed_eval_batches(adding_batch, 0, 2, batch_size=3, length=6)
    again = fixed_eval_batches(adding_batch, 0, 2, batch_size=3, length=6)
    np.testing.assert_array_equal(evals[1]["inputs"], again[1]["inputs"])
    for i in range(2):
        train = adding_batch(0, i, batch_size=3, length=6)
        assert not np.array_equal(evals[i]["inputs"], train["inputs"])


# ---------------------------------------------------------------- text


def test_vocabulary_roundtrip_and_unk():
    vocab = Vocabulary(("<unk>", "a", "b"), unk="<unk>")
    np.testing.assert_array_equal(vocab.encode(["b", "zzz", "a"]), [2, 0, 1])
    assert vocab.decode(np.array([1, 2])) == ["a", "b"]
    assert Vocabulary.from_json(vocab.to_json()) == vocab
    with pytest.raises(KeyError):
        Vocabulary(("a",)).encode(["q"])


def test_char_corpus_split_and_vocab(tmp_path: Path):
    text = "abcdefghij" * 9 + "XYZ" + "a" * 7  # 100 chars; X, Y, Z only in valid
    path = tmp_path / "input.txt"
    path.write_text(text, encoding="utf-8")
    train, valid, vocab = load_char_corpus(path)
    assert (len(train), len(valid)) == (90, 10)
    assert vocab.tokens == tuple(sorted(set(text)))
    assert "".join(vocab.decode(np.concatenate([train, valid]))) == text


def test_word_corpus_eos_and_unk(tmp_path: Path):
    (tmp_path / "ptb.train.txt").write_text(" a b a \n b <unk> c \n", encoding="utf-8")
    (tmp_path / "ptb.valid.txt").write_text(" a q \n\n", encoding="utf-8")
    (tmp_path / "ptb.test.txt").write_text(" c", encoding="utf-8")
    corpus = load_word_corpus(tmp_path)
    vocab = corpus["vocab"]
    # counts: a 2, b 2, <eos> 2, <unk> 1, c 1 -> by count then alphabetically
    assert vocab.tokens == ("<eos>", "a", "b", "<unk>", "c")
    assert len(corpus["train"]) == 6 + 2
    assert vocab.decode(corpus["valid"]) == ["a", "<unk>", "<eos>", "<eos>"]
    assert vocab.decode(corpus["test"]) == ["c", "<eos>"]
    only = load_word_corpus(train=tmp_path / "ptb.test.txt")
    assert only["vocab"].tokens == ("<eos>", "c", "<unk>") and "valid" not in only


def test_lm_stream_windows_are_contiguous():
    ids = np.arange(23)
    stream = lm_stream(ids, 3)  # 3 rows of 7, 2 tokens dropped
    assert stream.shape == (3, 7)
    np.testing.assert_array_equal(stream[1], np.arange(7, 14))
    assert lm_num_windows(stream, 2) == 3
    assert lm_num_windows(stream, 4, drop_last=False) == 2
    windows = [lm_window(stream, i, 2) for i in range(3)]
    for x, y in windows:
        assert x.shape == y.shape == (3, 2)
        np.testing.assert_array_equal(y, x + 1)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in windows], 1), stream[:, :6])
    x, y = lm_window(stream, 1, 4)
    assert x.shape == (3, 2)
    np.testing.assert_array_equal(y[:, -1], stream[:, -1])
    with pytest.raises(IndexError):
        lm_window(stream, 3, 2)


def test_random_lm_windows_deterministic():
    ids = np.arange(50)
    x, y = random_lm_windows(ids, 0, 5, batch_size=4, seq_len=8)
    x2, _ = random_lm_windows(ids, 0, 5, batch_size=4, seq_len=8)
    x3, _ = random_lm_windows(ids, 0, 6, batch_size=4, seq_len=8)
    assert x.shape == y.shape == (4, 8)
    np.testing.assert_array_equal(x, x2)
    assert not np.array_equal(x, x3)
    np.testing.assert_array_equal(y, x + 1)


# ---------------------------------------------------------------- sentiment


def test_polarity_loader_and_vocab(tmp_path: Path):
    (tmp_path / "rt-polarity.pos").write_text("a good film .\ngreat !\n", encoding="utf-8")
    (tmp_path / "rt-polarity.neg").write_text("a bad film .\n", encoding="utf-8")
    sentences, labels, names = load_polarity(tmp_path)
    assert names == ("neg", "pos")
    assert sentences[0] == ["a", "bad", "film", "."]
    np.testing.assert_array_equal(labels, [0, 1, 1])
    vocab = data.build_vocab(sentences[:2])
    assert vocab.tokens[:2] == ("<pad>", "<unk>")
    ids, lengths = data.encode_and_pad(sentences, vocab, max_len=3)
    assert ids.shape == (3, 3) and ids.dtype == np.int32
    np.testing.assert_array_equal(lengths, [3, 3, 2])
    assert ids[2, 0] == 1 and ids[2, 2] == 0  # "great" unseen -> <unk>; padded
    assert len(data.build_vocab(sentences, max_size=4)) == 4


def test_kfold_disjoint_and_covering():
    n, k = 23, 5
    tests = []
    for fold in range(k):
        train, test = kfold_split(n, k, fold, seed=3)
        assert not set(train) & set(test)
        np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(n))
        tests.append(test)
    np.testing.assert_array_equal(np.sort(np.concatenate(tests)), np.arange(n))
    np.testing.assert_array_equal(kfold_split(n, k, 2, 3)[1], tests[2])
    train, valid = train_valid_split(20, 0.1, seed=0)
    assert len(valid) == 2 and not set(train) & set(valid) and len(train) == 18


# ---------------------------------------------------------------- timeseries


def write_ett(path: Path, rows: int) -> np.ndarray:
    raw = np.random.default_rng(0).normal(5.0, 3.0, size=(rows, 7)) + np.arange(rows)[:, None]
    lines = [",".join(("date",) + data.timeseries.ETT_COLUMNS[1:])]
    lines += [
        f"2016-07-01 {i:05d}," + ",".join(f"{v:.6f}" for v in row) for i, row in enumerate(raw)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(1, 8))


def test_ett_borders_match_informer():
    seq_len = 96
    assert ett_borders(seq_len) == ((0, 8640), (8640 - 96, 11520), (11520 - 96, 14400))


@pytest.mark.parametrize("features", ["S", "M", "MS"])
def test_load_ett_split_and_train_only_scaling(tmp_path: Path, features: str):
    path = tmp_path / "ETTh1.csv"
    raw = write_ett(path, 45)
    sizes = dict(train_rows=20, val_rows=10, test_rows=10)
    ett = load_ett(path, input_len=4, features=features, **sizes)
    f = 1 if features == "S" else 7
    assert ett.train.shape == (20, f) and ett.valid.shape == (14, f) and ett.test.shape == (14, f)
    np.testing.assert_allclose(ett.train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ett.train.std(0), 1.0, atol=1e-5)
    assert ett.columns[-1] == "OT"
    np.testing.assert_allclose(ett.mean[-1], raw[:20, 6].mean())
    np.testing.assert_allclose(ett.std[-1], raw[:20, 6].std())  # ddof=0
    # valid starts input_len rows before the train border; scaled with train stats
    np.testing.assert_allclose(
        ett.valid[4:, -1], (raw[20:30, 6] - ett.mean[-1]) / ett.std[-1], rtol=1e-5
    )
    assert ett.valid[:, -1].mean() > 1.0  # trend: later rows are not re-centred
    assert ett.target_index == (None if features == "M" else f - 1)


def test_forecast_batch_windows():
    series = np.arange(20, dtype=np.float32).reshape(10, 2)
    assert forecast_windows(series, 3, 2) == 6
    batch = forecast_batch(series, [0, 5], 3, 2, target_index=1)
    assert batch["inputs"].shape == (2, 3, 2) and batch["targets"].shape == (2, 2, 1)
    np.testing.assert_array_equal(batch["inputs"][1], series[5:8])
    np.testing.assert_array_equal(batch["targets"][1, :, 0], series[8:10, 1])
    assert forecast_batch(series, [0], 3, 2)["targets"].shape == (1, 2, 2)
    with pytest.raises(IndexError):
        forecast_batch(series, [6], 3, 2)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "load",
    [
        lambda p: load_char_corpus(p, config_key="task.path"),
        lambda p: load_word_corpus(train=p, config_key="task.path"),
        lambda p: load_polarity(p, config_key="task.path"),
        lambda p: load_ett(p, input_len=4, config_key="task.path"),
    ],
    ids=["char", "word", "polarity", "ett"],
)
def test_missing_file_names_path_and_config_key(tmp_path: Path, load):
    missing = tmp_path / "nope" / "file.txt"
    with pytest.raises(DataNotFoundError) as info:
        load(missing)
    assert isinstance(info.value, FileNotFoundError)
    assert str(missing) in str(info.value) and "task.path=" in str(info.value)


def test_malformed_files_raise_value_error(tmp_path: Path):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        load_char_corpus(empty)
    with pytest.raises(ValueError, match="empty"):
        load_word_corpus(train=empty)
    good = tmp_path / "good.txt"
    good.write_text("fine\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        load_labelled_text_files({"pos": good, "neg": empty})
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError):
        load_labelled_text_files({"pos": latin1})
    no_target = tmp_path / "no_ot.csv"
    no_target.write_text("date,HUFL\n2016,1.0\n", encoding="utf-8")
    with pytest.raises(ValueError, match="target"):
        load_ett(no_target, input_len=1, train_rows=1, val_rows=0, test_rows=0)
    bad_number = tmp_path / "bad.csv"
    bad_number.write_text("date,OT\n2016,abc\n", encoding="utf-8")
    with pytest.raises(ValueError, match="non-numeric"):
        load_ett(bad_number, input_len=1, train_rows=1, val_rows=0, test_rows=0)
    short = tmp_path / "short.csv"
    write_ett(short, 10)
    with pytest.raises(ValueError, match="rows"):
        load_ett(short, input_len=4)
