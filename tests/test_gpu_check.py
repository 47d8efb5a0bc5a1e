"""The prepared GPU check (benchmarks/gpu_check.sh, python -m benchmarks.gpu) runs here to its clear
"no GPU present" stop, and its whole pipeline runs as a CPU stand-in (timings are never asserted)."""
import json
import os
import pathlib
import subprocess

import pytest

from benchmarks import gpu, harness

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _fake_nvidia_smi(folder, output: str, status: int) -> dict:
    """An environment whose PATH starts with a stand-in nvidia-smi printing ``output``."""
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\nexit {status}\n")
    script.chmod(0o755)
    return dict(os.environ, PATH=f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_the_script_stops_with_no_gpu_present_and_writes_nothing(tmp_path):
    results = sorted((ROOT / "benchmarks" / "results").iterdir())
    env = _fake_nvidia_smi(tmp_path / "bin", "NVIDIA-SMI has failed: no devices were found", 9)
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gpu_check: no GPU present (nvidia-smi finds no NVIDIA GPU)")
    assert sorted((ROOT / "benchmarks" / "results").iterdir()) == results


def test_the_module_stops_with_no_gpu_present(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(_fake_nvidia_smi(tmp_path / "bin", "", 9)["PATH"]))
    assert gpu.find_gpu()[0] is None
    assert gpu.main(["--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.startswith("gpu_check: no GPU present (nvidia-smi -L lists no GPU")
    assert not (tmp_path / "out").exists()


def test_the_first_gpu_is_named_from_nvidia_smi(tmp_path, monkeypatch):
    env = _fake_nvidia_smi(tmp_path / "bin", "GPU 0: NVIDIA H200 (UUID: GPU-0123)", 0)
    monkeypatch.setenv("PATH", env["PATH"])
    assert gpu.find_gpu() == ("NVIDIA H200", "nvidia-smi -L")
    assert gpu.slug("NVIDIA H200") == "nvidia-h200"


def test_the_whole_check_runs_as_a_cpu_stand_in(tmp_path, monkeypatch):
    """Tests in a subprocess, steps timed, both report files written and copied, TF32 reported; the steps are
    a tiny model here (the real ones take seconds on a CPU)."""
    pytest.importorskip("torch")
    from xpcnn.zoo import mlp
    tiny = harness._step_case("tiny step b2", lambda b: mlp(seed=0, hidden=4, image_size=4, backend=b), (1, 4, 4), 2)
    monkeypatch.setattr(harness, "cases", lambda quick=False: [tiny])
    monkeypatch.setattr(gpu, "MODELS", ("tiny step b2",))
    monkeypatch.setenv("CUPY_TF32", "0")                             # set_tf32 changes it: restored after
    code = gpu.main(["--stand-in", "--rounds", "2", "--block", "1", "--out", str(tmp_path / "out"),
                     "--copy-to", str(tmp_path / "copy"),
                     "--pytest-args", "tests/backend/test_registry.py -k unknown_name_lists --backend numpy"])
    assert code == 0
    report = json.loads((tmp_path / "out" / "cpu-stand-in.json").read_text())
    assert report["tests"]["status"] == 0 and report["tests"]["summary"].startswith("1 passed")
    [row] = report["steps"]
    assert row["model"] == "tiny step b2" and row["backend"] == "torch" and row["xpcnn_ms"] > 0 < row["torch_ms"]
    text = (tmp_path / "copy" / "cpu-stand-in.md").read_text()
    assert "A stand-in run on the CPU" in text and "TF32 off (torch matmul False, cuDNN False, CUPY_TF32=0)" in text
    assert "| tiny step b2 | torch |" in text
    assert (tmp_path / "copy" / "cpu-stand-in-tests.log").exists()
