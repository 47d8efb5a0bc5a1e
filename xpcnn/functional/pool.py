"""Max and average pooling over NCHW inputs.

Max pooling:  y[n, c, p, q] = max over the window;  backward routes δ to the argmax
(the first maximum in row-major window order when there is a tie), zero elsewhere.
Average pooling:  y = (1/|window|) * sum over the window;  backward spreads δ/|window|
evenly over the window ("upsampling" of δ).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat
import array_api_extra as xpx

from .. import checks
from ..backend import constant, made_once
from . import _gather, _windows
from ._launch import host_memory, launch_bound


@dataclass
class PoolCache:
    x_shape: tuple
    kernel: tuple
    stride: tuple
    pads: tuple
    out_hw: tuple
    argmax: Any = None      # max pooling (loops): (N, OH, OW, C) window index of each maximum (row-major), channels-last
    chosen: Any = None      # max pooling (few launches): bool, True at each window's chosen cell (see _chosen_cells)
    windows: Any = None     # the few-launch forms' window layout: "tiles" or a _gather.Geometry
    divisor: Any = None     # average pooling: window sizes, a float or (1, OH, OW, 1)
    dtype: Any = None       # x's dtype, which dy must have


def _geometry(op: str, x, kernel_size, stride, padding):
    trusted = checks.is_trusted()          # inside a model, the layer checked x and its own geometry
    if trusted:
        xp = array_api_compat.array_namespace(x)
    else:
        xp = checks.namespace(op, x)
        checks.check_float(op, "x", x, xp)
        checks.check_ndim(op, "x", x, 4, "(N, C, H, W)")
    kernel = checks.pair(op, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else checks.pair(op, "stride", stride, 1)
    ph, pw = checks.pair(op, "padding", padding, 0)
    if not trusted:
        pool_padding(op, kernel, (ph, pw), padding)
    pads = (ph, ph, pw, pw)
    out_hw = checks.window_shape(x.shape, kernel, stride, pads) if trusted else \
        checks.check_window(op, x.shape, kernel, stride, pads)
    return xp, kernel, stride, pads, out_hw


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """Max pooling. x (N, C, H, W) -> ``(y, cache)``, y (N, C, OH, OW); stride defaults to kernel_size.

    torch's rule, cell by cell in row-major window order: start at the window's first real (unpadded)
    cell; a strictly larger value or a NaN takes over. So a tie keeps the first maximum, a NaN is the
    maximum (the last NaN of a window gets δ, as in torch's kernels), and padding never wins, even
    against -inf. The padding is -inf, so the value of y is right by itself; the cache keeps the window
    index of each maximum (the loops) or a mask of the chosen cells (the few-launch forms).
    """
    op = "max_pool2d"
    xp, kernel, stride, pads, out_hw = _geometry(op, x, kernel_size, stride, padding)
    if launch_bound(x):
        return _max_pool_few_launches(xp, x, kernel, stride, pads, out_hw)
    # the windows are taken channels-last (a view for the conv, activation and pooling outputs, which
    # are laid out so): every pass then runs over contiguous runs of C values
    x_pad = _windows.pad_hw(xp.permute_dims(x, (0, 2, 3, 1)), pads, (1, 2), value=-float("inf"))
    index_dtype = xp.int8 if kernel[0] * kernel[1] <= 127 else xp.int32
    first_real = _first_real_cell(xp, kernel, stride, pads, out_hw, index_dtype, x) if any(pads) else None
    # NumPy arrays are host memory, where one look for a NaN costs a pass over y, not a read of a device:
    # their loop skips the NaN test per kernel offset, and is rerun with it only when y holds a NaN
    look_after = host_memory(x)
    y, argmax = _running_max(xp, x_pad, kernel, stride, out_hw, index_dtype, first_real, nan_test=not look_after)
    if look_after and bool(xp.any(xp.isnan(y))):
        y, argmax = _running_max(xp, x_pad, kernel, stride, out_hw, index_dtype, first_real, nan_test=True)
    if kernel == (1, 1):
        y = y + 0.0  # a fresh array, not a view of x
    return xp.permute_dims(y, (0, 3, 1, 2)), PoolCache(tuple(x.shape), kernel, stride, pads, out_hw,
                                                       argmax=argmax, dtype=x.dtype)


def _running_max(xp, x_pad, kernel, stride, out_hw, index_dtype, first_real, nan_test: bool):
    """The maximum over the kernel offsets and its window index (the loop form); without ``nan_test`` a NaN
    does not take the index over (right only for windows without NaN)."""
    y = argmax = None
    for k, rows, cols in _windows.offsets(kernel, stride, (1, 1), out_hw):
        window = x_pad[:, rows, cols, :]
        if y is None:
            # zeros_like keeps the memory order of x's window (NumPy), so the running updates below
            # combine arrays of one order; a padded window starts at its first real cell
            y, argmax = window, xp.zeros_like(window, dtype=index_dtype)
            if first_real is not None:
                argmax = argmax + first_real
            continue
        # argmax <- k where larger or NaN; k exceeds every earlier index, so a maximum does the select
        # (a padded cell is -inf: never larger, never NaN)
        takes = (window > y) | xp.isnan(window) if nan_test else window > y
        argmax = xp.maximum(argmax, xp.astype(takes, index_dtype) * k)
        y = xp.maximum(y, window)
    return y, argmax


def _tiles(x_shape, kernel, stride, pads, out_hw) -> bool:
    """Whether the windows tile the input exactly (stride = kernel, no padding, no rows or columns left
    over): an (N, H, W, C) array is then (N, OH, kH, OW, kW, C) windows as it is, a view."""
    return (stride == kernel and not any(pads)
            and (out_hw[0] * kernel[0], out_hw[1] * kernel[1]) == tuple(x_shape[2:]))


def _max_pool_few_launches(xp, x, kernel, stride, pads, out_hw):
    """Max pooling in seven launches (nine with a gather), whatever the kernel: the windows are a view
    ("tiles") or gathered (N, P, K, C) cells, padding -inf; their maximum; and the chosen cells (_chosen_cells),
    kept as a bool mask for the backward pass, one select."""
    n, c, h, w = x.shape
    if _tiles(x.shape, kernel, stride, pads, out_hw):
        layout, axes = "tiles", (2, 4)
        cells = xp.reshape(xp.permute_dims(x, (0, 2, 3, 1)), (n, out_hw[0], kernel[0], out_hw[1], kernel[1], c))
    else:
        layout, axes = _gather.Geometry(kernel, stride, (1, 1), pads, (h, w), out_hw), (2,)
        rows = _gather.rows_of(xp, _windows.channels_last(x, xp))
        cells = xp.reshape(_gather.windows(xp, rows, layout, -float("inf")),
                           (n, out_hw[0] * out_hw[1], kernel[0] * kernel[1], c))
    top = xp.max(cells, axis=axes, keepdims=True)
    chosen = _chosen_cells(xp, cells, top, axes, layout, kernel)
    y = xp.permute_dims(xp.reshape(top, (n, out_hw[0], out_hw[1], c)), (0, 3, 1, 2))
    return y, PoolCache(tuple(x.shape), kernel, stride, pads, out_hw, chosen=chosen, windows=layout, dtype=x.dtype)


def _chosen_cells(xp, cells, top, axes, layout, kernel):
    """True at the cell the loop form chooses in each window, False elsewhere. Each cell is scored: K - k
    for a maximum (the first scores highest), 1 + k for a NaN (the window's maximum is then NaN and no cell
    equals it: the last NaN scores highest), 0 for padding and the rest; the chosen cell has the window's
    top score. Scores are int8 up to 63 cells, int16 beyond; their tables are made once per place."""
    k = kernel[0] * kernel[1]
    dtype = xp.int8 if 2 * k < 127 else xp.int16
    shape = (1, 1, kernel[0], 1, kernel[1], 1) if layout == "tiles" else (1, k, 1)

    def ranks(device):
        first = xp.reshape(xp.arange(k, 0, -1, dtype=dtype, device=device), shape)
        if layout != "tiles" and any(layout.pads):        # a padded cell (-inf) never scores
            _, real, _ = _gather.tables("windows", layout, cells, xp)
            first = xp.reshape(xp.where(xp.reshape(real, (-1, k, 1)), first, xp.zeros_like(first)), (1, -1, k, 1))
        return first, xp.reshape(xp.arange(1, k + 1, dtype=dtype, device=device), shape)

    first_max, last_nan = made_once(("ranks", k, layout, str(dtype)), cells, ranks)
    scores = xp.where(cells == top, first_max, constant(0, first_max))
    scores = xp.where(xp.isnan(cells), last_nan, scores)
    return scores == xp.max(scores, axis=axes, keepdims=True)


def _first_real_cell(xp, kernel, stride, pads, out_hw, index_dtype, like):
    """(1, OH, OW, 1): the window index (row-major) of each window's first unpadded cell (made once per
    geometry and place)."""
    def make(device):
        starts = []
        for pad, step, size in ((pads[0], stride[0], out_hw[0]), (pads[2], stride[1], out_hw[1])):
            skipped = pad - step * xp.arange(size, dtype=xp.int32, device=device)    # padded rows (cols) in front
            starts.append(xp.maximum(skipped, xp.zeros_like(skipped)))
        first = xp.reshape(starts[0], (out_hw[0], 1)) * kernel[1] + xp.reshape(starts[1], (1, out_hw[1]))
        return xp.reshape(xp.astype(first, index_dtype), (1, out_hw[0], out_hw[1], 1))

    return made_once(("first real", kernel, stride, pads, out_hw, str(index_dtype)), like, make)


FOLD_BLOCK_BYTES = 1 << 20    # a CPU fold's contributions per block of samples (_phase_fold)


def max_pool2d_backward(dy, cache: PoolCache):
    """dx (N, C, H, W): δ goes to the position of each window's maximum (summed where windows overlap)."""
    if cache.chosen is not None:
        return _max_pool_backward_few_launches(dy, cache)
    xp = _dy_namespace("max_pool2d_backward", dy, cache.argmax, cache)
    dy, argmax = _windows.channels_last(dy, xp), cache.argmax

    def routed(k, samples=None):
        share = xp.astype(_of(argmax, samples) == k, dy.dtype)
        share *= _of(dy, samples)                           # in place: one new array per offset, not two
        return share

    return _fold(xp, dy, cache, routed)


def _max_pool_backward_few_launches(dy, cache: PoolCache):
    """δ to each window's chosen cell: one select (tiles: the input gradient as it is; gathered windows:
    then their fold, a gather and a sum)."""
    xp = _dy_namespace("max_pool2d_backward", dy, cache.chosen, cache)
    n, c, h, w = cache.x_shape
    (oh, ow), (kh, kw) = cache.out_hw, cache.kernel
    dy_nhwc = xp.permute_dims(dy, (0, 2, 3, 1))            # any memory order: a select reads it as it lies
    if cache.windows == "tiles":
        dx = xp.where(cache.chosen, xp.reshape(dy_nhwc, (n, oh, 1, ow, 1, c)), constant(0.0, dy))
        return xp.permute_dims(xp.reshape(dx, (n, h, w, c)), (0, 3, 1, 2))
    routed = xp.where(cache.chosen, xp.reshape(dy_nhwc, (n, oh * ow, 1, c)), constant(0.0, dy))
    dx = _gather.fold(xp, xp.reshape(routed, (n, oh * ow * kh * kw, c)), cache.windows)
    return xp.permute_dims(xp.reshape(dx, (n, h, w, c)), (0, 3, 1, 2))


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Average pooling. x (N, C, H, W) -> ``(y, cache)``; stride defaults to kernel_size.

    With ``count_include_pad=False`` each window is divided by its number of real (unpadded) cells.
    """
    op = "avg_pool2d"
    xp, kernel, stride, pads, out_hw = _geometry(op, x, kernel_size, stride, padding)
    if not checks.is_trusted():
        checks.flag(op, "count_include_pad", count_include_pad)
    x_pad = _windows.pad_hw(xp.permute_dims(x, (0, 2, 3, 1)), pads, (1, 2))     # channels-last, as max pooling
    total = None
    for _, rows, cols in _windows.offsets(kernel, stride, (1, 1), out_hw):
        window = x_pad[:, rows, cols, :]
        total = window if total is None else total + window
    if count_include_pad or not any(pads):
        divisor = float(kernel[0] * kernel[1])
    else:
        ones = xp.ones((1, x.shape[2], x.shape[3], 1), dtype=x.dtype, device=array_api_compat.device(x))
        ones = _windows.pad_hw(ones, pads, (1, 2))
        divisor = sum(ones[:, rows, cols, :] for _, rows, cols in
                      _windows.offsets(kernel, stride, (1, 1), out_hw))
    y = total / divisor
    return xp.permute_dims(y, (0, 3, 1, 2)), PoolCache(tuple(x.shape), kernel, stride, pads, out_hw,
                                                       divisor=divisor, dtype=x.dtype)


def avg_pool2d_backward(dy, cache: PoolCache):
    """dx (N, C, H, W): each window cell receives δ / |window|."""
    xp = _dy_namespace("avg_pool2d_backward", dy, dy, cache)
    share = _windows.channels_last(dy, xp) / cache.divisor
    return _fold(xp, share, cache, lambda index, samples=None: _of(share, samples))


def pool_padding(owner: str, kernel: tuple, pads: tuple, given) -> None:
    """Pooling pads at most half the kernel (a window would otherwise see only padding)."""
    if 2 * pads[0] > kernel[0] or 2 * pads[1] > kernel[1]:
        raise ValueError(f"{owner}: padding must be at most half the kernel size {kernel}, got padding {given!r}")


def _dy_namespace(op, dy, like, cache):
    return checks.backward_namespace(op, dy, like, (cache.x_shape[0], cache.x_shape[1], *cache.out_hw), cache.dtype)


def _of(array, samples):
    """``array``'s slice of ``samples`` along its first axis (``None``: all of it, no indexing at all)."""
    return array if samples is None else array[samples, ...]


def _fold(xp, dy_nhwc, cache, contribution):
    """col2im: add each kernel offset's (N, OH, OW, C) contribution into a padded channels-last dx,
    crop the padding, and return it as an (N, C, H, W) view. ``contribution(k, samples)`` gives offset k's
    contribution for a slice of the samples (``None``: all of them).

    Channels-last is the memory order that conv outputs and their activations have too: elementwise
    products of arrays in one order avoid NumPy's slow mixed-order iteration. Libraries that are not
    launch-bound (CPUs) fold blocks of samples of about FOLD_BLOCK_BYTES per contribution, so that the
    temporaries stay in the CPU's caches: the pass is memory-bound, and whole-batch temporaries ran it at
    DRAM speed (max pooling 3x3 s2, 32 x 64 x 56 x 56: 12.5 against 18.7 ms). There, overlapping windows
    with a stride above 1 are summed per stride phase (_phase_fold): a strided add per offset ran at about
    1 ms per 1.6 M values, five times a contiguous one. Launch-bound libraries fold the whole batch with
    one add per offset.
    """
    n, c, h, w = cache.x_shape
    top, bottom, left, right = cache.pads
    shape = (n, h + top + bottom, w + left + right, c)
    device = array_api_compat.device(dy_nhwc)
    disjoint = cache.stride[0] >= cache.kernel[0] and cache.stride[1] >= cache.kernel[1]
    if launch_bound(dy_nhwc):                                   # (GPUs: fewer launches)
        blocks, phased = [None], False
    else:
        per_sample = cache.out_hw[0] * cache.out_hw[1] * c * (xp.finfo(dy_nhwc.dtype).bits // 8)
        size = max(1, FOLD_BLOCK_BYTES // per_sample)
        blocks = [slice(first, min(first + size, n)) for first in range(0, n, size)]
        phased = not disjoint and cache.stride != (1, 1)
    dx = (xp.empty if phased else xp.zeros)(shape, dtype=dy_nhwc.dtype, device=device)
    for samples in blocks:
        if phased:
            dx = _phase_fold(xp, dx, samples, device, cache, contribution)
            continue
        for k, rows, cols in _windows.offsets(cache.kernel, cache.stride, (1, 1), cache.out_hw):
            index = (slice(None) if samples is None else samples, rows, cols, slice(None))
            if disjoint:    # windows do not overlap: each cell is written once, no need to read it
                dx = xpx.at(dx)[index].set(contribution(k, samples))
            else:
                dx = _windows.accumulate(dx, index, contribution(k, samples))
    return xp.permute_dims(_windows.crop_hw(dx, cache.pads, (1, 2)), (0, 3, 1, 2))


def _phase_fold(xp, dx, samples, device, cache, contribution):
    """Write the samples' block of the padded dx (N, Hp, Wp, C) from the contributions, one stride phase at
    a time: the cells of row phase p and column phase q (rows p, p + s_h, ...) are read by the offsets
    (a, b) with a ≡ p (mod s_h) and b ≡ q (mod s_w), offset (a, b) of output (i, j) landing on phase cell
    (i + a // s_h, j + b // s_w).

    The offsets of one column shift b // s_w are summed in a contiguous (samples, PH, OW, C) array of their
    own: per sample, a row shift a // s_h moves a contribution by whole rows, so it is added into one
    contiguous run (NumPy adds into such a run 3-4x as fast as into a (rows, columns) slice). The sums are
    then written into the phase's strided slice of dx, the first by a copy, a second column shift's by a
    strided add; the phases cover dx, so it is never zeroed as a whole."""
    _, hp, wp, c = dx.shape
    (kh, kw), (sh, sw), (oh, ow) = cache.kernel, cache.stride, cache.out_hw
    m, run = samples.stop - samples.start, oh * ow * c
    for p in range(sh):
        ph = len(range(p, hp, sh))
        for q in range(sw):
            rows, columns = slice(p, None, sh), slice(q, None, sw)
            if len(range(q, wp, sw)) > ow:       # columns past the first sum's: zeroed before the others add
                dx = xpx.at(dx)[samples, rows, slice(q + ow * sw, None, sw), :].set(0.0)
            shifts = range(len(range(q, kw, sw)))          # the column shifts b // s_w of this phase
            if not shifts:                                   # no window reaches these columns
                dx = xpx.at(dx)[samples, rows, columns, :].set(0.0)
            for j in shifts:
                total = xp.zeros((m, ph * ow * c), dtype=dx.dtype, device=device)
                for a in range(p, kh, sh):
                    start = a // sh * ow * c
                    part = xp.reshape(contribution(a * kw + q + j * sw, samples), (m, run))
                    total = _windows.accumulate(total, (slice(None), slice(start, start + run)), part)
                total = xp.reshape(total, (m, ph, ow, c))
                place = (samples, rows, slice(q + j * sw, q + (j + ow - 1) * sw + 1, sw), slice(None))
                dx = xpx.at(dx)[place].set(total) if j == 0 else _windows.accumulate(dx, place, total)
    return dx
