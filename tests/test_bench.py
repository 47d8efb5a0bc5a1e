"""The benchmark harness runs and writes its files (timings themselves are never asserted)."""
import json

import pytest

from xpcnn import bench


def test_harness_writes_json_and_markdown(tmp_path):
    pytest.importorskip("torch")
    code = bench.main(["--groups", "ops,steps,overhead", "--filter", "dense 3136", "--repeat", "1", "--warmup", "1",
                       "--out", str(tmp_path), "--name", "smoke"])
    assert code == 0
    payload = json.loads((tmp_path / "smoke.json").read_text())
    assert payload["machine"]["cpu_count"] >= 1 and payload["machine"]["backend"] == "numpy"
    names = [r["name"] for r in payload["results"]]
    assert names == ["dense 3136->128 forward", "dense 3136->128 backward"]
    assert all(r["xpcnn_ms"] > 0 and r["torch_ms"] > 0 for r in payload["results"])
    table = (tmp_path / "smoke.md").read_text()
    assert "| dense 3136->128 forward |" in table and "Batch-1 LeNet forward" in table


def test_every_case_builds_on_both_sides():
    torch = pytest.importorskip("torch")
    from xpcnn.backend import resolve
    for case in bench.cases(quick=True):
        if case.group == "ops":
            ours, theirs = case.build(resolve("numpy"), torch, "cpu")
            ours(), theirs()
