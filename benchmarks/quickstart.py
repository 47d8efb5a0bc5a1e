"""The quick start as a newcomer runs it: ``xpcnn train`` with its defaults, timed alone and beside a busy process.

    python -m benchmarks.quickstart                 # the checkout's xpcnn, 1 run alone + 1 loaded
    python -m benchmarks.quickstart --venv --runs 2 # a fresh virtual environment with `pip install .` first

Each run starts ``xpcnn train`` (no options) in an empty temporary folder and times the whole command,
start-up and pictures included. "loaded" runs it while ``python -c "while True: pass"`` keeps one core
busy; that process is started before and stopped after each run. The figures (wall seconds, test accuracy)
go to ``benchmarks/results/quickstart.md`` (``--out``) and the README quotes them.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.harness import cpu_name

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOADER = "while True: pass"


def fresh_venv(folder: pathlib.Path) -> pathlib.Path:
    """A new virtual environment in ``folder`` with this checkout installed as a user would (``pip install .``);
    returns its ``xpcnn`` command."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = folder / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT)], check=True)
    return folder / "bin" / "xpcnn"


def run_once(command: list[str], loaded: bool) -> dict:
    """One ``xpcnn train`` in a temporary folder: wall seconds, test accuracy, and its thread notes."""
    loader = subprocess.Popen([sys.executable, "-c", LOADER]) if loaded else None
    try:
        if loader is not None:
            time.sleep(0.5)                     # the busy process is running before the command starts
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            done = subprocess.run(command + ["train"], cwd=folder, capture_output=True, text=True)
            seconds = time.perf_counter() - started
    finally:
        if loader is not None:
            loader.kill()
            loader.wait()
    if done.returncode != 0:
        raise RuntimeError(f"xpcnn train failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    accuracy = re.search(r"test accuracy ([0-9.]+)", done.stdout)
    if accuracy is None:
        raise RuntimeError(f"xpcnn train printed no test accuracy:\n{done.stdout}")
    notes = [line for line in done.stdout.splitlines() if line.startswith("cores:")]
    return {"seconds": round(seconds, 2), "accuracy": float(accuracy.group(1)), "notes": notes}


def summary(runs: list[dict]) -> str:
    seconds = [r["seconds"] for r in runs]
    spread = f" (range {min(seconds):.1f}-{max(seconds):.1f})" if len(runs) > 1 else ""
    accuracy = min(r["accuracy"] for r in runs)
    return f"{statistics.median(seconds):.1f} s{spread}, test accuracy {accuracy:.3f}"


def write(results: dict, out: pathlib.Path) -> None:
    lines = ["# Quick start: `xpcnn train` with its defaults", "",
             f"Measured by `python -m benchmarks.quickstart{' --venv' if results['venv'] else ''} --runs "
             f"{results['runs']}` on {results['machine']} ({results['cores']} cores), {results['date']}.",
             "Wall time of the whole command (start-up, 8 epochs of LeNet on the bundled 4,000 images, test "
             "evaluation each epoch, checkpoints, curves.png).", "",
             "| condition | median wall time | runs (s) | lowest test accuracy |", "|---|---|---|---|"]
    for condition in ("alone", "loaded"):
        runs = results[condition]
        seconds = ", ".join(f"{r['seconds']:.1f}" for r in runs)
        lines.append(f"| {condition} | {statistics.median(r['seconds'] for r in runs):.1f} s | {seconds} | "
                     f"{min(r['accuracy'] for r in runs):.4f} |")
    notes = sorted({note for r in results["loaded"] for note in r["notes"]})
    lines += ["", "\"loaded\": beside `python -c \"while True: pass\"`, started before and stopped after each run."]
    if notes:
        lines.append("What `xpcnn train` said there: " + "; ".join(f"`{n}`" for n in notes) + ".")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quickstart", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="runs per condition (default 1)")
    parser.add_argument("--venv", action="store_true", help="install the checkout into a fresh virtual environment "
                        "first (pip install .) and time its xpcnn command")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quickstart.md"))
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    with tempfile.TemporaryDirectory() as folder:
        command = [str(fresh_venv(pathlib.Path(folder) / "venv"))] if args.venv else [sys.executable, "-m", "xpcnn"]
        results = {"runs": args.runs, "venv": args.venv, "machine": cpu_name(),
                   "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "alone": [], "loaded": []}
        for _ in range(args.runs):                       # alternate, so a drift of the machine hits both alike
            for condition in ("alone", "loaded"):
                result = run_once(command, loaded=condition == "loaded")
                results[condition].append(result)
                print(f"{condition}: {result['seconds']:.1f} s, test accuracy {result['accuracy']:.4f}", flush=True)
    write(results, pathlib.Path(args.out))
    print(f"alone: {summary(results['alone'])}\nloaded: {summary(results['loaded'])}\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
