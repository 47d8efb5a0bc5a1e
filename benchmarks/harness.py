"""Benchmarks against PyTorch: the same shapes, dtype (float32) and weights, timed interleaved.

    python -m benchmarks --backend numpy                # writes bench-results/
    python -m benchmarks --backend cupy                 # against PyTorch CUDA (cuDNN)
    python -m benchmarks --out benchmarks/results       # replaces the committed results the README quotes

For each case, blocks of xpcnn calls and blocks of PyTorch calls alternate (each block after a
short pause and one untimed call), so both sides see the same machine state; the report gives each
side's median and the ratio xpcnn / PyTorch. Results go to ``<out>/<name>.json`` (machine, CPU count, versions, device) and
``<out>/<name>.md``. Ratios, not absolute times, are the targets.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from xpcnn import config, cores
from xpcnn import functional as F
from xpcnn import optim
from xpcnn.backend import resolve, synchronize, to_backend, to_numpy
from xpcnn.cli import non_negative_count, positive_count
from xpcnn.testing import torch_twin
from xpcnn.zoo import lenet, resnet20, vgg_small


@dataclass
class Case:
    group: str
    name: str
    build: Callable            # (backend, torch, device) -> (xpcnn_fn, torch_fn)
    images: int = 0            # images per call, for images/s


@dataclass
class Result:
    group: str
    name: str
    xpcnn_ms: float
    torch_ms: float
    images: int = 0
    extra: dict = field(default_factory=dict)
    ratio_quartiles: tuple = ()   # 25th and 75th percentile of the per-round ratios (block median / block median)

    @property
    def ratio(self) -> float:
        return self.xpcnn_ms / self.torch_ms


def _sync(backend, torch, device):
    def sync():
        synchronize(backend)
        if device == "cuda":
            torch.cuda.synchronize()
    return sync


def _native(array: np.ndarray, backend):
    """An (N, C, H, W) host array on ``backend`` in the memory order xpcnn's own layers hand each other:
    channels-last memory seen as (N, C, H, W). PyTorch gets its own default, NCHW-contiguous tensors."""
    moved = to_backend(np.ascontiguousarray(array.transpose(0, 2, 3, 1)), backend)
    return backend.xp.permute_dims(moved, (0, 3, 1, 2))


def _torch_copy(array, torch, device):
    """A contiguous PyTorch tensor with the values of ``array`` (a strided δ slowed PyTorch's max-pool backward 5x)."""
    return torch.tensor(np.ascontiguousarray(to_numpy(array)), device=device)


def _conv_case(name, n, c_in, c_out, size, kernel, stride=1, padding=0, dilation=1, groups=1):
    def build(backend, torch, device, direction):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c_in, size, size)).astype(np.float32)
        w = (rng.standard_normal((c_out, c_in // groups, kernel, kernel)) * 0.1).astype(np.float32)
        b = rng.standard_normal(c_out).astype(np.float32)
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        xs, ws, bs = _native(x, backend), to_backend(w, backend), to_backend(b, backend)
        y, cache = F.conv2d_forward(xs, ws, bs, **kwargs)
        dy = _native(rng.standard_normal(tuple(y.shape)).astype(np.float32), backend)
        tx = torch.tensor(x, device=device, requires_grad=True)
        tw = torch.tensor(w, device=device, requires_grad=True)
        tb = torch.tensor(b, device=device, requires_grad=True)
        if direction == "forward":
            return (lambda: F.conv2d_forward(xs, ws, bs, training=False, **kwargs),     # as PyTorch without autograd
                    lambda: torch.nn.functional.conv2d(tx.detach(), tw.detach(), tb.detach(), **kwargs))
        ty = torch.nn.functional.conv2d(tx, tw, tb, **kwargs)
        tdy = _torch_copy(dy, torch, device)
        return (lambda: F.conv2d_backward(dy, cache),
                lambda: torch.autograd.grad(ty, (tx, tw, tb), tdy, retain_graph=True))
    return [Case("ops", f"{name} {d}", (lambda d: lambda *a: build(*a, d))(d), n) for d in ("forward", "backward")]


def _pool_case(name, kind, n, c, size, kernel, stride=None, padding=0):
    def build(backend, torch, device, direction):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, size, size)).astype(np.float32)
        ours = (F.max_pool2d_forward, F.max_pool2d_backward) if kind == "max" else \
            (F.avg_pool2d_forward, F.avg_pool2d_backward)
        theirs = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
        xs = _native(x, backend)
        y, cache = ours[0](xs, kernel, stride, padding)
        dy = _native(rng.standard_normal(tuple(y.shape)).astype(np.float32), backend)
        tx = torch.tensor(x, device=device, requires_grad=True)
        if direction == "forward":
            return (lambda: ours[0](xs, kernel, stride, padding),
                    lambda: theirs(tx.detach(), kernel, stride, padding))
        ty = theirs(tx, kernel, stride, padding)
        tdy = _torch_copy(dy, torch, device)
        return (lambda: ours[1](dy, cache), lambda: torch.autograd.grad(ty, (tx,), tdy, retain_graph=True))
    return [Case("ops", f"{name} {d}", (lambda d: lambda *a: build(*a, d))(d), n) for d in ("forward", "backward")]


def _dense_case(name, n, fan_in, fan_out):
    def build(backend, torch, device, direction):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, fan_in)).astype(np.float32)
        w = (rng.standard_normal((fan_out, fan_in)) * 0.05).astype(np.float32)
        b = rng.standard_normal(fan_out).astype(np.float32)
        xs, ws, bs = (to_backend(a, backend) for a in (x, w, b))
        y, cache = F.linear_forward(xs, ws, bs)
        dy = to_backend(rng.standard_normal(tuple(y.shape)).astype(np.float32), backend)
        tx, tw, tb = (torch.tensor(a, device=device, requires_grad=True) for a in (x, w, b))
        if direction == "forward":
            return (lambda: F.linear_forward(xs, ws, bs),
                    lambda: torch.nn.functional.linear(tx.detach(), tw.detach(), tb.detach()))
        ty = torch.nn.functional.linear(tx, tw, tb)
        tdy = _torch_copy(dy, torch, device)
        return (lambda: F.linear_backward(dy, cache),
                lambda: torch.autograd.grad(ty, (tx, tw, tb), tdy, retain_graph=True))
    return [Case("ops", f"{name} {d}", (lambda d: lambda *a: build(*a, d))(d), n) for d in ("forward", "backward")]


def _step_case(name, builder, input_shape, n, group="steps"):
    def build(backend, torch, device):
        model = builder(backend)
        twin = torch_twin(model, torch, device)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n,) + input_shape).astype(np.float32)
        y = rng.integers(0, 10, n)
        xs, ys = to_backend(x, backend), to_backend(y, backend)
        ours = optim.Adam(model.parameters(), lr=1e-4)
        theirs = torch.optim.Adam(twin.parameters(), lr=1e-4)
        tx, ty = torch.tensor(x, device=device), torch.tensor(y, device=device)

        def step():
            logits = model(xs)
            _, dlogits = F.softmax_cross_entropy(logits, ys, check_labels=False)
            model.zero_grad()
            model.backward(dlogits, need_dx=False)
            ours.step()

        def torch_step():
            theirs.zero_grad()
            torch.nn.functional.cross_entropy(twin(tx), ty).backward()
            theirs.step()
        return step, torch_step
    return Case(group, name, build, n)


def cases(quick: bool = False) -> list[Case]:
    scale = 2 if quick else 1
    ops = []
    ops += _conv_case("conv 3x3 s1 p1 28x28 32->32", 32 // scale, 32, 32, 28, 3, padding=1)
    ops += _conv_case("conv 3x3 s1 p1 28x28 128->128", 16 // scale, 128, 128, 28, 3, padding=1)
    ops += _conv_case("conv 3x3 s1 p1 56x56 64->64", 16 // scale, 64, 64, 56, 3, padding=1)
    ops += _conv_case("conv 5x5 s1 p2 28x28 32->64", 32 // scale, 32, 64, 28, 5, padding=2)
    ops += _conv_case("conv 3x3 s2 p1 56x56 64->128", 16 // scale, 64, 128, 56, 3, stride=2, padding=1)
    ops += _conv_case("conv 1x1 28x28 128->64", 32 // scale, 128, 64, 28, 1)
    ops += _conv_case("conv 3x3 d2 p2 28x28 32->32", 32 // scale, 32, 32, 28, 3, padding=2, dilation=2)
    ops += _conv_case("conv 3x3 g4 p1 28x28 64->64", 32 // scale, 64, 64, 28, 3, padding=1, groups=4)
    ops += _pool_case("maxpool 2x2 56x56 c64", "max", 32 // scale, 64, 56, 2)
    ops += _pool_case("maxpool 3x3 s2 p1 56x56 c64", "max", 32 // scale, 64, 56, 3, 2, 1)
    ops += _pool_case("avgpool 2x2 56x56 c64", "avg", 32 // scale, 64, 56, 2)
    ops += _dense_case("dense 3136->128", 64, 3136, 128)
    ops += _dense_case("dense 1024->1024", 256 // scale, 1024, 1024)
    steps = [
        _step_case("LeNet step b64", lambda b: lenet(seed=0, dropout=0.0, backend=b), (1, 28, 28), 64),
        _step_case("VGG-small step b32", lambda b: vgg_small(seed=0, dropout=0.0, backend=b), (3, 32, 32), 32),
        _step_case("ResNet-20 step b128", lambda b: resnet20(seed=0, backend=b), (3, 32, 32), 128 // scale),
    ]
    scaling = [_step_case(f"LeNet step b{n}", lambda b: lenet(seed=0, dropout=0.0, backend=b), (1, 28, 28), n,
                          group="scaling") for n in (16, 32, 64, 128, 256)]
    return ops + steps + scaling


def _time(fn, sync) -> float:
    start = time.perf_counter()
    fn()
    sync()
    return (time.perf_counter() - start) * 1e3


#: Untimed pause before each block of calls: OpenBLAS worker threads spin for ~2^28 cycles (~0.1 s) after a
#: call returns, and on a small machine they would steal the cores from the other library's next call.
SETTLE_SECONDS = 0.15
#: Timed calls per block; each block starts with one untimed call that wakes the library's threads.
BLOCK = 3


def run_case(case: Case, backend, torch, device, repeat: int, warmup: int) -> Result:
    """Alternate blocks of xpcnn and PyTorch calls ``repeat`` times; medians of all timed calls."""
    ours, theirs = case.build(backend, torch, device)
    sync = _sync(backend, torch, device)
    for _ in range(warmup):
        ours(), theirs()
    sync()
    mine, ref, rounds = [], [], []
    for _ in range(repeat):
        for fn, times in ((ours, mine), (theirs, ref)):
            times.extend(_block(fn, sync))
        rounds.append(statistics.median(mine[-BLOCK:]) / statistics.median(ref[-BLOCK:]))
    return Result(case.group, case.name, statistics.median(mine), statistics.median(ref), case.images,
                  ratio_quartiles=_spread(rounds))


def _block(fn, sync) -> list[float]:
    """One block of calls: a pause, one untimed call that wakes the library's threads, BLOCK timed calls."""
    time.sleep(SETTLE_SECONDS)
    fn()
    sync()
    return [_time(fn, sync) for _ in range(BLOCK)]


def _spread(ratios: list[float]) -> tuple[float, float]:
    """The 25th and 75th percentile of paired ratios (the one ratio twice when there is one)."""
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return quartiles[0], quartiles[2]


#: The name suffix of a case timed with each library in its own process (``--isolated``).
OWN_PROCESSES = " (own processes)"


def time_one_side(case: Case, side: str, backend, torch, device, repeat: int, warmup: int) -> list[float]:
    """Milliseconds of ``repeat`` blocks of one library's calls, run alone in this process (``--child``)."""
    ours, theirs = case.build(backend, torch, device)
    fn = ours if side == "xpcnn" else theirs
    sync = _sync(backend, torch, device)
    for _ in range(warmup):
        fn()
    sync()
    return [ms for _ in range(repeat) for ms in _block(fn, sync)]      # the blocks run_case times


def run_isolated(case: Case, backend_name: str, repeat: int, warmup: int, rounds: int, quick: bool = False) -> Result:
    """``rounds`` pairs of processes, one timing only xpcnn's calls and then one only PyTorch's: no library's
    threads (OpenBLAS's spin after each product) or allocator state reach the other's calls. Medians of all
    calls; the spread is the 25th-75th percentile of the ratios of each pair's medians."""
    root = pathlib.Path(__file__).resolve().parents[1]
    mine, ref, ratios = [], [], []
    for _ in range(rounds):
        medians = []
        for side, times in (("xpcnn", mine), ("torch", ref)):
            command = [sys.executable, "-m", "benchmarks", "--child", case.name, "--side", side,
                       "--backend", backend_name, "--repeat", str(repeat), "--warmup", str(warmup)]
            command += ["--quick"] if quick else []
            done = subprocess.run(command, cwd=root, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"benchmarks: the {side} process for {case.name!r} failed:\n{done.stderr[-2000:]}")
            side_times = json.loads(done.stdout.strip().splitlines()[-1])
            times.extend(side_times)
            medians.append(statistics.median(side_times))
        ratios.append(medians[0] / medians[1])
    return Result(case.group, case.name + OWN_PROCESSES, statistics.median(mine), statistics.median(ref),
                  case.images, ratio_quartiles=_spread(ratios))


def peak_memory(backend, n: int = 256, workspace_mb: float | None = None) -> dict:
    """Peak traced host memory of a conv forward + backward (NumPy allocations are traced by tracemalloc)."""
    rng = np.random.default_rng(0)
    x = to_backend(rng.standard_normal((n, 32, 28, 28)).astype(np.float32), backend)
    w = to_backend((rng.standard_normal((64, 32, 3, 3)) * 0.1).astype(np.float32), backend)
    limit = {} if workspace_mb is None else {"conv_workspace_bytes": int(workspace_mb * 2**20)}
    with config.using(**limit):
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        y, cache = F.conv2d_forward(x, w, padding=1)
        F.conv2d_backward(y, cache)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    io_bytes = 2 * (x.size + y.size) * 4     # x and dx, y and dy
    return {"batch": n, "workspace_mb": workspace_mb, "peak_mb": peak / 2**20, "inputs_outputs_mb": io_bytes / 2**20}


def python_overhead_ms(backend) -> float:
    """Median wall time of a batch-1 LeNet forward (dominated by Python work at this size)."""
    model = lenet(seed=0, backend=backend).eval()
    x = to_backend(np.zeros((1, 1, 28, 28), np.float32), backend)
    for _ in range(5):
        model(x)
    times = []
    for _ in range(50):
        start = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


#: (name, builder, input shape, step batch, fit batch): the fit counts are per batch whatever its size, so
#: ResNet-20's 60-batch fits run at batch 8 (its step, counted at 128, is the figure of interest)
READINESS_MODELS = (("LeNet b64", lenet, (1, 28, 28), 64, 64), ("VGG-small b32", vgg_small, (3, 32, 32), 32, 32),
                    ("ResNet-20 b128", resnet20, (3, 32, 32), 128, 8))


def readiness(torch, models=READINESS_MODELS) -> list[dict]:
    """GPU-readiness figures of a training step on the torch backend (CPU tensors count exactly as GPU ones):
    device-to-host reads per step and per fit batch, host-to-device copies per step, kernel launches per
    step against torch.nn + autograd + torch.optim.Adam(foreach=True) for the same model, and the step's kernels,
    host-to-device copies and syncs priced by CuPy's rules (xpcnn.testing.CupyCosts)."""
    from xpcnn.testing import CupyCosts, KernelLaunches, MaskIndexSyncs, Transfers
    from xpcnn.train import Batch, train_step
    from xpcnn.train.metrics import batch_loss as _batch_loss
    rows = []
    for name, builder, shape, n, fit_n in models:
        model = builder(seed=0, backend="torch")
        optimizer = optim.Adam(model.parameters())
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n,) + shape).astype(np.float32)
        y = rng.integers(0, 10, n)
        xs, ys = to_backend(x, "torch"), to_backend(y, "torch")
        loss = _batch_loss(F.softmax_cross_entropy)

        def step():                                         # the step fit and Trainer run
            train_step(model, optimizer, loss, Batch(xs, ys, n))

        with config.using(few_launches="on"):
            step()                                          # warm-up on the path that is counted
        # the path a GPU takes (few_launches is "auto": on for GPUs), counted on CPU tensors
        with CupyCosts() as cupy, Transfers() as transfers, MaskIndexSyncs() as masks, \
                KernelLaunches() as launches, config.using(few_launches="on"):
            step()
        batches = 60                                       # an epoch of 60 batches at fit's default log_every
        data_x, data_y = np.repeat(x[:fit_n], batches, axis=0), np.repeat(y[:fit_n], batches)
        # warm-up: the CPU forms' constants (Winograd's transforms, ...) are made once per place, at a first fit
        model.fit(data_x[:fit_n], data_y[:fit_n], optimizer=optimizer, epochs=1, batch_size=fit_n, verbose=0)
        with Transfers() as fitting:                       # the data set fits on the device: copied once
            model.fit(data_x, data_y, optimizer=optimizer, epochs=1, batch_size=fit_n, verbose=0)
        # batches from the host, copied inline (torch's modes see one thread; the prefetch thread copies the same)
        with Transfers() as host_fitting, config.using(device_data_bytes=1, prefetch_batches=0):
            model.fit(data_x, data_y, optimizer=optimizer, epochs=1, batch_size=fit_n, verbose=0)
        twin = torch_twin(builder(seed=0), torch, "cpu", torch.float32)
        twin_optimizer = torch.optim.Adam(twin.parameters(), foreach=True)
        xt, yt = torch.tensor(x), torch.tensor(y)

        def twin_step():
            twin_optimizer.zero_grad()
            torch.nn.functional.cross_entropy(twin(xt), yt).backward()
            twin_optimizer.step()

        twin_step()
        with KernelLaunches() as twin_launches:
            twin_step()
        rows.append({"model": name, "reads_per_step": transfers.reads, "writes_per_step": transfers.writes,
                     "mask_syncs_per_step": masks.count, "reads_per_fit_batch": fitting.reads / batches,
                     "writes_per_fit_batch": fitting.writes / batches,
                     "writes_per_fit_batch_host": host_fitting.writes / batches, "launches_per_step": launches.count,
                     "torch_launches_per_step": twin_launches.count,
                     "launch_ratio": launches.count / twin_launches.count,
                     "top_ops": dict(launches.by_op.most_common(8)), "cupy_kernels_per_step": cupy.kernels,
                     "cupy_copies_per_step": cupy.copies, "cupy_syncs_per_step": cupy.syncs,
                     "cupy_top_ops": dict(cupy.by_op.most_common(8)), "cupy_copies_by_op": dict(cupy.copies_by_op)})
    return rows


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def set_tf32(enabled: bool, torch) -> dict:
    """TF32 on or off, explicitly and equally for both sides: PyTorch's cuDNN convolutions default to TF32
    while its matmuls and CuPy's GEMMs default to strict FP32, so the defaults would compare different
    arithmetic. CuPy reads ``CUPY_TF32`` when it first multiplies float32 matrices: call this before any."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    os.environ["CUPY_TF32"] = "1" if enabled else "0"
    return tf32_settings(torch)


def tf32_settings(torch) -> dict:
    """The TF32 switches in force, as reported beside the timings."""
    return {"torch_matmul": torch.backends.cuda.matmul.allow_tf32, "torch_cudnn": torch.backends.cudnn.allow_tf32,
            "CUPY_TF32": os.environ.get("CUPY_TF32", "unset")}


def tf32_text(settings: dict) -> str:
    on = settings["torch_matmul"] and settings["torch_cudnn"] and settings["CUPY_TF32"] == "1"
    off = not (settings["torch_matmul"] or settings["torch_cudnn"]) and settings["CUPY_TF32"] == "0"
    state = "on" if on else "off" if off else "UNEQUAL"
    return (f"TF32 {state} (torch matmul {settings['torch_matmul']}, cuDNN {settings['torch_cudnn']}, "
            f"CUPY_TF32={settings['CUPY_TF32']})")


def blas_text(info: dict) -> str:
    """OpenBLAS's kernels, and whether $OPENBLAS_CORETYPE chose them (results before it was recorded: unknown)."""
    kernels = info.get("blas_kernels", "unknown")
    pinned = info.get("openblas_coretype")
    return f"{kernels}, set by OPENBLAS_CORETYPE" if pinned else f"{kernels}, OpenBLAS's choice"


def machine_info(backend, torch, device) -> dict:
    cpu = cpu_name()
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "backend": backend.name, "backend_version": backend.library_version,
            "numpy": np.__version__, "torch": torch.__version__, "device": "cpu",
            "blas_kernels": cores.blas_kernels() or "unknown",
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "")}
    info["tf32"] = tf32_settings(torch)
    if device == "cuda":
        info["device"] = torch.cuda.get_device_name(0)
    return info


def readiness_markdown(rows: list[dict]) -> list[str]:
    lines = ["## GPU readiness (torch backend, counted with torch's dispatch modes)", "",
             "| model | D2H reads / step | host-data tensors / step | mask-index syncs / step | D2H reads / fit batch "
             "| H2D copies / fit batch, data on device | H2D copies / fit batch, data on host | kernel launches / step "
             "| PyTorch's | ratio | CuPy-priced kernels / step | CuPy-priced H2D copies / step | CuPy-priced syncs / step |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['reads_per_step']} | {r['writes_per_step']} | {r['mask_syncs_per_step']} | "
                     f"{r['reads_per_fit_batch']:.3f} | "
                     f"{r['writes_per_fit_batch']:.3f} | {r['writes_per_fit_batch_host']:.0f} | "
                     f"{r['launches_per_step']} | {r['torch_launches_per_step']} | "
                     f"{r['launch_ratio']:.1f} | {r['cupy_kernels_per_step']} | {r['cupy_copies_per_step']} | "
                     f"{r['cupy_syncs_per_step']} |")
    for title, key in (("Most frequent xpcnn kernels per step", "top_ops"),
                       ("Most frequent CuPy-priced kernels per step (xpcnn.testing.CupyCosts)", "cupy_top_ops")):
        lines += ["", f"{title}: " + "; ".join(
            f"{r['model']}: " + ", ".join(f"{op} {count}" for op, count in r[key].items()) for r in rows)]
    lines += ["", "CuPy-priced host-to-device copies per step, by aten op: " + "; ".join(f"{r['model']}: " + (", ".join(f"{op} {count}" for op, count in
                                      r["cupy_copies_by_op"].items()) or "none") for r in rows)]
    lines.append("")
    return lines


def markdown(info: dict, results: list[Result], memory: dict | None, overhead: float | None,
             ready: list[dict] | None = None) -> str:
    lines = [f"# xpcnn vs PyTorch: backend `{info['backend']}` on {info['device']}", "",
             f"{info['date']}; {info['cpu']} ({info['cpu_count']} CPUs); Python {info['python']}, "
             f"NumPy {info['numpy']} (OpenBLAS kernels: {blas_text(info)}), PyTorch {info['torch']} "
             f"({info['torch_threads']} threads); float32; "
             f"median of interleaved blocks of {BLOCK} calls; the ratio's spread is the 25th-75th percentile of "
             "the ratios of adjacent xpcnn and PyTorch blocks; " + tf32_text(info["tf32"]) + ".", ""]
    for group in ("ops", "steps", "scaling"):
        rows = [r for r in results if r.group == group]
        if not rows:
            continue
        lines += [f"## {group}", "", "| case | xpcnn ms | PyTorch ms | ratio | ratio spread | xpcnn img/s |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            rate = f"{r.images / r.xpcnn_ms * 1e3:,.0f}" if r.images else "-"
            spread = "{:.2f}-{:.2f}".format(*r.ratio_quartiles) if r.ratio_quartiles else "-"
            lines.append(f"| {r.name} | {r.xpcnn_ms:.2f} | {r.torch_ms:.2f} | {r.ratio:.2f} | {spread} | {rate} |")
        if any(r.name.endswith(OWN_PROCESSES) for r in rows):
            lines += ["", "Rows marked" + OWN_PROCESSES + " time each library alone in a process of its own "
                      "(pairs of processes, xpcnn's then PyTorch's, the same blocks of calls); their spread is "
                      "the 25th-75th percentile of the ratios of each pair's medians."]
        lines.append("")
    if memory:
        lines += ["## memory", "", "| conv 3x3 32->64 28x28 forward+backward | peak MB | inputs+outputs MB |",
                  "|---|---:|---:|"]
        for entry in memory:
            label = f"batch {entry['batch']}, workspace " + (f"{entry['workspace_mb']:g} MB" if entry["workspace_mb"]
                                                             else "default")
            lines.append(f"| {label} | {entry['peak_mb']:.0f} | {entry['inputs_outputs_mb']:.0f} |")
        lines.append("")
    if overhead is not None:
        lines += [f"Batch-1 LeNet forward: {overhead:.3f} ms.", ""]
    if ready:
        lines += readiness_markdown(ready)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="numpy", help="xpcnn backend (numpy, cupy, torch, torch:cuda)")
    parser.add_argument("--groups", default="ops,steps,scaling,memory,overhead,readiness",
                        help="comma-separated: ops, steps, scaling, memory, overhead, readiness")
    parser.add_argument("--filter", default="", help="only cases whose name contains this text")
    parser.add_argument("--repeat", type=positive_count, default=7)
    parser.add_argument("--warmup", type=non_negative_count, default=2)
    parser.add_argument("--quick", action="store_true", help="smaller batches and fewer repetitions")
    parser.add_argument("--out", default="bench-results",
                        help="output folder (benchmarks/results holds the committed results)")
    parser.add_argument("--name", default=None, help="file name stem (default: <backend>-<device>)")
    parser.add_argument("--plot", action="store_true", help="also plot time per image against batch size")
    parser.add_argument("--tf32", choices=("off", "on"), default="off",
                        help="TF32 for float32 products, set equally for PyTorch (matmul and cuDNN) and CuPy")
    parser.add_argument("--isolated", type=non_negative_count, default=0, metavar="ROUNDS",
                        help="also time each steps case with each library in its own process, ROUNDS pairs of "
                             "processes of --repeat blocks each")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)      # --isolated's processes
    parser.add_argument("--side", choices=("xpcnn", "torch"), default="xpcnn", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("benchmarks: PyTorch is the reference; install it with pip install torch", file=sys.stderr)
        return 1
    set_tf32(args.tf32 == "on", torch)                    # before any product: CuPy reads CUPY_TF32 once
    backend = resolve(args.backend)
    on_gpu = backend.name in ("cupy", "torch:cuda")
    device = "cuda" if on_gpu else "cpu"
    if on_gpu and not torch.cuda.is_available():
        print("benchmarks: a GPU backend needs PyTorch with CUDA as the reference", file=sys.stderr)
        return 1
    groups = set(args.groups.split(","))
    repeat = max(3, args.repeat // 2) if args.quick else args.repeat
    if args.child is not None:
        case = next((case for case in cases(args.quick) if case.name == args.child), None)
        if case is None:
            parser.error(f"--child: no case named {args.child!r}")
        print(json.dumps(time_one_side(case, args.side, backend, torch, device, repeat, args.warmup)))
        return 0
    results = []
    for case in cases(args.quick):
        if case.group not in groups or args.filter not in case.name:
            continue
        timed = [run_case(case, backend, torch, device, repeat, args.warmup)]
        if args.isolated and case.group == "steps":
            timed.append(run_isolated(case, backend.name, args.repeat, args.warmup, args.isolated,
                                      args.quick))
        for result in timed:
            results.append(result)
            print(f"{case.group:8s} {result.name:42s} xpcnn {result.xpcnn_ms:9.2f} ms   torch {result.torch_ms:9.2f} ms"
                  f"   ratio {result.ratio:5.2f}", flush=True)
    memory = None
    if "memory" in groups and backend.name == "numpy":
        memory = [peak_memory(backend), peak_memory(backend, workspace_mb=64)]
        for entry in memory:
            print(f"memory   batch {entry['batch']} workspace {entry['workspace_mb']}: peak {entry['peak_mb']:.0f} MB "
                  f"(inputs+outputs {entry['inputs_outputs_mb']:.0f} MB)")
    overhead = python_overhead_ms(backend) if "overhead" in groups else None
    ready = readiness(torch) if "readiness" in groups else None
    for row in ready or []:
        print(f"readiness {row['model']:14s} reads/step {row['reads_per_step']}  host-data tensors/step "
              f"{row['writes_per_step']}  mask syncs/step {row['mask_syncs_per_step']}  reads/fit batch "
              f"{row['reads_per_fit_batch']:.3f}  copies/fit batch {row['writes_per_fit_batch']:.3f} (host data {row['writes_per_fit_batch_host']:.0f})  launches/step "
              f"{row['launches_per_step']} (PyTorch {row['torch_launches_per_step']}, ratio {row['launch_ratio']:.1f})"
              f"  CuPy-priced kernels/step {row['cupy_kernels_per_step']} (H2D copies {row['cupy_copies_per_step']}, "
              f"syncs {row['cupy_syncs_per_step']})")
    if overhead is not None:
        print(f"overhead batch-1 LeNet forward {overhead:.3f} ms")
    info = machine_info(backend, torch, device)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"{backend.name.replace(':', '-')}-{'cpu' if device == 'cpu' else 'gpu'}"
    payload = {"machine": info, "results": [{**r.__dict__, "ratio": r.ratio} for r in results],
               "memory": memory, "batch1_lenet_forward_ms": overhead,
               "readiness": ready}
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    (out / f"{stem}.md").write_text(markdown(info, results, memory, overhead, ready))
    if args.plot:
        _plot_scaling([r for r in results if r.group == "scaling"], out / f"{stem}-scaling.png")
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    return 0


def _plot_scaling(rows, path):
    from xpcnn.plots import plot_lines
    batch = [r.images for r in rows]
    plot_lines({"xpcnn": (batch, [r.xpcnn_ms / r.images for r in rows]),
                "PyTorch": (batch, [r.torch_ms / r.images for r in rows])},
               path, "batch size", "ms per image (LeNet training step)", log_x=True)
