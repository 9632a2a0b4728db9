"""The recurrence options travel as one object from the config to every layer.

`model.backend` and `model.input_projection` are settable like any backbone field, the layer
receives exactly the backbone's `RecurrentOptions`, the run log names each layer's backend, an
impossible explicit backend stops at construction, and runs saved before those keys existed
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
    ("overrides", "backend", "projection"),
    [
        ([], "auto", "hoisted"),
        (["model.backend=xla", "model.input_projection=per_step"], "xla", "per_step"),
    ],
)
def test_kernel_and_projection_reach_the_layer(
    overrides: list[str], backend: str, projection: str
) -> None:
    cfg = compose_train(["model.cell.hidden_size=8", "model.unroll=2", *overrides])
    _, model = cli.build_task_and_model(cfg)
    options = model.options
    assert (options.backend, options.input_projection, options.unroll) == (backend, projection, 2)
    assert model.make_stack().options is not None and model.make_stack().options == options


def test_each_layer_logs_its_backend(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recurrence.layers, "_LOGGED_BACKENDS", set())  # earlier tests logged theirs
    monkeypatch.setattr(
        recurrence.layers.log, "disabled", False
    )  # a logging config may have disabled it
    cell = GRUCell(hidden_size=5)
    params = recurrence.init_stack(cell, jax.random.PRNGKey(0), 3, num_layers=2)
    xs = jnp.ones((2, 4, 3))
    caplog.set_level(logging.INFO, logger="rnnlab.recurrence")
    options = recurrence.RecurrentOptions(backend="xla")
    recurrence.run_stack(cell, params, xs, options=options)
    assert "layer_0: XLA scan (backend=xla)" in caplog.text
    assert "layer_1: XLA scan (backend=xla)" in caplog.text
    per_step = recurrence.RecurrentOptions(input_projection="per_step")
    recurrence.run_stack(cell, params, xs, options=per_step)
    assert 'layer_0: XLA scan: input_projection="per_step" runs on the XLA scan' in caplog.text


def test_impossible_native_kernel_stops_at_construction() -> None:
    cfg = compose_train(["model.backend=native", "model.vjp=autodiff"])
    with pytest.raises(ConfigError, match='backend="native" is not possible'):
        cli.build_task_and_model(cfg)
    cell = LSTMCell(hidden_size=4, peephole=True)
    with pytest.raises(ConfigError, match="not implemented natively|native"):
        recurrence.run(
            cell, cell.init(jax.random.PRNGKey(0), 3), jnp.ones((1, 2, 3)), backend="native"
        )


def test_runs_saved_without_the_new_keys_still_resume() -> None:
    """A run saved before a key existed compares equal to today's config with the key at its
    implied value; every implied key is a real key of some task's config (no misspelling)."""
    seen = set()
    for overrides in ([], ["task=copy"], ["task=char_lm"]):
        current = cli.config_snapshot(compose_train(overrides))
        saved = {k: v for k, v in current.items() if k not in cli.IMPLIED_BEFORE}
        assert cli.compare_configs(saved, current) == ([], [])
        seen |= set(current) & set(cli.IMPLIED_BEFORE)
    assert seen == set(cli.IMPLIED_BEFORE)
    strict, _ = cli.compare_configs(saved, {**current, "model.backend": "xla"})
    assert strict == ["model.backend: 'auto' -> 'xla'"]


def test_runs_saved_under_the_old_option_names_still_resume_and_load(tmp_path) -> None:
    """`model.backward` and `model.kernel` (before the renaming to `vjp` and `backend`) are read
    under the new names, both for the resume comparison and for loading a run directory."""
    from omegaconf import OmegaConf

    from rnnlab.rundir import CONFIG_FILE, HYDRA_DIR

    old_names = {new: old for old, new in cli.RENAMED_KEYS.items()}
    current = cli.config_snapshot(compose_train(["model.backend=xla"]))
    saved = {old_names.get(k, k): v for k, v in current.items()}
    assert "model.kernel" in saved and "model.vjp" not in saved
    assert cli.compare_configs(saved, current) == ([], [])
    strict, _ = cli.compare_configs(saved, {**current, "model.backend": "native"})
    assert strict == ["model.backend: 'xla' -> 'native'"]

    cfg = compose_train(["model.backend=xla", "model.vjp=autodiff"])
    model = OmegaConf.to_container(cfg.model)
    model["kernel"], model["backward"] = model.pop("backend"), model.pop("vjp")
    cfg = OmegaConf.merge(OmegaConf.to_container(cfg), {})
    cfg.model = model
    (tmp_path / HYDRA_DIR).mkdir()
    OmegaConf.save(cfg, tmp_path / HYDRA_DIR / CONFIG_FILE)
    loaded = cli.load_config(tmp_path)
    assert "kernel" not in loaded.model and "backward" not in loaded.model
    _, built = cli.build_task_and_model(loaded)
    assert (built.options.backend, built.options.vjp) == ("xla", "autodiff")
