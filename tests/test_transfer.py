"""Warm starts (`trainer.init_from`, `rnnlab.transfer`) and the language model on MR's training
sentences (`task=sentiment_lm`) that pretrains a classifier (Dai & Le 2015).

`transfer` is checked leaf by leaf against hand-made trees (which leaves are copied, which keep
their initialisation, embedding rows moved by token); `SentimentLMTask` against the split of
`SentimentTask` (it never reads the test fold, and its word ids are the classifier's); and end to
end: a language model trained on the tiny MR files starts a classifier whose first state holds
the language model's embedding and LSTM, and whose head is the seed's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flax import traverse_util
from omegaconf import OmegaConf

from rnnlab import cli
from rnnlab.data.text import EOS, Vocabulary
from rnnlab.distributed import make_mesh
from rnnlab.errors import ConfigError, RunNotFoundError
from rnnlab.tasks import (
    SentimentLMTask,
    SentimentTask,
    TextClassificationLMTask,
    TextClassificationTask,
)
from rnnlab.train import TrainerConfig, init_state
from rnnlab.transfer import load_source, transfer
from tests.test_train import FAST, TASK_OVERRIDES, compose_train, make_tiny_data, run


def tree(**leaves: np.ndarray) -> dict:
    """A nested params dict from `{"a__b": x}` (double underscore: a path separator)."""
    return traverse_util.unflatten_dict({k.replace("__", "/"): v for k, v in leaves.items()}, "/")


def flat(params: dict) -> dict:
    return traverse_util.flatten_dict(params, sep="/")


def test_shared_leaves_are_copied_and_the_rest_keep_their_initialisation() -> None:
    target = tree(stack__w=np.zeros((3, 2)), head__kernel=np.zeros((2, 2)))
    source = tree(stack__w=np.ones((3, 2)), output__kernel=np.ones((2, 5)))
    params, report = transfer(target, source)
    assert np.array_equal(flat(params)["stack/w"], np.ones((3, 2)))
    assert np.array_equal(flat(params)["head/kernel"], np.zeros((2, 2)))
    assert report.copied == ("stack/w",) and report.fresh == ("head/kernel",)


def test_embedding_rows_follow_their_tokens() -> None:
    """Rows move by token: a permuted, smaller, larger vocabulary each get the right rows, and a
    token the source never saw keeps its fresh row."""
    source_vocab = Vocabulary(("<unk>", "b", "a", "c", EOS), unk="<unk>")
    table = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)  # row i: 3i, 3i+1, 3i+2
    target_vocab = Vocabulary(("<pad>", "<unk>", "a", "b", "new"), unk="<unk>")
    fresh = np.full((5, 3), -1.0, np.float32)
    params, report = transfer(
        tree(embed__embedding=fresh), tree(embed__embedding=table), None, target_vocab, source_vocab
    )
    got = np.asarray(flat(params)["embed/embedding"])
    np.testing.assert_array_equal(got[1], table[0])  # <unk>
    np.testing.assert_array_equal(got[2], table[2])  # a
    np.testing.assert_array_equal(got[3], table[1])  # b
    np.testing.assert_array_equal(got[0], fresh[0])  # <pad>: not in the source
    np.testing.assert_array_equal(got[4], fresh[4])  # new
    assert report.tokens_matched == {"embed/embedding": (3, 5)}
    assert "3 of 5 tokens" in report.summary()


def test_a_forward_direction_takes_the_unidirectional_layer() -> None:
    layer = {"w_ih": np.ones((4, 2)), "b": np.ones(4)}
    target = {
        "stack": {
            "layer_0": {
                "forward": {k: np.zeros_like(v) for k, v in layer.items()},
                "backward": {k: np.zeros_like(v) for k, v in layer.items()},
            }
        }
    }
    params, report = transfer(target, {"stack": {"layer_0": layer}})
    out = flat(params)
    assert all(np.all(out[f"stack/layer_0/forward/{k}"] == 1) for k in layer)
    assert all(np.all(out[f"stack/layer_0/backward/{k}"] == 0) for k in layer)
    assert set(report.fresh) == {"stack/layer_0/backward/w_ih", "stack/layer_0/backward/b"}


def test_init_params_patterns_restrict_the_copy() -> None:
    target = tree(embed__embedding=np.zeros((2, 2)), stack__w=np.zeros(3))
    source = tree(embed__embedding=np.ones((2, 2)), stack__w=np.ones(3))
    params, report = transfer(target, source, ["stack/*"])
    assert report.copied == ("stack/w",)
    assert np.all(flat(params)["embed/embedding"] == 0)
    with pytest.raises(ConfigError, match=r"trainer.init_params: 'stak/\*' selects no parameter"):
        transfer(target, source, ["stak/*"])


def test_mismatches_are_errors_that_name_the_parameter() -> None:
    target = tree(stack__w=np.zeros((3, 2)))
    with pytest.raises(ConfigError, match=r"stack/w is \(3, 2\) here and \(4, 2\) in the source"):
        transfer(target, tree(stack__w=np.ones((4, 2))))
    with pytest.raises(ConfigError, match="no parameter of this model is in the source run"):
        transfer(target, tree(other__w=np.ones((3, 2))))
    vocab = Vocabulary(("<unk>", "a"), unk="<unk>")
    with pytest.raises(ConfigError, match="embedding widths differ; set model.embed_dim"):
        transfer(
            tree(embed__embedding=np.zeros((2, 3))),
            tree(embed__embedding=np.ones((2, 4))),
            None,
            vocab,
            vocab,
        )


def test_bad_trainer_init_settings_name_their_key() -> None:
    with pytest.raises(ConfigError, match="trainer.init_checkpoint must be"):
        TrainerConfig(init_from="runs/x", init_checkpoint="last")
    with pytest.raises(ConfigError, match="trainer.init_from must be a run directory or null"):
        TrainerConfig(init_from=" ")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_data(tmp_path_factory.mktemp("data"))


def test_sentiment_lm_reads_the_training_sentences_only(data_dir: Path) -> None:
    """Its streams are the classifier split's training and validation sentences, each followed by
    <eos>, with the classifier's word ids; no sentence of the test fold is read."""
    path = str(data_dir / "rt-polarity")
    split = dict(num_folds=4, fold=1, split_seed=3, valid_fraction=0.2)
    lm = SentimentLMTask(0, 4, path, bptt=4, eval_batch_size=2, **split)
    clf = SentimentTask(0, 4, path, **split)
    assert lm.vocab.tokens == (*clf.vocab.tokens, EOS)
    assert lm.splits == ("valid",)
    sentences, _, _, _ = clf.load()
    indices = clf._split_indices(len(sentences), None)
    assert len(indices["test"]) > 0
    for name in ("train", "valid"):  # exactly these sentences, in order: nothing of the test fold
        expected = [w for i in indices[name] for w in (*sentences[i], EOS)]
        assert lm.vocab.decode(lm.corpus[name]) == expected


def test_a_language_model_warm_starts_a_classifier(tmp_path: Path, data_dir: Path) -> None:
    """End to end through the config: the classifier's first state holds the LM's trained
    embedding (row by token) and forward LSTM; its head and backward direction are the seed's."""
    lm_dir = tmp_path / "lm"
    lm_task = ["task=sentiment_lm", *TASK_OVERRIDES["sentiment_lm"], f"data_dir={data_dir}"]
    lm_cfg = compose_train([*FAST, *lm_task, "model=lstm", "trainer.steps=3"])
    assert cli.train_from_config(lm_cfg, lm_dir)["status"] == "completed"
    (lm_dir / ".hydra").mkdir()
    OmegaConf.save(lm_cfg, lm_dir / ".hydra" / "config.yaml")  # what rnnlab-train's Hydra writes
    source = load_source(lm_dir, "latest")
    base = FAST + [f"data_dir={data_dir}", "task=sentiment", "model=bilstm", "task.max_len=12"]
    cfg = compose_train(base)
    parts = cli.build(cfg)
    warm = init_state(
        parts["task"], parts["model"], parts["optimizer"], cfg.seed, make_mesh(), source
    )
    cold = init_state(parts["task"], parts["model"], parts["optimizer"], cfg.seed, make_mesh())
    warm, cold, lm = flat(warm["params"]), flat(cold["params"]), flat(source.params)
    clf_vocab = parts["task"].vocab
    rows = [source.vocab.token_id(t) for t in clf_vocab.tokens]
    np.testing.assert_array_equal(warm["embed/embedding"], np.asarray(lm["embed/embedding"])[rows])
    for leaf in ("w_ih", "w_hh", "b"):
        np.testing.assert_array_equal(
            warm[f"stack/layer_0/forward/{leaf}"], lm[f"stack/layer_0/{leaf}"]
        )
        np.testing.assert_array_equal(
            warm[f"stack/layer_0/backward/{leaf}"], cold[f"stack/layer_0/backward/{leaf}"]
        )
    for leaf in ("head/kernel", "head/bias"):
        np.testing.assert_array_equal(warm[leaf], cold[leaf])
    assert not np.array_equal(warm["embed/embedding"], cold["embed/embedding"])
    # And it trains, warm-started through the config, from the best checkpoint by default; the
    # results name the run and step it started from, and still do after a resume.
    clf_dir = tmp_path / "clf"
    overrides = ["task=sentiment", "model=bilstm", f"trainer.init_from={lm_dir}"]
    results = run(clf_dir, overrides, data_dir)
    assert results["status"] == "completed"
    assert all(np.isfinite(v) for v in results["best_checkpoint_metrics"].values())
    best = cli.restore_run_dir(lm_dir).step
    assert results["init_from"] == {"run_dir": str(lm_dir.absolute()), "step": best}
    resumed = run(clf_dir, [*overrides, "trainer.steps=9", "trainer.skip_finished=false"], data_dir)
    assert resumed["steps"] == 9 and resumed["init_from"] == results["init_from"]
    # A checkpoint step the source does not hold names the key and the steps it has.
    with pytest.raises(RunNotFoundError, match=r"trainer.init_from=.*step 2"):
        run(tmp_path / "clf2", [*overrides, "trainer.init_checkpoint=2"], data_dir)


def test_a_missing_source_run_names_the_key(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(RunNotFoundError, match=r"trainer.init_from=.*nowhere"):
        run(tmp_path, ["task=sentiment", f"trainer.init_from={tmp_path / 'nowhere'}"], data_dir)
    # Stopped before the run wrote anything: only the front end's record of the failure.
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


def test_a_file_of_labelled_texts_pretrains_its_own_classifier(tmp_path: Path) -> None:
    """`TextClassificationLMTask` at character level on a file with a split column: its streams
    are the train and valid rows' texts (never the test rows'), bits per character reported, and
    its vocabulary is the same file's classifier's plus <eos> (what the warm start maps by)."""
    rows = ["text,label,part"] + [
        f"{text},{label},{part}"
        for text, label, part in [
            ("good fun", "pos", "train"),
            ("bad day", "neg", "train"),
            ("fine film", "pos", "train"),
            ("fine day", "neg", "valid"),
            ("xyz qqq", "pos", "test"),
        ]
    ]
    path = tmp_path / "reviews.csv"
    path.write_text("\n".join(rows) + "\n")
    columns = dict(split_column="part", level="char", max_vocab=None)
    lm = TextClassificationLMTask(0, 1, str(path), bptt=2, eval_batch_size=1, **columns)
    assert lm.report_bpc and lm.separator == ""
    assert (
        "".join(lm.vocab.decode(lm.corpus["train"])) == f"good fun{EOS}bad day{EOS}fine film{EOS}"
    )
    assert "".join(lm.vocab.decode(lm.corpus["valid"])) == f"fine day{EOS}"
    assert "x" not in lm.vocab and "q" not in lm.vocab  # only in the test row
    clf = TextClassificationTask(0, 1, str(path), **columns)
    assert lm.vocab.tokens == (*clf.vocab.tokens, EOS)
