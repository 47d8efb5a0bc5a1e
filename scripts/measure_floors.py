"""Measurements behind docs/performance.md's "what bounds it": threads over the batch, the max-pooling
backward pass's elementwise floor, and OpenBLAS's float32 products at the convolutions' shapes.

    python scripts/measure_floors.py threads     # one thread against two, over the batch (NumPy)
    python scripts/measure_floors.py maxpool     # the passes a max-pool 3x3 s2 backward is made of
    python scripts/measure_floors.py products    # GFLOP/s of the products im2col convolutions make
    python scripts/measure_floors.py shifted     # conv backward: shifted rows against rebuilt columns
    python scripts/measure_floors.py faults torch|xpcnn|both   # page faults per LeNet step, by process

Each figure is the minimum (and median) of repeated wall-clock runs on this machine; run the script
alternately with the settings you compare (e.g. with and without OPENBLAS_CORETYPE).
"""
import argparse
import pathlib
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from xpcnn import cores
from xpcnn.functional import conv as conv_module

ROOT = pathlib.Path(__file__).resolve().parents[1]


def timed(fn, repeat: int = 11) -> tuple[float, float]:
    """(minimum, median) milliseconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times), statistics.median(times)


def halves(n: int) -> list[slice]:
    return [slice(0, n // 2), slice(n // 2, n)]


def threads() -> None:
    """Elementwise work (ReLU's backward product) and a convolution's im2col blocks, on one thread and
    split over the batch on two (NumPy releases the GIL in its loops; BLAS held to one thread each)."""
    rng = np.random.default_rng(0)
    pool = ThreadPoolExecutor(2)
    print("ReLU backward, dy * (y > 0), channels-last (ms, min / median):")
    for shape in [(128, 32, 32, 16), (128, 16, 16, 32), (32, 32, 32, 32)]:
        y = rng.standard_normal(shape).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)

        def one():
            return dy * (y > 0).astype(np.float32)

        def two():
            out = np.empty_like(dy)

            def part(index):
                np.multiply(dy[index], y[index] > 0, out=out[index])
            list(pool.map(part, halves(shape[0])))
            return out
        print(f"  {shape}: one thread {'%.2f / %.2f' % timed(one)}, two threads {'%.2f / %.2f' % timed(two)}")
    print("3x3 convolution forward, stride 1, padding 1, batch 128, in 4 MiB column blocks (ms, min / median):")
    for channels, size in [(16, 32), (32, 16), (64, 8)]:
        x = rng.standard_normal((128, size + 2, size + 2, channels)).astype(np.float32)
        weight = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32)
        matrix = conv_module._weight_matrix(np, weight, 1)[0]
        chunk = max(1, (4 << 20) // (size * size * 9 * channels * 4))
        blocks = [slice(start, min(start + chunk, 128)) for start in range(0, 128, chunk)]
        out = np.empty((128, size, size, channels), np.float32)

        def block(index):
            part = x[index]
            columns = conv_module._im2col(np, part, (3, 3), (1, 1), (1, 1), (size, size), 1)[0]
            out[index] = (columns @ matrix).reshape(part.shape[0], size, size, channels)

        def serial():
            for index in blocks:
                block(index)

        def parallel():
            with threadpool_limits(1, user_api="blas"):
                list(pool.map(block, blocks))
        print(f"  {channels} channels at {size}x{size}: blocks in turn, BLAS on {cores.threads_in_force()} threads "
              f"{'%.1f / %.1f' % timed(serial)}; two blocks at a time, BLAS on one {'%.1f / %.1f' % timed(parallel)}")


def maxpool() -> None:
    """The passes of the loop form's max-pool 3x3 s2 p1 backward, batch 32, 64 channels, 56x56 input:
    per window offset a comparison of the argmax, its cast, a product with δ and a strided add."""
    rng = np.random.default_rng(0)
    n, c, oh = 32, 64, 28
    argmax = rng.integers(0, 9, (n, oh, oh, c)).astype(np.int8)
    dy = rng.standard_normal((n, oh, oh, c)).astype(np.float32)
    dx = np.zeros((n, 2 * oh + 1, 2 * oh + 1, c), np.float32)
    mask = argmax == 4
    weights = mask.astype(np.float32)
    routed = dy * weights
    parts = {
        "compare argmax == k": lambda: argmax == 4,
        "cast the mask to float32": lambda: mask.astype(np.float32),
        "product with δ": lambda: dy * weights,
        "strided add into dx": lambda: dx[:, 1:2 * oh:2, 1:2 * oh:2, :].__iadd__(routed),
        "zero dx (once)": lambda: np.zeros_like(dx),
    }
    total = 0.0
    print(f"max-pool 3x3 s2 backward passes, {n * oh * oh * c / 1e6:.1f} M outputs (ms, min / median):")
    for name, fn in parts.items():
        fastest, median = timed(fn)
        total += fastest * (1 if name.startswith("zero") else 9)
        print(f"  {name}: {fastest:.2f} / {median:.2f}")
    print(f"  9 offsets x (compare, cast, product, add) + one zeroing: {total:.1f} ms at the minima")
    products = 9 * (timed(lambda: mask.astype(np.float32))[0] + timed(lambda: dy * weights)[0])
    try:
        import torch
    except ImportError:
        return
    x = torch.randn(n, c, 2 * oh, 2 * oh, requires_grad=True)
    y = torch.nn.functional.max_pool2d(x, 3, 2, 1)
    grad = torch.randn_like(y)
    time.sleep(0.2)                                         # OpenBLAS's spinning threads go quiet first
    theirs = timed(lambda: torch.autograd.grad(y, (x,), grad, retain_graph=True))[0]
    print(f"  PyTorch's backward pass: {theirs:.2f} ms; the 9 casts and products alone: {products:.1f} ms "
          f"({products / theirs:.1f}x)")


def products() -> None:
    """float32 GFLOP/s of (M, K) @ (K, N) at the column shapes of 3x3 convolutions in ResNet-20 and VGG."""
    rng = np.random.default_rng(0)
    print(f"OpenBLAS kernels: {cores.blas_kernels()}, {cores.threads_in_force()} threads")
    for m, k, n in [(131072, 144, 16), (32768, 288, 32), (8192, 576, 64), (12544, 1152, 128)]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        fastest, median = timed(lambda: a @ b, 9)
        print(f"  ({m}, {k}) @ ({k}, {n}): {fastest:.2f} ms, {2 * m * k * n / fastest / 1e6:.0f} GFLOP/s "
              f"(median {median:.2f} ms)")


def shifted() -> None:
    """A 3x3 stride-1 convolution's backward pass (batch 128, C_in = C_out, columns not kept) with the
    shifted-rows gradients and with the columns rebuilt, alternating the two three times."""
    from xpcnn import functional as F
    rng = np.random.default_rng(0)
    print("3x3 convolution backward, batch 128, padding 1 (ms, min / median of 7):")
    for channels, size in [(8, 32), (16, 32), (32, 16)]:
        x = rng.standard_normal((128, size, size, channels)).astype(np.float32).transpose(0, 3, 1, 2)
        weight = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32)
        _, cache = F.conv2d_forward(x, weight, np.zeros(channels, np.float32), padding=1)
        dy = rng.standard_normal((128, size, size, channels)).astype(np.float32).transpose(0, 3, 1, 2)
        rows = {"shifted rows": [], "rebuilt columns": []}
        below = conv_module.SHIFTED_BELOW
        for _ in range(3):
            for name, threshold in (("shifted rows", 10**6), ("rebuilt columns", 0)):
                conv_module.SHIFTED_BELOW = threshold
                rows[name].append(timed(lambda: F.conv2d_backward(dy, cache), 7))
        conv_module.SHIFTED_BELOW = below
        print(f"  {channels} channels at {size}x{size} (columns kept: {cache.cols is not None}): " + "; ".join(
            f"{name} " + ", ".join("%.1f / %.1f" % pair for pair in pairs) for name, pairs in rows.items()))


def faults(who: str) -> None:
    """Minor page faults and wall time per LeNet b64 training step (the benchmark harness's case and its
    blocks of calls), of PyTorch or xpcnn alone in this process, or of both interleaved."""
    import resource

    import torch

    sys.path.insert(0, str(ROOT))                    # the harness lives in the checkout, not the package
    from benchmarks import harness
    from xpcnn.backend import resolve
    backend = resolve("numpy")
    case = next(case for case in harness.cases() if case.name == "LeNet step b64")
    ours, theirs = case.build(backend, torch, "cpu")
    sync = harness._sync(backend, torch, "cpu")
    steps = {"torch": {"PyTorch": theirs}, "xpcnn": {"xpcnn": ours},
             "both": {"xpcnn": ours, "PyTorch": theirs}}[who]
    counts = {label: [0, []] for label in steps}
    for fn in steps.values():
        fn(), fn()
    for _ in range(6):
        for label, fn in steps.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            counts[label][1].extend(harness._block(fn, sync))          # a pause, one untimed call, BLOCK timed
            counts[label][0] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    for label, (faulted, times) in counts.items():
        calls = len(times) * (harness.BLOCK + 1) // harness.BLOCK
        print(f"{label} ({'interleaved' if who == 'both' else 'alone'}): {faulted / calls:.0f} page faults "
              f"per step, {statistics.median(times):.1f} ms (median of {len(times)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("threads", "maxpool", "products", "shifted", "faults"))
    parser.add_argument("who", nargs="?", default="both", choices=("torch", "xpcnn", "both"),
                        help="faults: whose steps run in this process")
    args = parser.parse_args()
    if args.what == "faults":
        faults(args.who)
    else:
        {"threads": threads, "maxpool": maxpool, "products": products, "shifted": shifted}[args.what]()


if __name__ == "__main__":
    main()
