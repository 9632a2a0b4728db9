"""The benchmark runs end to end on a tiny grid and writes its reports (no timing assertions)."""

from __future__ import annotations

import json

from rnnlab import bench


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


def test_grids_and_flops():
    assert len(bench.default_grid()) == 2 * 3 * 4
    assert bench.parse_grid("lstm:32,128,64,256;gru:8,512,64,256,2,2") == [
        bench.Config("lstm", 32, 128, 64, 256),
        bench.Config("gru", 8, 512, 64, 256, 2, 2),
    ]
    single = bench.Config("lstm", 2, 3, 5, 7)
    assert single.flops("infer") == 2 * 4 * 7 * (5 + 7) * 6
    assert single.flops("train") == 3 * single.flops("infer")
    times = [c.time for c in bench.scaling_grid() if c.batch == 32]
    assert times[0] == 64 and times[-1] == 2048
