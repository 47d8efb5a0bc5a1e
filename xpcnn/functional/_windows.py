"""Sliding-window helpers: strided basic slices over kernel offsets (never over pixels).

For kernel offset (i, j) the window element of every output pixel is the strided slice
``x[..., i*d : i*d + s*(OH-1) + 1 : s, j*d : ...]``; its stop stays inside the array,
as array_api_strict demands.
"""
from __future__ import annotations

from typing import Any, Iterator

import array_api_extra as xpx

from ..backend import made_once


def offsets(kernel, stride, dilation, out_hw) -> Iterator[tuple[int, slice, slice]]:
    """Yield ``(k, rows, cols)`` for each kernel offset, k counting row-major."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            yield i * kw + j, slice(r0, r0 + sh * (oh - 1) + 1, sh), slice(c0, c0 + sw * (ow - 1) + 1, sw)


def pad_hw(x: Any, pads, axes: tuple[int, int], value: float = 0.0) -> Any:
    """Constant-pad the two spatial ``axes`` of ``x`` by ``pads = (top, bottom, left, right)``."""
    if not any(pads):
        return x
    width = [(0, 0)] * x.ndim
    width[axes[0]] = (pads[0], pads[1])
    width[axes[1]] = (pads[2], pads[3])
    return xpx.pad(x, tuple(width), constant_values=value)


def crop_hw(x: Any, pads, axes: tuple[int, int]) -> Any:
    """Inverse of :func:`pad_hw`: drop the padded border again."""
    if not any(pads):
        return x
    index = [slice(None)] * x.ndim
    index[axes[0]] = slice(pads[0], x.shape[axes[0]] - pads[1])
    index[axes[1]] = slice(pads[2], x.shape[axes[1]] - pads[3])
    return x[tuple(index)]


def accumulate(target: Any, index: tuple, values: Any) -> Any:
    """``target[index] += values`` on every backend (in place where arrays are writable)."""
    return xpx.at(target)[index].add(values)


def channels_last(x: Any, xp: Any) -> Any:
    """An (N, C, H, W) array as (N, H, W, C) with contiguous memory: a view when x already lies in
    that order (as conv and pooling outputs do), one transposing copy otherwise.

    Elementwise arithmetic between arrays laid out in two different orders is several times slower
    in NumPy than either a transposing copy or the same arithmetic in one order.
    """
    n, c, h, w = x.shape
    flat = xp.reshape(xp.permute_dims(x, (0, 2, 3, 1)), (n * h * w * c,))
    return xp.reshape(flat, (n, h, w, c))


def wide_rows(x_nhwc: Any, xp: Any) -> Any:
    """(N, H, W, C) contiguous -> (N*H, W*C): rows long enough for NumPy's inner loops.

    A per-channel vector broadcast along rows of only C values, or a reduction over axis 0 of
    an (N*H*W, C) matrix, runs NumPy's inner loop on C elements at a time, 2-5x slower than
    the same work on rows of W*C elements (see per_channel and channel_sum).
    """
    n, h, w, c = x_nhwc.shape
    return xp.reshape(x_nhwc, (n * h, w * c))


def per_channel(vector: Any, width: int, xp: Any) -> Any:
    """A (C,) vector repeated ``width`` times, to broadcast along :func:`wide_rows` rows."""
    return xp.tile(vector, (width,))


def channel_sum(rows: Any, width: int, xp: Any) -> Any:
    """Σ over all but the channel axis of :func:`wide_rows` rows (N*H, W*C) -> (C,)."""
    partial = xp.sum(rows, axis=0)
    return xp.sum(xp.reshape(partial, (width, partial.shape[0] // width)), axis=0)


def column_sums(xp, matrix: Any, scale: float = 1.0) -> Any:
    """``scale`` times the sum over the rows of an (M, C) matrix, as one product with a constant row:
    the few-launch forms' per-channel sums. A GPU library reduces a product in parallel, while its sum over
    the rows of a matrix with few columns (C <= 32 contiguous) runs on one thread block (CuPy's rule)."""
    m, c = matrix.shape
    row = made_once(("row", m, scale, str(matrix.dtype)), matrix,
                    lambda device: xp.full((1, m), scale, dtype=matrix.dtype, device=device))
    return xp.reshape(xp.matmul(row, matrix), (c,))
