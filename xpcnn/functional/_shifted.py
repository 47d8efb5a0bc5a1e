"""Stride-1 convolution gradients from row shifts of the flattened padded input: no columns.

Flatten the padded channels-last input x_pad (N, Hp, Wp, C) to rows P (N·Hp·Wp, C). For stride 1 and
dilation 1, the output at (n, i, j) reads P[q + off_k] for kernel offset k = (a, b), with q = n·Hp·Wp +
i·Wp + j and off_k = a·Wp + b. Place δ on the same grid (D: row q holds δ[n, i, j] for i < OH, j < OW,
zeros elsewhere); then, with L = N·Hp·Wp - off_max rows,

    dW_k     = P[off_k : off_k + L]ᵀ @ D[:L]          (C_in, C_out): one product per offset
    δ_prev  += shift_k(D[:L] @ W_kᵀ)                  contiguous rows off_k ... off_k + L of the padded grid

Each shifted slice is a plain 2-D view, so no kH·kW-fold column matrix is built (im2col's forward
columns, too big to keep for the backward pass, are otherwise built a second time for dW). The grid has
(Hp·Wp)/(OH·OW) times the outputs (1.13x at 32x32, 1.27x at 16x16): the zero rows of D cost products.
Measured on a 2-core CPU (docs/performance.md) this is faster than rebuilding columns for few channels
and slower for many, so conv.py takes it below SHIFTED_BELOW input channels.
"""
from __future__ import annotations

import array_api_compat
import array_api_extra as xpx

from . import _windows


def applies(stride, dilation, groups: int) -> bool:
    """Whether the shifted-rows gradients apply: stride 1, dilation 1, one group (any padding, any kernel)."""
    return tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and groups == 1


def gradients(xp, dy_nhwc, x_pad, kernel, weight_t, need_dw: bool):
    """``(dW, dx_pad)`` for a batch block: dW (1, kH·kW·C_in, C_out) in the columns' row order (offset-major,
    then channel) or None without ``need_dw``; the padded input gradient (n, Hp, Wp, C_in) or None when
    ``weight_t`` (the (1, C_out, kH·kW·C_in) transposed weight matrix) is None."""
    n, hp, wp, c_in = x_pad.shape
    _, oh, ow, c_out = dy_nhwc.shape
    kh, kw = kernel
    total = n * hp * wp
    length = total - ((kh - 1) * wp + (kw - 1))
    device = array_api_compat.device(dy_nhwc)
    grid = xp.zeros((n, hp, wp, c_out), dtype=dy_nhwc.dtype, device=device)
    grid = xpx.at(grid)[:, :oh, :ow, :].set(dy_nhwc)
    delta = xp.reshape(grid, (total, c_out))[:length, ...]
    rows = xp.reshape(x_pad, (total, c_in))
    offsets = [a * wp + b for a in range(kh) for b in range(kw)]
    dw = None
    if need_dw:
        parts = [xp.matmul(xp.permute_dims(rows[off:off + length, ...], (1, 0)), delta) for off in offsets]
        dw = xp.concat(parts, axis=0)[None, ...]
    if weight_t is None:
        return dw, None
    dx = xp.zeros((total, c_in), dtype=dy_nhwc.dtype, device=device)
    for k, off in enumerate(offsets):
        part = xp.matmul(delta, weight_t[0, :, k * c_in:(k + 1) * c_in])
        dx = _windows.accumulate(dx, (slice(off, off + length), slice(None)), part)
    return dw, xp.reshape(dx, (n, hp, wp, c_in))
