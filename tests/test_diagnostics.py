"""Diagnostics: gate traces equal the layer, the vanishing-gradient property, the CLI end to end."""

from __future__ import annotations

import functools
import json
import logging
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab import recurrence
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell
from rnnlab.diagnostics import adding_grad_flow, gate_trace, model_gate_traces, model_grad_flow
from rnnlab.diagnostics.cli import main as diagnose_main
from rnnlab.diagnostics.gradflow import perturbed_loss, stack_calls, zero_deltas
from rnnlab.tasks import AddingTask

REPO = Path(__file__).resolve().parents[1]
CELLS = [LSTMCell(6), LSTMCell(6, peephole=True), GRUCell(6), GRUCell(6, reset_after=False)]
CELLS += [ElmanCell(6)]


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: repr(c)[:40])
def test_gate_trace_reproduces_the_layer(cell) -> None:
    key = jax.random.PRNGKey(1)
    params = cell.init(key, 3)
    params = jax.tree_util.tree_map(lambda p: p + 0.3 * jax.random.normal(key, p.shape), params)
    xs = jax.random.normal(jax.random.PRNGKey(2), (2, 9, 3))
    _, ys = recurrence.run(cell, params, xs)
    for example in range(2):
        trace = gate_trace(cell, params, xs[example])
        assert trace["h"].shape == (9, 6)
        np.testing.assert_allclose(trace["h"], ys[example], atol=1e-5)
        np.testing.assert_allclose(trace["y"], ys[example], atol=1e-5)
    trace = gate_trace(cell, params, xs)  # batched
    c_prev = lambda a: jnp.concatenate([jnp.zeros_like(a[:, :1]), a[:, :-1]], axis=1)
    if isinstance(cell, LSTMCell):
        assert set(trace) >= {"input", "forget", "candidate", "output", "c", "h"}
        c = trace["forget"] * c_prev(trace["c"]) + trace["input"] * trace["candidate"]
        np.testing.assert_allclose(trace["c"], c, atol=1e-5)
        np.testing.assert_allclose(trace["h"], trace["output"] * jnp.tanh(trace["c"]), atol=1e-5)
    elif isinstance(cell, GRUCell):
        z, n = trace["update"], trace["candidate"]
        h = (1 - z) * n + z * c_prev(trace["h"])
        np.testing.assert_allclose(trace["h"], h, atol=1e-5)
    else:
        assert set(trace) == {"h", "y"}


@pytest.mark.parametrize("reverse", [False, True])
def test_layer_trace_matches_the_layer_with_lengths_resets_and_reverse(reverse: bool) -> None:
    cell = LSTMCell(5)
    params = cell.init(jax.random.PRNGKey(0), 4)
    xs = jax.random.normal(jax.random.PRNGKey(1), (3, 7, 4))
    lengths = jnp.array([7, 3, 5])
    resets = jnp.zeros((3, 7)).at[0, 4].set(1.0)
    kwargs = dict(lengths=lengths, resets=resets, reverse=reverse)
    final, ys = recurrence.run(cell, params, xs, backend="xla", **kwargs)  # the traced backend
    traced_final, traced_ys, trace = recurrence.run(cell, params, xs, trace=True, **kwargs)
    np.testing.assert_array_equal(traced_ys, ys)
    np.testing.assert_array_equal(trace.ys, ys)
    np.testing.assert_array_equal(traced_final.c, final.c)
    # The carry after each sequence's last processed step is its final carry.
    last = 0 if reverse else lengths - 1
    np.testing.assert_array_equal(trace.carries.c[jnp.arange(3), last], final.c)
    assert trace.gates["forget"].shape == (3, 7, 5)
    assert float(jnp.abs(trace.gates["forget"][1, 3:]).max()) == 0.0  # padded steps


def test_carry_deltas_shift_the_carry_at_their_step() -> None:
    """A perturbation at step k equals running to k, adding it to the carry, and continuing from
    there: the definition `d loss / d carry_t` in the gradient-flow plots relies on."""
    cell, k = GRUCell(4), 3
    params = cell.init(jax.random.PRNGKey(0), 2)
    xs = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 2))
    bump = jax.random.normal(jax.random.PRNGKey(2), (2, 4))
    deltas = jnp.zeros((2, 8, 4)).at[:, k].set(bump)
    final, ys = recurrence.run(cell, params, xs, carry_deltas=deltas)
    run = functools.partial(recurrence.run, cell, params, backend="xla")  # the perturbed backend
    carry_k, ys_head = run(xs[:, : k + 1])
    final_tail, ys_tail = run(xs[:, k + 1 :], initial_carry=carry_k + bump)
    np.testing.assert_allclose(final, final_tail, rtol=1e-6)
    np.testing.assert_allclose(ys[:, :k], ys_head[:, :k], rtol=1e-6)
    np.testing.assert_allclose(ys[:, k], ys_head[:, k] + bump, rtol=1e-6)
    np.testing.assert_allclose(ys[:, k + 1 :], ys_tail, rtol=1e-6)


def test_grad_flow_at_init_vanishes_for_the_tanh_rnn_not_the_lstm() -> None:
    """Adding problem, loss at the last step, T = 30: the gradient reaching step 0 relative to
    step T-1. A tanh RNN with PyTorch's default init (spectral radius ~0.6) loses ~7 orders of
    magnitude; an LSTM with forget bias 1 about one (margin > 1e4 for seeds 0-4)."""
    length = 30
    key = jax.random.PRNGKey(0)
    rnn = adding_grad_flow(ElmanCell(32, recurrent_init="uniform"), key, length, 16)
    lstm = adding_grad_flow(LSTMCell(32, forget_bias=1.0), key, length, 16)
    for series in (rnn, lstm):
        for name in ("x", "h"):
            assert series[name].shape == (length,) and np.all(np.isfinite(series[name]))
            assert series[name][-1] > 0
    ratio = lambda s, k: s[k][0] / s[k][-1]
    for name in ("x", "h"):
        assert ratio(lstm, name) > 1e3 * ratio(rnn, name), (ratio(lstm, name), ratio(rnn, name))
    assert lstm["c"].shape == (length,)


def test_model_grad_flow_perturbs_nothing_and_covers_every_layer() -> None:
    task = AddingTask(0, 4, length=10, eval_batches=1, eval_batch_size=4)
    model = task.build_model(GRUCell(5), {"bidirectional": True, "num_layers": 2})
    params = task.init_params(model, jax.random.PRNGKey(0))
    batch = task.eval_batches("valid")[0]
    loss, _ = task.loss(model, params, batch, None, None)
    calls = stack_calls(task, model, params, batch)
    perturbed = perturbed_loss(task, model, params, batch, zero_deltas(calls))
    np.testing.assert_allclose(perturbed, loss, rtol=1e-6)
    series = model_grad_flow(task, model, params, batch)
    traces = model_gate_traces(task, model, params, batch)
    assert set(traces) == {"stack/layer_0", "stack/layer_0/backward", "stack/layer_1"} | {
        "stack/layer_1/backward"
    }
    assert set(traces["stack/layer_1/backward"]) == {"reset", "update", "candidate", "h", "y"}
    assert set(series) == {
        "stack/input",
        "stack/layer_0/h",
        "stack/layer_0/backward/h",
        "stack/layer_1/h",
        "stack/layer_1/backward/h",
    }
    assert all(v.shape == (10,) and np.all(np.isfinite(v)) for v in series.values())


def test_model_grad_flow_and_gate_traces_see_inside_residual_blocks() -> None:
    """An xLSTM[1:1] stack (an mLSTM block, then an sLSTM block): each block's recurrence is
    perturbed and traced like a one-layer stack, named after its block. The sLSTM's recurrent
    blocks start at zero (xLSTM's init), so no gradient reaches its h before the last step."""
    from rnnlab.cells.mlstm import MLSTMCell

    task = AddingTask(0, 4, length=10, eval_batches=1, eval_batch_size=4)
    fields = {"block": "xlstm", "num_layers": 2, "slstm_at": [1], "embed_dim": 8, "num_heads": 2}
    model = task.build_model(MLSTMCell(8, num_heads=2), fields)
    params = task.init_params(model, jax.random.PRNGKey(0))
    batch = task.eval_batches("valid")[0]
    loss, _ = task.loss(model, params, batch, None, None)
    calls = stack_calls(task, model, params, batch)
    assert [(c.name, type(c.cell).__name__, c.block) for c in calls] == [
        ("stack/block_0", "BlockMLSTM", True),
        ("stack/block_1", "BlockSLSTM", True),
    ]
    perturbed = perturbed_loss(task, model, params, batch, zero_deltas(calls))
    np.testing.assert_allclose(perturbed, loss, rtol=1e-6)
    series = model_grad_flow(task, model, params, batch)
    assert set(series) == {f"stack/block_0/{leaf}" for leaf in ("input", "C", "n", "m", "h")} | {
        f"stack/block_1/{leaf}" for leaf in ("input", "c", "n", "m", "h")
    }
    assert all(v.shape == (10,) and np.all(np.isfinite(v)) for v in series.values())
    assert series["stack/block_0/C"][0] > 0 and series["stack/block_1/c"][0] > 0
    assert not np.any(series["stack/block_1/h"][:-1]) and series["stack/block_1/h"][-1] > 0
    traces = model_gate_traces(task, model, params, batch)
    assert set(traces) == {"stack/block_0", "stack/block_1"}
    assert {"input", "forget", "output", "h", "y"} <= set(traces["stack/block_1"])


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny debug runs of the runner (one multirun, one process): LSTM + attention pooling
    and a tanh RNN, on the adding problem with T = 8."""
    sweep = tmp_path_factory.mktemp("runs") / "sweep"
    cache = tmp_path_factory.mktemp("jax_cache")
    args = [
        sys.executable,
        str(REPO / "experiments" / "train.py"),
        "-m",
        "model=lstm_attention,rnn",
        "trainer=debug",
        "trainer.steps=3",
        "trainer.quiet=true",
        "model.cell.hidden_size=8",
        "model.attention_size=8",
        "task.length=8",
        "task.eval_batches=1",
        "task.eval_batch_size=8",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "RNNLAB_JAX_CACHE": str(cache), "CI": "true"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {}
    for job in sweep.iterdir():
        if job.is_dir():
            runs["lstm_attention" if "model=lstm_attention" in job.name else "rnn"] = job
    return runs


def read_events(logdir: Path) -> list[Any]:
    """Every Event record of the TensorBoard files directly in `logdir` (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            events.append(event)
    return events


def summary_values(logdir: Path) -> list[tuple[str, str, int]]:
    """`(tag, kind, step)` of every summary value: kind is `image`, `histo` or `scalar`."""
    found = []
    for event in read_events(logdir):
        for value in event.summary.value:
            found.append((value.tag, value.WhichOneof("value"), event.step))
    return found


def test_cli_writes_figures_json_and_attention_map(
    tiny_runs: dict[str, Path], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    run = tiny_runs["lstm_attention"]
    with caplog.at_level(logging.INFO):
        diagnose_main([str(run), "--checkpoint", "latest", "--example", "1"])
    out = run / "diagnostics"
    result = json.loads((out / "diagnostics.json").read_text())
    assert result["checkpoint_step"] == 3 and result["init"] is False
    assert len(result["grad_flow"]["stack/input"]) == 8
    assert result["attention"] == {"attention_weights": [8, 8]}
    assert list(result["gates"]["stack/layer_0"]) == ["input", "forget", "candidate", "output"]
    for stem in ("grad_flow", "gates_layer_1", "attention_pooling"):
        for suffix in (".png", ".pdf"):
            assert (out / f"{stem}{suffix}").stat().st_size > 0, stem
    arrays = np.load(out / "diagnostics.npz")
    np.testing.assert_allclose(arrays["attention/attention_weights"].sum(), 1.0, rtol=1e-5)
    assert arrays["gates/stack/layer_0/forget"].shape == (8, 8)
    # The ratio of c_t is taken at t = T - 2: at T - 1 its gradient is exactly zero.
    summary = result["grad_flow_summary"]["stack/layer_0/c"]
    assert summary["last_step"] == 6 and np.isfinite(summary["ratio_first_last"])
    # The console: what is done as it happens (log), then a readable summary (stdout).
    logged = caplog.text
    for step in ("restoring the checkpoint latest", "gradient flow", "gates_layer_1.png"):
        assert step in logged, step
    printed = capsys.readouterr().out
    assert "nan" not in printed.lower() and "{" not in printed, printed
    assert "layer 1, c_t" in printed and "input x_t" in printed, printed
    assert "forget f_t" in printed and "attention pooling, example 1" in printed, printed


def test_tensorboard_gets_images_and_histograms_replaced_on_rerun(
    tiny_runs: dict[str, Path], tmp_path: Path
) -> None:
    """No scalars (a diagnostic is a function of t, not a training curve); every figure once as
    an image and every distribution once as a histogram at the checkpoint step, however often
    the command runs; the run's own training events untouched."""
    run = tiny_runs["rnn"]
    training = sorted(run.glob("events.out.tfevents.*"))
    assert training
    args = [str(run), "--checkpoint", "latest", "--out", str(tmp_path / "figs")]
    diagnose_main(args)
    diagnose_main(args)
    diagnose_main([*args, "--init", "--what", "grad_flow"])
    logdir = run / "diagnostics"
    values = summary_values(logdir)
    tags = [tag for tag, _, _ in values]
    assert not [v for v in values if v[1] == "scalar"], values
    assert len(tags) == len(set(tags)), sorted(tags)  # one point per tag: replaced, not added
    images = {tag: step for tag, kind, step in values if kind == "image"}
    histograms = {tag: step for tag, kind, step in values if kind == "histo"}
    assert images == {
        "grad_flow/trained/figure": 3,
        "gates/trained/layer_1": 3,
        "grad_flow/init/figure": 0,
    }
    assert histograms == {
        "grad_flow/trained/log10_norm/input_x_t": 3,
        "grad_flow/trained/log10_norm/layer_1_h_t": 3,
        "states/trained/layer_1/hidden_state_h_t": 3,
        "grad_flow/init/log10_norm/input_x_t": 0,
        "grad_flow/init/log10_norm/layer_1_h_t": 0,
    }
    assert sorted(run.glob("events.out.tfevents.*")) == training
    assert not list(run.glob("events.out.tfevents.*.rnnlab-diagnostics-*"))


def test_cells_default_output_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    diagnose_main(["--cells", "rnn_tanh,lstm", "--length", "6", "--hidden", "4"])
    out = tmp_path / "runs" / "diagnostics" / "cells"
    assert (out / "grad_flow_cells.png").is_file() and (out / "grad_flow_cells.pdf").is_file()
    assert not (tmp_path / "diagnostics").exists()
    result = json.loads((out / "grad_flow_cells.json").read_text())
    assert result["grad_flow_summary"]["lstm"]["c"]["last_step"] == 4
    printed = capsys.readouterr().out
    assert "nan" not in printed.lower() and "{" not in printed, printed
    assert "lstm:" in printed and "c_t" in printed and "c_5 reaches the loss" in printed


def test_cli_compares_several_runs_at_init(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    runs = [str(tiny_runs["lstm_attention"]), str(tiny_runs["rnn"])]
    diagnose_main([*runs, "--init", "--what", "grad_flow", "--out", str(tmp_path)])
    assert (tmp_path / "grad_flow_comparison_init.png").is_file()
    assert (tmp_path / "grad_flow_comparison_init.pdf").is_file()
    summary = json.loads((tmp_path / "grad_flow_comparison_init.json").read_text())["summary"]
    assert len(summary) == 2
    for label in summary:
        result = json.loads((tmp_path / label / "diagnostics_init.json").read_text())
        assert result["init"] is True and result["checkpoint_step"] is None
        assert "gates" not in result
