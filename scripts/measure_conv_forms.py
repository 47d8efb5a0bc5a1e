"""Measure conv forward+backward CPU time of the Winograd forms against im2col, and of grouped convolutions
against PyTorch's (NumPy, float32).

    python scripts/measure_conv_forms.py winograd [--batch 32] [--repeats 5] [--sizes 8 16 32] [--channels 16 32]
    python scripts/measure_conv_forms.py grouped [--batch 32] [--repeats 5] [--sizes 16 32] [--channels 32 64 128]

BLAS runs on one thread (threadpoolctl) and the time is the process's CPU time, the minimum over the
repeats, so other work on a shared machine moves the numbers little; the table gives ratios.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import xpcnn
from xpcnn import functional as F
from xpcnn.functional import winograd


def step_time(x, w, b, repeats, **kwargs) -> float:
    """Minimum CPU seconds of conv2d_forward + conv2d_backward (all three gradients)."""
    y, cache = F.conv2d_forward(x, w, b, **kwargs)
    dy = np.ones_like(y)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        y, cache = F.conv2d_forward(x, w, b, **kwargs)
        F.conv2d_backward(dy, cache)
        best = min(best, time.process_time() - start)
    return best


def forms(tiles=(2, 4)):
    yield "im2col", dict(winograd="off"), None
    for m in tiles:
        yield f"F({m}x{m})", dict(winograd="on"), m


def measure_winograd(batch, repeats, sizes, channels):
    rng = np.random.default_rng(0)
    print("| C_in = C_out | H = W | batch | im2col / F(2x2,3x3) | im2col / F(4x4,3x3) |")
    print("|---|---|---|---|---|")
    for c in channels:
        for size in sizes:
            x = rng.standard_normal((batch, c, size, size)).astype(np.float32)
            w = (rng.standard_normal((c, c, 3, 3)) / (3 * c ** 0.5)).astype(np.float32)
            b = np.zeros(c, np.float32)
            times = {}
            for name, settings, tile in forms():
                saved = winograd.TILE
                winograd.TILE = tile or saved
                try:
                    with xpcnn.config.using(**settings):
                        times[name] = step_time(x, w, b, repeats, padding=1)
                finally:
                    winograd.TILE = saved
            print(f"| {c} | {size} | {batch} | {times['im2col'] / times['F(2x2)']:.2f} "
                  f"| {times['im2col'] / times['F(4x4)']:.2f} |", flush=True)


def torch_step_time(x, w, b, repeats, **kwargs) -> float:
    """The same minimum for torch.nn.functional.conv2d forward + backward (one thread)."""
    import torch

    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    dy = torch.ones_like(torch.nn.functional.conv2d(tx, tw, tb, **kwargs))
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.process_time()
        torch.nn.functional.conv2d(tx, tw, tb, **kwargs).backward(dy)
        best = min(best, time.process_time() - start)
    return best


def measure_grouped(batch, repeats, sizes, channels, multipliers=(1, 2)):
    """xpcnn / PyTorch time of 3x3 grouped convolutions, padding 1, C_in = C, C_out = C (and 2C depthwise)."""
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print("| C_in | C_out | groups | H = W | batch | xpcnn / PyTorch |")
    print("|---|---|---|---|---|---|")
    for c in channels:
        cases = [(g, c) for g in (2, 4, 32) if g < c] + [(c, c * m) for m in multipliers]
        for groups, c_out in cases:
            for size in sizes:
                x = rng.standard_normal((batch, c, size, size)).astype(np.float32)
                w = (rng.standard_normal((c_out, c // groups, 3, 3)) / 3).astype(np.float32)
                b = np.zeros(c_out, np.float32)
                # xpcnn's layers hand on NCHW views of channels-last memory; PyTorch's, contiguous NCHW
                channels_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
                ours = step_time(channels_last, w, b, repeats, padding=1, groups=groups)
                theirs = torch_step_time(x, w, b, repeats, padding=1, groups=groups)
                print(f"| {c} | {c_out} | {groups} | {size} | {batch} | {ours / theirs:.2f} |", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["winograd", "grouped"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--channels", type=int, nargs="+", default=None)
    args = parser.parse_args()
    with threadpool_limits(1):
        if args.what == "winograd":
            measure_winograd(args.batch, args.repeats, args.sizes or [8, 16, 32], args.channels or [16, 32, 64, 128])
        else:
            measure_grouped(args.batch, args.repeats, args.sizes or [16, 32], args.channels or [32, 64, 128])


if __name__ == "__main__":
    main()
