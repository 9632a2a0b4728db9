"""The recurrence options travel as one object from the config to every layer.

`model.kernel` and `model.input_projection` are settable like any backbone field, the layer
receives exactly the backbone's `RecurrentOptions`, the run log names each layer's backend, an
impossible explicit kernel stops at construction, and runs saved before those keys existed
still compare equal to today's config.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import pytest

from rnnlab import cli, recurrence
from rnnlab.cells import GRUCell, LSTMCell
from rnnlab.errors import ConfigError
from tests.test_train import compose_train


@pytest.mark.parametrize(
    ("overrides", "kernel", "projection"),
    [
        ([], "auto", "hoisted"),
        (["model.kernel=xla", "model.input_projection=per_step"], "xla", "per_step"),
    ],
)
def test_kernel_and_projection_reach_the_layer(
    overrides: list[str], kernel: str, projection: str
) -> None:
    cfg = compose_train(["model.cell.hidden_size=8", "model.unroll=2", *overrides])
    _, model = cli.build_task_and_model(cfg)
    options = model.options
    assert (options.kernel, options.input_projection, options.unroll) == (kernel, projection, 2)
    assert model.make_stack().options is not None and model.make_stack().options == options


def test_each_layer_logs_its_backend(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recurrence, "_LOGGED_BACKENDS", set())  # earlier tests logged theirs
    monkeypatch.setattr(recurrence.log, "disabled", False)  # a logging config may have disabled it
    cell = GRUCell(hidden_size=5)
    params = recurrence.init_stack(cell, jax.random.PRNGKey(0), 3, num_layers=2)
    xs = jnp.ones((2, 4, 3))
    caplog.set_level(logging.INFO, logger="rnnlab.recurrence")
    options = recurrence.RecurrentOptions(kernel="xla")
    recurrence.run_stack(cell, params, xs, options=options)
    assert "layer_0: XLA scan (kernel=xla)" in caplog.text
    assert "layer_1: XLA scan (kernel=xla)" in caplog.text
    per_step = recurrence.RecurrentOptions(input_projection="per_step")
    recurrence.run_stack(cell, params, xs, options=per_step)
    assert 'layer_0: XLA scan: input_projection="per_step" runs on the XLA scan' in caplog.text


def test_impossible_native_kernel_stops_at_construction() -> None:
    cfg = compose_train(["model.kernel=native", "model.backward=autodiff"])
    with pytest.raises(ConfigError, match='kernel="native" is not possible'):
        cli.build_task_and_model(cfg)
    cell = LSTMCell(hidden_size=4, peephole=True)
    with pytest.raises(ConfigError, match="not implemented natively|native"):
        recurrence.run(
            cell, cell.init(jax.random.PRNGKey(0), 3), jnp.ones((1, 2, 3)), kernel="native"
        )


def test_runs_saved_without_the_new_keys_still_resume() -> None:
    current = cli.config_snapshot(compose_train([]))
    saved = {k: v for k, v in current.items() if k not in cli.IMPLIED_BEFORE}
    assert cli.compare_configs(saved, current) == ([], [])
    strict, _ = cli.compare_configs(saved, {**current, "model.kernel": "xla"})
    assert strict == ["model.kernel: 'auto' -> 'xla'"]
