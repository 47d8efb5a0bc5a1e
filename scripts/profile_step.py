"""Where a training step's time goes: exclusive time per layer kind and direction, the loss and the optimizer.

    python scripts/profile_step.py [resnet20|vgg_small|lenet] [--batch 128] [--steps 8] [--threads N]
    python scripts/profile_step.py resnet20 --products      # the step's convolution products alone

Each layer's forward and backward are timed on the layer kinds' own methods, less the time of the layers
nested inside (so a Residual's row is its own sum, not its block's), over ``--steps`` Adam steps after
two untimed ones; the table gives milliseconds per step (medians over the steps) and the share of the
step. Compare code versions by running it alternately: the machine's speed drifts between runs.

``--products`` times only the matrix products that the step's convolutions make, on whole-batch operands
of the same shapes and layouts (forward ``cols @ W``, ``dW = colsᵀ @ δ``, and ``δ @ W_kᵀ`` per kernel
offset for the input gradient): a floor for the step with im2col on this BLAS, before any copy or
elementwise pass. It also times PyTorch's whole step (its own threads, after a pause) for comparison.
"""
import argparse
import collections
import pathlib
import statistics
import sys
import time

import numpy as np

import xpcnn.functional as F
from xpcnn import cores, optim, zoo
from xpcnn.cli import positive_count


class Clock:
    """Exclusive wall time per (kind, direction): a stack of open calls, each charged only its own time."""

    def __init__(self):
        self.totals = collections.defaultdict(float)
        self.stack = []

    def wrap(self, kind, direction, method):
        def timed(*args, **kwargs):
            self.stack.append(0.0)
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                inner = self.stack.pop()
                self.totals[(kind, direction)] += spent - inner
                if self.stack:
                    self.stack[-1] += spent
        return timed

    def time(self, kind, direction, fn, *args, **kwargs):
        return self.wrap(kind, direction, fn)(*args, **kwargs)


def instrument(model, clock):
    """Time every layer of ``model`` (instance attributes, so other models are untouched)."""
    seen = []

    def walk(layer):
        if id(layer) in seen:
            return
        seen.append(id(layer))
        kind = type(layer).__name__
        layer.forward = clock.wrap(kind, "forward", layer.forward)
        layer.backward = clock.wrap(kind, "backward", layer.backward)
        for _, child in layer.children():
            walk(child)
    for layer in model:
        walk(layer)


def conv_shapes(model, x):
    """(batch, C_in, C_out, kernel, output H*W, first) of every Conv2D, recorded during one forward pass."""
    shapes = []

    def record(layer, forward):
        def recorded(inp):
            out = forward(inp)
            kh, kw = layer.kernel_size
            shapes.append((inp.shape[0], inp.shape[1], out.shape[1], kh * kw, out.shape[2] * out.shape[3],
                           not shapes))
            return out
        return recorded

    def walk(layer):
        if type(layer).__name__ == "Conv2D":
            layer.forward = record(layer, layer.forward)
        for _, child in layer.children():
            walk(child)
    for layer in model:
        walk(layer)
    model.forward(x)
    return shapes


def products_time(shapes, repeat: int = 5) -> float:
    """Milliseconds of the step's convolution products alone (minimum over ``repeat`` passes)."""
    rng = np.random.default_rng(0)
    work = []
    for n, c_in, c_out, taps, pixels, first in shapes:
        m = n * pixels
        cols = rng.standard_normal((m, taps * c_in)).astype(np.float32)
        weight = rng.standard_normal((taps * c_in, c_out)).astype(np.float32)
        delta = rng.standard_normal((m, c_out)).astype(np.float32)
        weight_t = np.ascontiguousarray(weight.T)
        work.append((cols, weight, delta, weight_t, taps, c_in, first))
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for cols, weight, delta, weight_t, taps, c_in, first in work:
            cols @ weight                                   # forward
            cols.T @ delta                                  # dW
            if not first:                                   # δ_prev, one product per kernel offset
                for k in range(taps):
                    delta @ weight_t[:, k * c_in:(k + 1) * c_in]
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def torch_step_ms(model_name: str, batch: int, shape: tuple, kwargs: dict) -> float | None:
    """Median of PyTorch's whole step for the same model, timed as the benchmark harness times a step case
    (its blocks of calls, each after a pause); None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))     # the harness: the checkout's
    from benchmarks import harness
    from xpcnn.backend import resolve
    builder = getattr(zoo, model_name)
    case = harness._step_case(model_name, lambda backend: builder(seed=0, backend=backend, **kwargs), shape, batch)
    return statistics.median(harness.time_one_side(case, "torch", resolve("numpy"), torch, "cpu", 2, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="resnet20", choices=("resnet20", "vgg_small", "lenet"))
    parser.add_argument("--batch", type=positive_count, default=128)
    parser.add_argument("--steps", type=positive_count, default=8)
    parser.add_argument("--threads", type=positive_count, default=None, help="BLAS threads (default: as they are)")
    parser.add_argument("--products", action="store_true", help="time the convolution products alone")
    args = parser.parse_args()
    if args.threads:
        cores.set_threads(args.threads)
    kwargs = {} if args.model == "resnet20" else {"dropout": 0.0}
    model = getattr(zoo, args.model)(seed=0, **kwargs)
    shape = (1, 28, 28) if args.model == "lenet" else (3, 32, 32)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch,) + shape).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    model(x)
    if args.products:
        shapes = conv_shapes(model, x)
        flops = sum(2 * n * pixels * taps * c_in * c_out * (2 if first else 3)
                    for n, c_in, c_out, taps, pixels, first in shapes)
        ours = products_time(shapes)
        print(f"{args.model} batch {args.batch}: {len(shapes)} convolutions, {flops / 1e9:.1f} GFLOP per step; "
              f"their products alone {ours:.1f} ms ({flops / ours / 1e6:.0f} GFLOP/s)")
        theirs = torch_step_ms(args.model, args.batch, shape, kwargs)
        if theirs is not None:
            print(f"PyTorch's whole step: {theirs:.1f} ms; products alone / PyTorch step = {ours / theirs:.2f}")
        return
    adam = optim.Adam(model.parameters(), lr=1e-4)
    clock = Clock()
    instrument(model, clock)

    def step():
        logits = model.forward(x)
        _, dlogits = clock.time("loss", "both", F.softmax_cross_entropy, logits, y, check_labels=False)
        model.zero_grad()
        model.backward(dlogits, need_dx=False)
        clock.time("Adam", "step", adam.step)

    for _ in range(2):
        step()
    rows, walls = collections.defaultdict(list), []
    for _ in range(args.steps):
        clock.totals.clear()
        start = time.perf_counter()
        step()
        walls.append(time.perf_counter() - start)
        for key, value in clock.totals.items():
            rows[key].append(value)
    wall = statistics.median(walls) * 1e3
    print(f"{args.model} batch {args.batch}: step {wall:.1f} ms (median of {args.steps}; "
          f"{min(walls) * 1e3:.1f}-{max(walls) * 1e3:.1f})")
    print("| part | ms per step | share |")
    print("|---|---:|---:|")
    table = sorted(((statistics.median(v) * 1e3, k) for k, v in rows.items()), reverse=True)
    for ms, (kind, direction) in table:
        print(f"| {kind} {direction} | {ms:.1f} | {ms / wall:.0%} |")
    rest = wall - sum(ms for ms, _ in table)
    print(f"| other (the step's own Python) | {rest:.1f} | {rest / wall:.0%} |")


if __name__ == "__main__":
    main()
