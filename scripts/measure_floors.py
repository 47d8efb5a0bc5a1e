"""Measurements behind docs/performance.md's "what bounds it": threads over the batch, the max-pooling
backward pass's elementwise floor, OpenBLAS's float32 products at the convolutions' shapes, the grouped
convolution's products and columns, and the A/B runs behind the convolution forms' rules.

    python scripts/measure_floors.py threads     # one thread against two, over the batch (NumPy)
    python scripts/measure_floors.py maxpool     # the passes a max-pool 3x3 s2 backward is made of
    python scripts/measure_floors.py products    # GFLOP/s of the products im2col convolutions make
    python scripts/measure_floors.py shifted     # conv backward: shifted rows against rebuilt columns
    python scripts/measure_floors.py forward     # conv forward: shifted rows against im2col blocks
    python scripts/measure_floors.py dx          # conv backward: dx as a convolution of δ against per offset
    python scripts/measure_floors.py grouped     # grouped 3x3: its products and columns alone, and PyTorch's
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
    """The passes of the loop form's max-pool 3x3 s2 p1 backward, batch 32, 64 channels, 56x56 input: per
    window offset a comparison of the argmax, its cast, a product with δ and an add, on the whole batch and
    on the blocks of about 1 MiB the fold takes (pool.FOLD_BLOCK_BYTES); the fold itself with whole-batch
    and with such blocks; PyTorch's backward pass."""
    from xpcnn.functional import pool
    rng = np.random.default_rng(0)
    n, c, oh = 32, 64, 28
    per_sample = oh * oh * c * 4
    block = max(1, pool.FOLD_BLOCK_BYTES // per_sample)
    print(f"max-pool 3x3 s2 backward, {n * oh * oh * c / 1e6:.1f} M outputs (ms, min / median):")
    for label, m in (("whole batch", n), (f"blocks of {block} samples", block)):
        argmax = rng.integers(0, 9, (m, oh, oh, c)).astype(np.int8)
        dy = rng.standard_normal((m, oh, oh, c)).astype(np.float32)
        total = np.zeros((m, oh + 1, oh, c), np.float32).reshape(m, -1)
        run = oh * oh * c
        mask = argmax == 4
        share = mask.astype(np.float32)
        parts = {
            "compare argmax == k": lambda: argmax == 4,
            "cast the mask to float32": lambda: mask.astype(np.float32),
            "product with δ, in place": lambda: share.__imul__(dy),
            "add into a contiguous run": lambda: total[:, oh * c:oh * c + run].__iadd__(share.reshape(m, -1)),
        }
        times = {name: timed(fn) for name, fn in parts.items()}
        per_block = sum(fastest for fastest, _ in times.values())
        floor = 9 * per_block * (n / m)                 # the blocked floor is the loop's last
        print(f"  {label}: " + "; ".join(f"{name} {'%.3f / %.3f' % t}" for name, t in times.items()))
        print(f"    9 offsets x these 4 passes over the batch: {floor:.1f} ms at the minima")
    x = np.ascontiguousarray(rng.standard_normal((n, 56, 56, c)).astype(np.float32)).transpose(0, 3, 1, 2)
    y, cache = pool.max_pool2d_forward(x, 3, 2, 1)
    grad = np.ascontiguousarray(rng.standard_normal(y.shape).astype(np.float32).transpose(0, 2, 3, 1))
    grad = grad.transpose(0, 3, 1, 2)
    saved = pool.FOLD_BLOCK_BYTES
    try:
        pool.FOLD_BLOCK_BYTES = n * per_sample
        whole = timed(lambda: pool.max_pool2d_backward(grad, cache))
    finally:
        pool.FOLD_BLOCK_BYTES = saved
    blocked = timed(lambda: pool.max_pool2d_backward(grad, cache))
    print(f"  xpcnn's backward pass: whole batch {'%.2f / %.2f' % whole}, in blocks {'%.2f / %.2f' % blocked}")
    try:
        import torch
    except ImportError:
        return
    tx = torch.randn(n, c, 2 * oh, 2 * oh, requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, 3, 2, 1)
    tdy = torch.randn_like(ty)
    time.sleep(0.2)                                         # OpenBLAS's spinning threads go quiet first
    theirs = timed(lambda: torch.autograd.grad(ty, (tx,), tdy, retain_graph=True))[0]
    print(f"  PyTorch's backward pass: {theirs:.2f} ms; the passes alone, in blocks: {floor:.1f} ms "
          f"({floor / theirs:.1f}x)")


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


def _alternate(variants: dict, fn, rounds: int = 4) -> dict:
    """{name: median ms} of ``fn`` under each variant (a function that sets it up), alternating ``rounds``
    times; each round times 5 calls per variant."""
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, setup in variants.items():
            setup()
            times[name].append(timed(fn, 5)[1])
    return {name: statistics.median(values) for name, values in times.items()}


def _conv_data(rng, n, c_in, c_out, size, groups=1):
    x = rng.standard_normal((n, size, size, c_in)).astype(np.float32).transpose(0, 3, 1, 2)
    weight = (rng.standard_normal((c_out, c_in // groups, 3, 3)) * 0.1).astype(np.float32)
    return x, weight


def forward() -> None:
    """A 3x3 convolution's forward pass in evaluation (columns built in blocks) from shifted rows and by
    im2col, then the ResNet-20 training step (batch 128) with and without the shifted forward passes,
    alternating (conv.SHIFTED_FORWARD). Winograd is off (with one BLAS thread it would take these layers)."""
    from xpcnn import config, functional as F, optim, zoo
    rng = np.random.default_rng(0)
    variants = {"shifted rows": lambda: setattr(conv_module, "SHIFTED_FORWARD", True),
                "im2col": lambda: setattr(conv_module, "SHIFTED_FORWARD", False)}
    below = conv_module.SHIFTED_BELOW
    try:
        with config.using(winograd="off"):
            print("3x3 convolution forward, evaluation, padding 1 (ms, median of 4 rounds of 5):")
            for n, channels, size in [(128, 8, 32), (128, 16, 32), (128, 32, 16)]:
                conv_module.SHIFTED_BELOW = 10**6                  # the rule's channel limit lifted
                x, weight = _conv_data(rng, n, channels, channels, size)
                got = _alternate(variants, lambda: F.conv2d_forward(x, weight, None, padding=1, training=False))
                conv_module.SHIFTED_BELOW = below
                print(f"  batch {n}, {channels} channels at {size}x{size}: "
                      + "; ".join(f"{name} {ms:.2f}" for name, ms in got.items()))
            model = zoo.resnet20(seed=0)
            x = rng.standard_normal((128, 3, 32, 32)).astype(np.float32)
            labels = rng.integers(0, 10, 128)
            adam = optim.Adam(model.parameters(), lr=1e-4)

            def step():
                _, dlogits = F.softmax_cross_entropy(model.forward(x), labels, check_labels=False)
                model.zero_grad()
                model.backward(dlogits, need_dx=False)
                adam.step()
            step()
            got = _alternate(variants, step, rounds=6)
    finally:
        conv_module.SHIFTED_FORWARD, conv_module.SHIFTED_BELOW = True, below
    print("ResNet-20 training step, batch 128 (ms, median of 6 rounds of 5): "
          + "; ".join(f"{name} {ms:.1f}" for name, ms in got.items()))


def dx() -> None:
    """A 3x3 stride-1 convolution's backward pass with its input gradient as a convolution of δ with the
    flipped kernel, and per kernel offset (kH·kW products added into strided slices), alternating; columns
    kept or rebuilt as the forward pass leaves them; Winograd off. conv.py takes the convolution of δ for
    groups only (_dx_by_correlation); the one-group rows force it, to show why not."""
    from xpcnn import config, functional as F
    rng = np.random.default_rng(0)
    rule, below = conv_module._dx_by_correlation, conv_module.SHIFTED_BELOW
    variants = {"a convolution of δ": lambda: setattr(conv_module, "_dx_by_correlation", lambda c: True),
                "per offset": lambda: setattr(conv_module, "_dx_by_correlation", lambda c: False)}
    conv_module.SHIFTED_BELOW = 0                           # columns, not shifted rows, for these channels
    print("3x3 convolution backward pass, padding 1 (ms, median of 4 rounds of 5):")
    try:
        with config.using(winograd="off"):
            for n, c_in, c_out, size, groups in [(32, 64, 64, 28, 4), (32, 32, 32, 32, 1), (128, 32, 32, 16, 1),
                                                 (32, 64, 64, 16, 1), (64, 32, 64, 14, 1), (128, 64, 64, 8, 1)]:
                x, weight = _conv_data(rng, n, c_in, c_out, size, groups)
                y, cache = F.conv2d_forward(x, weight, None, padding=1, groups=groups)
                dy = rng.standard_normal((n, size, size, c_out)).astype(np.float32).transpose(0, 3, 1, 2)
                got = _alternate(variants, lambda: F.conv2d_backward(dy, cache))    # δ laid out as layers pass it
                print(f"  batch {n}, {c_in}->{c_out} at {size}x{size}, groups {groups}, columns "
                      f"{'kept' if cache.cols is not None else 'rebuilt'}: "
                      + "; ".join(f"{name} {ms:.2f}" for name, ms in got.items())
                      + f" (the rule takes {'a convolution' if rule(cache) else 'per offset'})")
    finally:
        conv_module._dx_by_correlation, conv_module.SHIFTED_BELOW = rule, below


def grouped() -> None:
    """The benchmark's grouped case (3x3, 64->64 channels in 4 groups, 28x28, batch 32): the float32 products
    its forward and backward passes make, alone, on prebuilt operands (forward G x (M, 9·Cg) @ (9·Cg, Cg)
    or its transpose, whichever is faster,
    dW the same shapes transposed, dx a second forward's), its channel-major columns' copy alone, and
    PyTorch's forward and backward passes in the same run."""
    rng = np.random.default_rng(0)
    n, c, size, groups = 32, 64, 28, 4
    cg, m = c // groups, n * size * size
    cols_t = rng.standard_normal((groups, 9 * cg, m)).astype(np.float32)             # (G, K·Cg, M)
    cols = np.ascontiguousarray(cols_t.transpose(0, 2, 1))
    weight = rng.standard_normal((groups, 9 * cg, cg)).astype(np.float32)
    dy = rng.standard_normal((groups, m, cg)).astype(np.float32)
    flops = 2 * m * 9 * cg * cg * groups
    weight_t = np.ascontiguousarray(weight.transpose(0, 2, 1))
    forward_ms = min(timed(lambda: np.matmul(cols, weight), 11)[0],                      # the faster orientation
                     timed(lambda: [weight_t[g] @ cols_t[g] for g in range(groups)], 11)[0])
    dw_ms = timed(lambda: np.matmul(cols_t, dy), 11)[0]
    source = rng.standard_normal((groups, cg, n, size + 2, size + 2)).astype(np.float32)
    copy_ms = timed(lambda: np.stack([source[:, :, :, i:i + size, j:j + size] for i in range(3) for j in range(3)],
                                     axis=1), 11)[0]
    print(f"OpenBLAS kernels: {cores.blas_kernels()}, {cores.threads_in_force()} threads")
    print(f"grouped 3x3, {c}->{c} channels in {groups} groups, {size}x{size}, batch {n}: {flops / 1e9:.2f} GFLOP "
          f"per product set")
    print(f"  forward products {forward_ms:.2f} ms ({flops / forward_ms / 1e6:.0f} GFLOP/s), dW products "
          f"{dw_ms:.2f} ms, dx products (a second forward's) {forward_ms:.2f} ms")
    print(f"  channel-major columns, one copy: {copy_ms:.2f} ms for {cols.nbytes / 2**20:.0f} MiB "
          f"({cols.nbytes / copy_ms / 1e6:.1f} GB/s written); the forward makes one, the backward one (of δ)")
    try:
        import torch
    except ImportError:
        return
    tx = torch.randn(n, c, size, size, requires_grad=True)
    tw = torch.randn(c, cg, 3, 3, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, padding=1, groups=groups)
    grad = torch.randn_like(ty)
    time.sleep(0.2)
    their_forward = timed(lambda: torch.nn.functional.conv2d(tx.detach(), tw.detach(), padding=1, groups=groups))[0]
    their_backward = timed(lambda: torch.autograd.grad(ty, (tx, tw), grad, retain_graph=True))[0]
    ours = 2 * forward_ms + dw_ms
    print(f"  PyTorch: forward {their_forward:.2f} ms, backward {their_backward:.2f} ms; the products alone: "
          f"forward {forward_ms / their_forward:.1f}x, backward {(dw_ms + forward_ms) / their_backward:.1f}x, "
          f"both {ours / (their_forward + their_backward):.1f}x; with the two column copies "
          f"{(ours + 2 * copy_ms) / (their_forward + their_backward):.1f}x")


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
    parser.add_argument("what", choices=("threads", "maxpool", "products", "shifted", "forward", "dx", "grouped",
                                         "faults"))
    parser.add_argument("who", nargs="?", default="both", choices=("torch", "xpcnn", "both"),
                        help="faults: whose steps run in this process")
    args = parser.parse_args()
    if args.what == "faults":
        faults(args.who)
    else:
        {"threads": threads, "maxpool": maxpool, "products": products, "shifted": shifted, "forward": forward,
         "dx": dx, "grouped": grouped}[args.what]()


if __name__ == "__main__":
    main()
