"""The benchmark harness runs and writes its files (timings themselves are never asserted)."""
import json

import pytest

from benchmarks import harness as bench
from xpcnn.zoo import resnet8


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
    assert all(0 < low <= high for low, high in (r["ratio_quartiles"] for r in payload["results"]))
    table = (tmp_path / "smoke.md").read_text()
    assert "| dense 3136->128 forward |" in table and "Batch-1 LeNet forward" in table


def test_isolated_runs_each_library_in_its_own_process(tmp_path, monkeypatch):
    """--isolated starts one process per library and round (recorded here), and pairs their medians."""
    pytest.importorskip("torch")
    started = []
    real_run = bench.subprocess.run

    def run(command, **kwargs):
        started.append(command[command.index("--side") + 1])
        return real_run(command, **kwargs)
    monkeypatch.setattr(bench.subprocess, "run", run)
    code = bench.main(["--groups", "steps", "--filter", "LeNet step b64", "--quick", "--repeat", "1",
                       "--warmup", "1", "--isolated", "2", "--out", str(tmp_path), "--name", "own"])
    assert code == 0 and started == ["xpcnn", "torch", "xpcnn", "torch"]
    rows = json.loads((tmp_path / "own.json").read_text())["results"]
    assert [r["name"] for r in rows] == ["LeNet step b64", "LeNet step b64" + bench.OWN_PROCESSES]
    assert all(r["xpcnn_ms"] > 0 and r["torch_ms"] > 0 for r in rows)
    low, high = rows[1]["ratio_quartiles"]
    assert 0 < low <= high
    assert "LeNet step b64 (own processes)" in (tmp_path / "own.md").read_text()


def test_every_case_builds_on_both_sides():
    torch = pytest.importorskip("torch")
    from xpcnn.backend import resolve
    for case in bench.cases(quick=True):
        if case.group == "ops":
            ours, theirs = case.build(resolve("numpy"), torch, "cpu")
            ours(), theirs()


def test_ratio_spread_comes_from_the_paired_blocks(monkeypatch):
    """Each round pairs an xpcnn block with the PyTorch block after it; the spread is the quartiles of
    those per-round ratios, the headline ratio the ratio of the overall medians."""
    ticks = iter([4.0, 4.0, 4.0, 1.0, 1.0, 1.0,      # round 1: ratio 4
                  2.0, 2.0, 2.0, 1.0, 1.0, 1.0,      # round 2: ratio 2
                  3.0, 3.0, 3.0, 1.0, 1.0, 1.0,      # round 3: ratio 3
                  6.0, 6.0, 6.0, 2.0, 2.0, 2.0])     # round 4: ratio 3
    monkeypatch.setattr(bench, "_time", lambda fn, sync: next(ticks))
    monkeypatch.setattr(bench, "SETTLE_SECONDS", 0.0)
    case = bench.Case("ops", "fake", lambda backend, torch, device: (lambda: None, lambda: None), 1)
    result = bench.run_case(case, None, None, "cpu", repeat=4, warmup=0)
    assert (result.xpcnn_ms, result.torch_ms) == (3.5, 1.0)
    assert result.ratio_quartiles == pytest.approx((2.25, 3.75))


def test_readiness_reports_reads_copies_and_launches_per_step():
    torch = pytest.importorskip("torch")
    rows = bench.readiness(torch, bench.READINESS_MODELS[:2] + (("ResNet-8 b4", resnet8, (3, 32, 32), 4, 4),))
    assert [r["model"] for r in rows] == ["LeNet b64", "VGG-small b32", "ResNet-8 b4"]
    for row in rows:
        assert row["reads_per_step"] == 0                        # no device-to-host read in a training step
        assert row["writes_per_step"] == 0 and row["mask_syncs_per_step"] == 0   # nor host data, nor mask indexing
        assert 0 < row["reads_per_fit_batch"] <= 0.25            # one read per 50 steps and at the epoch's end
        # data on the device: x, y and the epoch's order cross once (3 copies over 60 batches); from the host,
        # x and y per batch; dropout masks are drawn on the device
        assert row["writes_per_fit_batch"] == 3 / 60 and row["writes_per_fit_batch_host"] == 2
        assert row["launches_per_step"] > row["torch_launches_per_step"] > 0
        assert row["launch_ratio"] == row["launches_per_step"] / row["torch_launches_per_step"]
        # CuPy's prices: the few-launch forms gather windows (no stack, no pad) and join the optimizer's
        # gradients by slice assignment, so CuPy spends what PyTorch does and copies nothing host-to-device
        assert row["cupy_kernels_per_step"] == row["launches_per_step"] and row["cupy_syncs_per_step"] == 0
        assert row["cupy_copies_per_step"] == 0 and not row["cupy_copies_by_op"]
    assert rows[0]["launch_ratio"] <= 3                          # LeNet: at most 3x PyTorch's launches


@pytest.mark.parametrize("tf32", ["on", "off"])
def test_tf32_is_set_equally_on_both_sides_and_reported(tmp_path, monkeypatch, tf32):
    """PyTorch's cuDNN convolutions default to TF32, its matmuls and CuPy's GEMMs to strict FP32: the harness
    sets all three to one value and reports them."""
    torch = pytest.importorskip("torch")
    flag = tf32 == "on"
    # restored by hand: the switches are served by the modules' __getattr__, and monkeypatch's undo fails
    # on them with AttributeError (pytest 9.2)
    saved = [(switches, switches.allow_tf32) for switches in (torch.backends.cuda.matmul, torch.backends.cudnn)]
    monkeypatch.setenv("CUPY_TF32", "0" if flag else "1")
    try:
        for switches, _ in saved:
            switches.allow_tf32 = not flag
        assert bench.main(["--groups", "ops", "--filter", "no such case", "--tf32", tf32, "--out", str(tmp_path),
                           "--name", "tf32"]) == 0
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (flag, flag)
    finally:
        for switches, value in saved:
            switches.allow_tf32 = value
    expected = {"torch_matmul": flag, "torch_cudnn": flag, "CUPY_TF32": "1" if flag else "0"}
    assert json.loads((tmp_path / "tf32.json").read_text())["machine"]["tf32"] == expected
    assert (f"TF32 {tf32} (torch matmul {flag}, cuDNN {flag}, CUPY_TF32={int(flag)})"
            in (tmp_path / "tf32.md").read_text())


@pytest.mark.parametrize("argv, message", [
    (["--isolated", "-1"], "argument --isolated: expected an integer >= 0, got -1"),
    (["--repeat", "0"], "argument --repeat: expected an integer >= 1, got 0"),
    (["--child", "no such case"], "--child: no case named 'no such case'"),
])
def test_bad_arguments_get_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    pytest.importorskip("torch")
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv + ["--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
