"""Data-parallel scaling on this machine: a LeNet training step at a fixed global batch on 1 and on N processes
(one BLAS thread each, started by mpiexec), with the time spent in the gradient Allreduce.

    python -m benchmarks.distributed [--processes 1,2] [--batch 128] [--steps 30] [--out benchmarks/results]

Each measurement runs in its own ``mpiexec -n P`` (this file is also the worker). The step is the one
``fit(..., distributed=True)`` takes: forward and backward on this process's slice of the global batch, the
bucketed Allreduce of every gradient (:class:`xpcnn.distributed.DistributedOptimizer`), then Adam. Scaling
efficiency is T(1) / (P · T(P)) for the same global batch (strong scaling). PyTorch's own step on one process
at the same batch and one thread is measured in the same run as the reference.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np


def worker(batch: int, steps: int, warmup: int, one_thread: bool = True) -> None:
    from xpcnn import distributed as D
    from xpcnn import functional as F, optim
    from xpcnn.zoo import lenet

    if one_thread:
        D.limit_threads(1)
    model = lenet(seed=0, dropout=0.0)
    optimizer = D.DistributedOptimizer(optim.Adam(model.parameters(), lr=1e-4))
    D.broadcast_parameters(model, optimizer=optimizer.optimizer)
    lo, hi = D.local_slice(0, batch)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)[lo:hi]
    y = rng.integers(0, 10, batch)[lo:hi]
    comm = D.communicator()
    times = []
    for step in range(warmup + steps):
        comm.Barrier()
        if step == warmup:
            optimizer.transport.seconds = 0.0
        started = time.perf_counter()
        logits = model(x)
        _, dlogits = F.softmax_cross_entropy(logits, y, check_labels=False)
        model.zero_grad()
        model.backward(dlogits, need_dx=False)
        optimizer.step()
        elapsed = np.array([time.perf_counter() - started])
        comm.Allreduce(D._mpi().IN_PLACE, elapsed, op=D._mpi().MAX)       # a step lasts as long as its slowest rank
        if step >= warmup:
            times.append(float(elapsed[0]))
    if D.is_main():
        gradient_bytes = sum(int(np.prod(p.shape)) * 4 for p in model.parameters())
        print(json.dumps({"processes": D.size(), "batch": batch, "local_batch": hi - lo,
                          "step_ms": 1e3 * float(np.median(times)), "allreduce_ms": 1e3 * optimizer.transport.seconds / steps,
                          "buckets": len(optimizer.buckets()), "gradient_bytes": gradient_bytes}))


def torch_step_ms(batch: int, steps: int, warmup: int) -> float:
    import torch
    from xpcnn.testing import torch_twin
    from xpcnn.zoo import lenet

    torch.set_num_threads(1)
    twin = torch_twin(lenet(seed=0, dropout=0.0), torch, "cpu", torch.float32)
    optimizer = torch.optim.Adam(twin.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((batch, 1, 28, 28)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 10, batch))
    times = []
    for step in range(warmup + steps):
        started = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(twin(x), y).backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - started)
    return 1e3 * float(np.median(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts (default: 1,2)")
    parser.add_argument("--batch", type=int, default=128, help="the global batch (default: 128)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", default="bench-results", help="output folder")
    parser.add_argument("--name", default="distributed-cpu", help="file name stem")
    parser.add_argument("--default-threads", action="store_true",
                        help="leave each process at its BLAS library's default threads (oversubscribes the cores)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.batch, args.steps, args.warmup, one_thread=not args.default_threads)
        return 0
    mpiexec = pathlib.Path(sys.executable).parent / "mpiexec"
    mpiexec = str(mpiexec) if mpiexec.exists() else "mpiexec"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    if not args.default_threads:
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    rows = []
    for count in (int(p) for p in args.processes.split(",")):
        result = subprocess.run([mpiexec, "-n", str(count), sys.executable, "-m", "benchmarks.distributed", "--worker",
                                 "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
                                + (["--default-threads"] if args.default_threads else []),
                                capture_output=True, text=True, env=env, timeout=900)
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return 1
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    reference = torch_step_ms(args.batch, args.steps, args.warmup)
    base = rows[0]["step_ms"] * rows[0]["processes"]
    for row in rows:
        row["images_per_s"] = args.batch / (row["step_ms"] / 1e3)
        row["efficiency"] = base / (row["processes"] * row["step_ms"])
        print(f"{row['processes']} process(es), batch {args.batch} ({row['local_batch']} each): step "
              f"{row['step_ms']:.2f} ms, allreduce {row['allreduce_ms']:.3f} ms, {row['images_per_s']:.0f} img/s, "
              f"efficiency {row['efficiency']:.2f}")
    print(f"PyTorch, one process, one thread, batch {args.batch}: step {reference:.2f} ms")
    from .harness import cpu_name
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "threads_per_process": "default" if args.default_threads else 1,
            "mpi": _mpi_version(mpiexec)}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps({"machine": info, "rows": rows,
                                                          "torch_one_process_step_ms": reference}, indent=1))
    lines = [f"# Data-parallel LeNet training step on {info['cpu']} ({info['cpu_count']} cores)", "",
             f"{info['date']}; {info['mpi']}; Python {info['python']}; "
             f"{'default BLAS threads' if args.default_threads else 'one BLAS thread'} per process; global batch "
             f"{args.batch}; median of {args.steps} steps after {args.warmup}, each step timed on its slowest rank.",
             "", "| processes | batch per process | step (ms) | of which Allreduce (ms) | images/s | scaling efficiency |",
             "|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['processes']} | {row['local_batch']} | {row['step_ms']:.2f} | {row['allreduce_ms']:.3f} | "
                     f"{row['images_per_s']:.0f} | {row['efficiency']:.2f} |")
    lines += ["", f"PyTorch, one process and one thread, the same step at batch {args.batch}: {reference:.2f} ms.",
              f"Gradients: {rows[0]['gradient_bytes']:,} bytes per step (float32), {rows[-1]['buckets']} bucket(s).", ""]
    (out / f"{args.name}.md").write_text("\n".join(lines))
    print(f"wrote {out / (args.name + '.json')} and {out / (args.name + '.md')}")
    return 0


def _mpi_version(mpiexec: str) -> str:
    result = subprocess.run([mpiexec, "--version"], capture_output=True, text=True)
    first = next((line for line in result.stdout.splitlines() if "Version" in line), "MPI")
    return " ".join(first.replace("HYDRA build details:", "").split()).replace("Version:", "MPICH")


if __name__ == "__main__":
    sys.exit(main())
