"""Stride-1 convolutions (forward pass and gradients) from row shifts of the flattened padded input: no columns.

Flatten the padded channels-last input x_pad (N, Hp, Wp, C) to rows P (N·Hp·Wp, C). For stride 1 and
dilation 1, the output at (n, i, j) reads P[q + off_k] for kernel offset k = (a, b), with q = n·Hp·Wp +
i·Wp + j and off_k = a·Wp + b. Place δ on the same grid (D: row q holds δ[n, i, j] for i < OH, j < OW,
zeros elsewhere); then, with L = N·Hp·Wp - off_max rows,

    dW_k     = P[off_k : off_k + L]ᵀ @ D[:L]          (C_in, C_out): one product per offset
    δ_prev  += shift_k(D[:L] @ W_kᵀ)                  contiguous rows off_k ... off_k + L of the padded grid

The forward pass is the same sum read the other way (y on the grid, then cropped to OH x OW):

    y[:L]    = Σ_k P[off_k : off_k + L] @ W_k           (C_in, C_out) per offset

Each shifted slice is a plain 2-D view, so no kH·kW-fold column matrix is built (im2col's forward
columns, too big to keep for the backward pass, are otherwise built a second time for dW). The grid has
(Hp·Wp)/(OH·OW) times the outputs (1.13x at 32x32, 1.27x at 16x16): the zero rows of D cost products.
Measured on a 2-core CPU (docs/performance.md) this is faster than rebuilding columns for few channels
and slower for many, so conv.py takes it below SHIFTED_BELOW input channels; the forward pass takes it
where the columns would be built in blocks, below the same number of channels.
"""
from __future__ import annotations

import array_api_compat
import array_api_extra as xpx

from . import _windows


def applies(stride, dilation, groups: int) -> bool:
    """Whether the shifted-rows forms apply: stride 1, dilation 1, one group (any padding, any kernel)."""
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



def forward(xp, x_pad, block: slice, kernel, out_hw, weight_matrix):
    """y (n, OH, OW, C_out) of the samples ``block`` of the padded channels-last input x_pad (N, Hp, Wp, C_in);
    ``weight_matrix`` is the (1, kH·kW·C_in, C_out) matrix in the columns' row order. The rows of a block that
    is not the batch's last are followed by the next sample's: its shifted slices run on into them (those grid
    cells are cropped away), so its products cover the block's whole grid; the last block's products stop
    off_max rows short and its grid is completed with zero rows."""
    n_all, hp, wp, c_in = x_pad.shape
    kh, kw = kernel
    rows = xp.reshape(x_pad, (n_all * hp * wp, c_in))
    n = block.stop - block.start
    start, reach = block.start * hp * wp, (kh - 1) * wp + (kw - 1)
    length = n * hp * wp - (reach if block.stop == n_all else 0)
    y = None
    for k, off in enumerate(a * wp + b for a in range(kh) for b in range(kw)):
        part = xp.matmul(rows[start + off:start + off + length, ...], weight_matrix[0, k * c_in:(k + 1) * c_in, :])
        if y is None:
            y = part
        else:
            y += part                          # this call's own array: in place where the library allows
    c_out = weight_matrix.shape[2]
    if length < n * hp * wp:
        tail = xp.zeros((n * hp * wp - length, c_out), dtype=y.dtype, device=array_api_compat.device(y))
        y = xp.concat([y, tail], axis=0)
    return xp.reshape(y, (n, hp, wp, c_out))[:, :out_hw[0], :out_hw[1], :]
