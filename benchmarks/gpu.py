"""The GPU check: one prepared run for a machine with an NVIDIA GPU, nothing outside reachable, 8 minutes.

    bash benchmarks/gpu_check.sh [options]      # installs the wheels carried in .whl/, then runs this module
    python -m benchmarks.gpu [options]          # the same, with the packages already installed

1. Where no NVIDIA GPU is found it stops at once: "gpu_check: no GPU present (...)", exit status 0,
   nothing run and nothing written.
2. Runs the cupy and torch:cuda test columns: pytest --backend cupy --backend torch:cuda -k "cupy or cuda".
3. Times LeNet b64, VGG-small b32 and ResNet-20 b128 training steps (Adam, float32) on both GPU backends
   against PyTorch with cuDNN on the same GPU: CUDA events around blocks of steps, xpcnn and PyTorch
   blocks alternating, the median of the rounds; TF32 set equally for both (off unless --tf32 on).
4. Writes <out>/<device>.md and .json (benchmarks/results/nvidia-h200.md, say), the device named.
Each stage is fitted to what is left of --budget seconds. Preparing the wheels: docs/gpu.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

GPU_COLUMNS = ["--backend", "cupy", "--backend", "torch:cuda", "-k", "cupy or cuda"]
MODELS = ("LeNet step b64", "VGG-small step b32", "ResNet-20 step b128")
ROOT = pathlib.Path(__file__).resolve().parent.parent


def find_gpu() -> tuple[str | None, str]:
    """(the first NVIDIA GPU's name, how it was found), or (None, why none was), importing no GPU library."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, "nvidia-smi is not on the PATH"
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"nvidia-smi -L failed: {exc}"
    found = re.search(r"GPU 0: (.+?)(?: \(UUID|$)", listed.stdout, re.MULTILINE)
    if listed.returncode != 0 or not found:
        return None, f"nvidia-smi -L lists no GPU (exit status {listed.returncode}: {listed.stderr.strip()[:200]})"
    return found.group(1).strip(), "nvidia-smi -L"


def slug(name: str) -> str:
    """A device name as a file name: 'NVIDIA H200' -> 'nvidia-h200'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def run_tests(pytest_args: list[str], seconds: float, log: pathlib.Path) -> dict:
    """pytest in a subprocess, stopped after ``seconds``; its summary line, exit status and time."""
    command = [sys.executable, "-m", "pytest", "-q", *pytest_args]
    try:
        import xdist  # noqa: F401  (several processes share the GPU: the columns finish sooner)
        command += ["-n", "4"]
    except ImportError:
        pass
    start = time.monotonic()
    env = dict(os.environ, CUPY_TF32="0")              # the tests compare float32 with NumPy: strict FP32
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(seconds, 1))
        output, status = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:             # what it printed so far comes as bytes
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        output, status = output + f"\n(stopped after {seconds:.0f} s)", "timeout"
    log.write_text(output)
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    failures = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {"command": " ".join(command[1:]), "status": status, "seconds": round(time.monotonic() - start, 1),
            "summary": lines[-1].strip("= ") if lines else "(no summary line)", "failures": failures[:30]}


def event_timer(backend_name: str, torch):
    """``timed(fn, n)``: milliseconds per call of ``fn`` over ``n`` calls, between two CUDA events on the
    stream the calls run on (CuPy's for the cupy backend, PyTorch's otherwise); wall time on a CPU."""
    if backend_name == "cupy":
        import cupy

        def timed(fn, n):
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            for _ in range(n):
                fn()
            end.record()
            end.synchronize()
            return cupy.cuda.get_elapsed_time(start, end) / n
    elif torch.cuda.is_available():
        def timed(fn, n):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / n
    else:                                              # the CPU stand-in: nothing is queued, wall time is exact
        def timed(fn, n):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            return (time.perf_counter() - start) * 1e3 / n
    return timed


def time_step(case, backend, torch, device: str, rounds: int, block: int, warmup: int) -> dict:
    """One training-step case: ``rounds`` of a block of xpcnn steps then a block of PyTorch steps, each
    timed by :func:`event_timer`; the medians, their ratio and the spread of the per-round ratios."""
    ours, theirs = case.build(backend, torch, device)
    ours_timed, theirs_timed = event_timer(backend.name, torch), event_timer("torch", torch)
    for _ in range(warmup):
        ours(), theirs()
    mine, ref = [], []
    for _ in range(rounds):
        mine.append(ours_timed(ours, block))
        ref.append(theirs_timed(theirs, block))
    ratios = sorted(m / r for m, r in zip(mine, ref))
    return {"model": case.name, "backend": backend.name, "xpcnn_ms": statistics.median(mine),
            "torch_ms": statistics.median(ref), "ratio": statistics.median(mine) / statistics.median(ref),
            "ratio_range": (ratios[0], ratios[-1]), "rounds": rounds, "block": block}


def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [f"# GPU check on {machine['device']}", "",
             f"{machine['date']}; {machine['device']} ({machine.get('driver', 'driver unknown')}); Python "
             f"{machine['python']}, PyTorch {machine['torch']} (CUDA {machine['cuda']}), CuPy {machine['cupy']}, "
             f"NumPy {machine['numpy']}; {machine['tf32_text']}; cuDNN benchmark mode {machine['cudnn_benchmark']}.",
             ""]
    if machine.get("stand_in"):
        lines += ["**A stand-in run on the CPU** (the script's own check): wall times of CPU tensors, "
                  "no GPU figure.", ""]
    tests = report.get("tests")
    if tests:
        lines += ["## Test columns", "", f"`{tests['command']}`: {tests['summary']} (exit status {tests['status']}, "
                  f"{tests['seconds']} s)", ""] + [f"- {line}" for line in tests["failures"]] + [""]
    clock = "wall time" if machine.get("stand_in") else "CUDA events"
    lines += ["## Training steps", "",
              f"float32, Adam, softmax cross-entropy; ms per step, {clock} around blocks of {report['block']} steps, "
              f"xpcnn and PyTorch blocks alternating, median of {report['rounds']} rounds; the reference is torch.nn "
              "(with cuDNN on a GPU) on the same device.", "",
              "| model | backend | xpcnn ms | PyTorch ms | ratio | ratio range |", "|---|---|---:|---:|---:|---:|"]
    for row in report["steps"]:
        if "skipped" in row:
            lines.append(f"| {row['model']} | {row['backend']} | - | - | - | {row['skipped']} |")
        else:
            lines.append(f"| {row['model']} | {row['backend']} | {row['xpcnn_ms']:.2f} | {row['torch_ms']:.2f} | "
                         f"{row['ratio']:.2f} | {row['ratio_range'][0]:.2f}-{row['ratio_range'][1]:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for <device>.md/.json")
    parser.add_argument("--copy-to", default=None, help="also copy the written files (and the test log) here")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole check (8 minutes)")
    parser.add_argument("--test-seconds", type=float, default=240.0, help="at most this long for the test columns")
    parser.add_argument("--tf32", choices=("off", "on"), default="off", help="TF32, set equally for both sides")
    parser.add_argument("--pytest-args", default=None, help="instead of the GPU columns (one string, split on spaces)")
    parser.add_argument("--skip-tests", action="store_true", help="time the steps only")
    parser.add_argument("--filter", default="", help="only the models whose name contains this text")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block", type=int, default=10, help="steps between two events")
    parser.add_argument("--stand-in", action="store_true",
                        help="check this script on a CPU: the torch backend on CPU tensors, wall times, no GPU figure")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.budget
    gpu, how = ("cpu stand-in", "--stand-in") if args.stand_in else find_gpu()
    if gpu is None:
        print(f"gpu_check: no GPU present ({how}); nothing was run and no results were written")
        return 0
    print(f"gpu_check: {gpu} ({how})", flush=True)

    import numpy as np
    import torch
    from benchmarks import harness
    tf32 = harness.set_tf32(args.tf32 == "on", torch)      # before CuPy's first product and the test subprocess
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = slug(gpu)
    report: dict = {"steps": [], "rounds": args.rounds, "block": args.block}
    if not args.skip_tests:
        pytest_args = args.pytest_args.split() if args.pytest_args else GPU_COLUMNS
        seconds = min(args.test_seconds, deadline - time.monotonic() - 120)     # 2 minutes kept for the steps
        report["tests"] = run_tests(pytest_args, seconds, out / f"{name}-tests.log")
        print(f"gpu_check: tests: {report['tests']['summary']} ({report['tests']['seconds']} s)", flush=True)

    from xpcnn.backend import BackendUnavailable, resolve
    device = "cpu" if args.stand_in else "cuda"
    for backend_name in (("torch",) if args.stand_in else ("cupy", "torch:cuda")):
        try:
            backend = resolve(backend_name)
        except BackendUnavailable as exc:
            report["steps"] += [{"model": m, "backend": backend_name, "skipped": str(exc)[:80]} for m in MODELS]
            continue
        for case in harness.cases():
            if case.group != "steps" or case.name not in MODELS or args.filter not in case.name:
                continue
            if deadline - time.monotonic() < 25:
                report["steps"].append({"model": case.name, "backend": backend_name, "skipped": "out of time"})
                continue
            try:
                row = time_step(case, backend, torch, device, args.rounds, args.block, warmup=3)
            except Exception as exc:                   # one failing case must not lose the others' figures
                row = {"model": case.name, "backend": backend_name, "skipped": f"{type(exc).__name__}: {exc}"[:120]}
            report["steps"].append(row)
            print(f"gpu_check: {row}", flush=True)

    cupy_version = "-"
    try:
        import cupy
        cupy_version = cupy.__version__
    except ImportError:
        pass
    driver = ""
    if not args.stand_in:
        queried = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True)
        driver = f"driver {queried.stdout.strip()}" if queried.returncode == 0 else ""
    report["machine"] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "device": gpu,
        "driver": driver or "driver unknown", "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cupy": cupy_version, "numpy": np.__version__, "tf32": tf32,
        "tf32_text": harness.tf32_text(tf32), "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "stand_in": args.stand_in}
    written = [out / f"{name}.json", out / f"{name}.md"]
    written[0].write_text(json.dumps(report, indent=1, default=str))
    written[1].write_text(markdown(report))
    if args.copy_to:
        pathlib.Path(args.copy_to).mkdir(parents=True, exist_ok=True)
        for path in written + [out / f"{name}-tests.log"]:
            if path.exists():
                shutil.copy(path, args.copy_to)
    print(f"gpu_check: wrote {written[1]} and {written[0].name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
