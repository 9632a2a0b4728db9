"""The benchmark times what it claims to: at the tiny grid's shapes, rnnlab's layer and every
reference it is timed against (Flax, and PyTorch where installed) compute the same outputs with
the same weights, for every `conf/cell/` cell that declares such a reference; and it runs end to
end on the tiny grid and writes its reports."""

from __future__ import annotations

import json

import pytest

from rnnlab import bench
from rnnlab.cells.base import declared
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
        for ref in bench.REFERENCES
        if bench._framework_present(ref) and declared(cell, capability[ref]) is not None
    }
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
    assert bench.build_flax(config, "infer") is None and bench.build_torch(config, "infer") is None
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
