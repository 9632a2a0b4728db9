"""The benchmark times what it claims to: at the tiny grid's shapes, rnnlab's layer and every
reference it is timed against (Flax, and PyTorch where installed) compute the same outputs with
the same weights, for every `conf/cell/` cell that declares such a reference; and it runs end to
end on the tiny grid and writes its reports. The scan grid (associative vs sequential scan) is
built from the cells declaring `linear_recurrence`, its PyTorch minGRU reference computes
`MinGRUCell` in both modes, and its report says what it could not time and why."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rnnlab import bench
from rnnlab.cells.base import declared
from rnnlab.cells.minimal import MinGRUCell
from tests.cell_configs import CELL_NAMES

TOL = 1e-5


def _hidden(name: str, hidden: int) -> int:
    """`hidden`, or more where the cell's config fixes a projection at least that wide."""
    from rnnlab.cli import cell_config

    return max(hidden, (cell_config(name).get("proj_size") or 0) + 1)


TINY = bench.tiny_grid()[0]
AGREEMENT = [
    bench.Config(name, TINY.batch, TINY.time, TINY.input, _hidden(name, TINY.hidden), *variant)
    for name in CELL_NAMES
    for variant in ((1, 1), (2, 2))
]
"""Every cell at the tiny grid's shapes, single-layer and as a 2-layer bidirectional stack."""


def test_agreement_covers_the_tiny_grid():
    assert set(bench.tiny_grid()) <= set(AGREEMENT)


@pytest.mark.parametrize("config", AGREEMENT, ids=lambda c: c.name)
def test_timed_models_compute_the_same_function(config):
    cell = config.make_cell()
    capability = {"torch": "torch_module", "flax": "flax_cell"}
    expected = {
        ref
        for ref in capability
        if bench._framework_present(ref) and declared(cell, capability[ref]) is not None
    }
    if bench._framework_present("torch") and type(cell) is MinGRUCell and config.layers == 1:
        expected |= set(bench.TORCH_MINGRU)
    found = bench.agreement(config)
    assert set(found) == expected
    for ref, difference in found.items():
        assert difference < TOL, f"{config.name}: rnnlab and {ref} differ by {difference:.2e}"


def test_agreement_fails_when_the_models_differ(monkeypatch):
    """The check can fail: rnnlab run with one wrong weight no longer matches either reference."""
    config = bench.tiny_grid()[0]
    apply, params = bench.rnnlab_model(config)

    def perturbed(config, *args, **kwargs):
        def wrong(params, xs):
            return apply([dict(p, b=p["b"] + 0.01) for p in params], xs)

        return wrong, params

    monkeypatch.setattr(bench, "rnnlab_model", perturbed)
    found = bench.agreement(config)
    assert found and all(difference > 1e-3 for difference in found.values())


def test_tiny_grid_runs_and_writes_json_and_markdown(tmp_path):
    impls = ["rnnlab", "flax"]
    if bench._optional("torch") is not None:
        impls.append("torch")
    code = bench.main(
        ["--grid", "tiny", "--repeats", "1", "--warmup", "0", "--peak-size", "128"]
        + ["--impls", ",".join(impls)]
        + ["--out", str(tmp_path)]
    )
    assert code == 0
    result = json.loads((tmp_path / "tiny.json").read_text())
    rows = result["rows"]
    assert {r["impl"] for r in rows} == set(impls)
    assert {r["mode"] for r in rows} == set(bench.MODES)
    assert len(rows) == len(bench.tiny_grid()) * len(bench.MODES) * len(impls)
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["gflops"] > 0
        if row["impl"] != "torch":
            assert row["compile_s"] > 0
        if "flax" in impls:
            assert row["vs_flax"] > 0
    table = (tmp_path / "tiny.md").read_text()
    assert "| config | mode | impl |" in table and "bilstm" not in table and "2xbigru" in table


def test_a_cell_without_a_reference_is_timed_alone(tmp_path):
    """A cell that declares no Flax or PyTorch equivalent is timed by rnnlab only (no error)."""
    configs = [bench.Config(n, 2, 3, 3, _hidden(n, 8)) for n in CELL_NAMES]
    alone = [c for c in configs if declared(c.make_cell(), "flax_cell") is None]
    if not alone:
        pytest.skip("every conf/cell/ cell declares a Flax equivalent")
    config = alone[0]
    for build in (bench.build_flax, bench.build_torch):
        skipped = build(config, "infer")
        assert isinstance(skipped, bench.Skipped) and "declares no" in skipped.reason
    result = bench.benchmark(
        [config], ["rnnlab", "flax"], modes=["infer"], repeats=1, warmup=0, peak_size=64, log=None
    )
    assert [row["impl"] for row in result["rows"]] == ["rnnlab"]


def test_grids_and_flops():
    assert len(bench.default_grid()) == 2 * 3 * 4
    assert bench.parse_grid("lstm:32,128,64,256;gru:8,512,64,256,2,2") == [
        bench.Config("lstm", 32, 128, 64, 256),
        bench.Config("gru", 8, 512, 64, 256, 2, 2),
    ]
    single = bench.Config("lstm", 2, 3, 5, 7)
    assert single.flops("infer") == 2 * 4 * 7 * (5 + 7) * 6
    assert single.flops("train") == 3 * single.flops("infer")
    # Every weight matrix counts: the reset-before GRU's w_hh [2h, h] and w_hn [h, h] as the
    # reset-after one's w_hh [3h, h]; a projection's w_hr [p, h] on top of the LSTM's.
    assert bench.Config("gru_reset_before", 2, 3, 5, 7).flops("infer") == (
        bench.Config("gru", 2, 3, 5, 7).flops("infer")
    )
    stacked = bench.Config("gru", 2, 3, 5, 7, layers=2, directions=2)
    assert stacked.flops("infer") == 2 * 2 * 3 * 7 * ((5 + 7) + (14 + 7)) * 6
    times = [c.time for c in bench.scaling_grid() if c.batch == 32]
    assert times[0] == 64 and times[-1] == 2048
    assert set(bench.cell_names()) == set(CELL_NAMES)


# ----------------------------------------------------------------------------- scan grid


def test_scan_grid_is_built_from_the_cells_declaring_a_linear_recurrence():
    cells = bench.linear_recurrence_cells()
    assert {"mingru", "minlstm", "rglru"} <= set(cells) and "lstm" not in cells
    for name in CELL_NAMES:
        linear = declared(bench.make_cell(name, _hidden(name, 8)), "linear_recurrence")
        assert (name in cells) == bool(linear), name
    grid = bench.scan_grid()
    assert [(c.cell, c.time) for c in grid] == [
        (cell, t) for cell in cells for t in bench.SCAN_LENGTHS
    ]
    assert bench.SCAN_LENGTHS == (64, 256, 1024, 4096, 8192)
    assert {(c.batch, c.input, c.hidden, c.layers, c.directions) for c in grid} == {
        (*bench.SCAN_SHAPE, 1, 1)
    }
    assert set(bench.SCAN_IMPLS) <= set(bench.IMPLEMENTATIONS)


@pytest.mark.parametrize("backend", ["xla", "associative"])
@pytest.mark.parametrize("scan", ["sequential", "log"])
def test_torch_mingru_reference_equals_mingru_cell(scan, backend):
    """`TorchMinGRU` (the paper's equations, written in PyTorch) with its weights copied into
    rnnlab's `MinGRUCell`: the same outputs and the same weight gradients of a loss, under both
    of rnnlab's scans; a wrong weight is seen."""
    torch = pytest.importorskip("torch")
    import jax
    import jax.numpy as jnp

    config = bench.Config("mingru", 2, 16, 3, 4)
    assert type(config.make_cell()) is MinGRUCell
    module = bench.torch_mingru_model(config, "cpu")
    xs = np.random.default_rng(1).standard_normal((2, 16, 3)).astype(np.float32)
    ys_torch = module(torch.from_numpy(xs), scan=scan)
    ys_torch.square().sum().backward()
    apply, _ = bench.rnnlab_model(config, backend=backend)
    params = [jax.tree_util.tree_map(jnp.asarray, bench.mingru_params_from_torch(module))]

    def loss(params):
        return jnp.sum(jnp.square(apply(params, jnp.asarray(xs))))

    np.testing.assert_allclose(apply(params, xs), ys_torch.detach().numpy(), atol=1e-5)
    grads = jax.grad(loss)(params)[0]
    hidden = config.hidden
    for gate, linear in enumerate((module.linear_z, module.linear_h)):
        rows = slice(gate * hidden, (gate + 1) * hidden)
        np.testing.assert_allclose(grads["w_ih"][rows], linear.weight.grad.numpy(), atol=1e-4)
        np.testing.assert_allclose(grads["b"][rows], linear.bias.grad.numpy(), atol=1e-4)
    wrong = [dict(params[0], b=params[0]["b"] + 0.01)]
    assert np.max(np.abs(apply(wrong, xs) - ys_torch.detach().numpy())) > 1e-3


def test_scan_lengths_are_checked(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--grid", "scan", "--lengths", "64,0"])
    assert exit_info.value.code == 2
    assert "argument --lengths: must be an integer >= 1, got 0" in capsys.readouterr().err


def test_torch_mingru_reference_says_what_it_cannot_run():
    reasons = {
        config.cell: bench.torch_mingru_unsupported(config, "log")
        for config in (bench.Config("mingru", 2, 3, 3, 4), bench.Config("minlstm", 2, 3, 3, 4))
    }
    assert reasons["mingru"] is None and "not MinLSTMCell" in reasons["minlstm"]
    stacked = bench.Config("mingru", 2, 3, 3, 4, layers=2)
    assert "one unidirectional layer" in bench.torch_mingru_unsupported(stacked, "sequential")


def test_scan_grid_runs_and_reports_skips(tmp_path):
    """`--grid scan` at a tiny length with a non-linear cell: every scan implementation timed
    for minGRU, the associative scan and the minGRU reference skipped for the LSTM with their
    reasons, and the summary table with the ratio and the crossover lines."""
    code = bench.main(
        ["--grid", "scan", "--lengths", "3", "--cells", "mingru,lstm"]
        + ["--repeats", "1", "--warmup", "0", "--peak-size", "64", "--out", str(tmp_path)]
    )
    assert code == 0
    result = json.loads((tmp_path / "scan.json").read_text())
    timed = {(r["config"]["cell"], r["mode"], r["impl"]) for r in result["rows"]}
    torch_present = bench._framework_present("torch")
    impls = [i for i in bench.SCAN_IMPLS if torch_present or i not in bench.TORCH_MINGRU]
    assert timed == {("mingru", m, i) for m in bench.MODES for i in impls} | {
        ("lstm", m, "rnnlab-xla") for m in bench.MODES
    }
    for row in result["rows"]:
        assert row["vs_rnnlab-xla"] > 0
        if row["impl"].startswith("rnnlab"):
            assert row["temp_bytes"] is not None and row["memory_bytes"] > 0
    skipped = {s["impl"]: s["reason"] for s in result["skipped"] if s["name"].startswith("lstm")}
    assert "not a linear recurrence" in skipped["rnnlab-associative"]
    table = (tmp_path / "scan.md").read_text()
    assert "- rnnlab-associative for lstm b8 t3 d64 h256: LSTMCell is not a linear" in table
    assert "| mingru b8 t3 d64 h256 | train |" in table and "vs rnnlab-xla" in table
    assert "Associative vs sequential scan:" in table and "associative / sequential" in table
    assert "- mingru b8 d64 h256, train: " in table
    assert "CPU (lscpu): " in table or not result["machine"]["cpu"].get("CPU(s)")


def test_scan_crossover_is_the_length_from_which_the_associative_scan_wins():
    def row(time, mode, impl, tokens_per_s):
        config = bench.Config("mingru", 8, time, 64, 256)
        return {
            "config": {"cell": "mingru", "time": time},
            "name": config.name,
            "mode": mode,
            "impl": impl,
            "tokens_per_s": tokens_per_s,
        }

    speeds = {  # (sequential, associative) tokens/s by length
        "train": {
            64: (2e3, 1e3),
            256: (2e3, 3e3),
            1024: (2e3, 1e3),
            4096: (2e3, 3e3),
            8192: (2e3, 4e3),
        },
        "infer": {
            64: (2e3, 1e3),
            256: (2e3, 1e3),
            1024: (2e3, 1e3),
            4096: (2e3, 1e3),
            8192: (2e3, 1e3),
        },
    }
    rows = [
        row(t, mode, impl, speed)
        for mode, by_length in speeds.items()
        for t, pair in by_length.items()
        for impl, speed in zip(("rnnlab-xla", "rnnlab-associative"), pair, strict=True)
    ]
    result = {"rows": rows}
    shape = "mingru b8 d64 h256"
    assert bench.scan_crossover(result) == {(shape, "train"): 4096, (shape, "infer"): None}
    table = bench.scan_table(result)
    assert "| mingru b8 t256 d64 h256 | train | 2.0k | 3.0k | 1.50x |" in table
    assert f"- {shape}, infer: never" in table and f"- {shape}, train: t >= 4096" in table
    assert bench.scan_table({"rows": [r for r in rows if r["impl"] == "rnnlab-xla"]}) == ""


@pytest.mark.parametrize(
    ("backend", "cell", "reason"),
    [("chunkwise", "mlstm", "LSTMCell has no chunkwise form"),
     ("log_space", "mingru", "LSTMCell has no log-space form")],
)  # fmt: skip
def test_a_cell_specific_form_is_timed_for_its_cells_and_skipped_with_a_reason_elsewhere(
    backend: str, cell: str, reason: str
) -> None:
    """`rnnlab-chunkwise` (mLSTM) and `rnnlab-log-space` (minGRU) build the cell on that form
    (equal to the sequential scan's outputs) and name why an LSTM has none."""
    lstm, config = bench.parse_grid(f"lstm:2,5,3,8;{cell}:2,5,3,8")
    build = bench.IMPLEMENTATIONS[f"rnnlab-{backend.replace('_', '-')}"][1]
    skipped = build(lstm, "infer")
    assert isinstance(skipped, bench.Skipped) and reason in skipped.reason
    apply, params = bench.rnnlab_model(config, backend=backend)
    reference, _ = bench.rnnlab_model(config, backend="xla")
    xs, _ = bench._data(config)
    np.testing.assert_allclose(apply(params, xs), reference(params, xs), rtol=2e-5, atol=2e-6)
    assert isinstance(build(config, "train"), bench.Built)
