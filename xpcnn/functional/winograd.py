"""Winograd convolution F(m x m, 3 x 3) (Lavin & Gray, 2016) for 3x3 stride-1 convolutions, channels-last.

An m x m output tile of a 3x3 correlation is computed from its (m+2) x (m+2) input tile d as

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

with small constant matrices Bᵀ, G, Aᵀ: (m+2)² multiplications instead of 9 m² (F(2x2, 3x3): 16
instead of 36). Over channels the elementwise product becomes, at each of the (m+2)² tile positions k,
one matrix product, all of them batched:  M[k] = V[k] @ U[k],  (tiles, C_in) @ (C_in, C_out).

Backward, with δ = dL/dy (cut into m x m tiles, zero past the output's edge):

    dU[k] = V[k]ᵀ @ Δ[k],  Δ = A δ Aᵀ;   dW = Gᵀ dU G
    δ_prev = pad(δ) ∗ rot180(W)  (itself a 3x3 stride-1 correlation, computed the same way)

The transforms are sums and differences of strided slices (one slice per tile position, never a loop
over pixels). conv.conv2d_forward takes this path where :func:`tile_for` says so (``config.winograd``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat

from .. import checks, config, cores
from ..backend import made_once
from ._launch import launch_bound
from . import _windows

# (Bᵀ, G, Aᵀ) for output tiles of m x m: Lavin & Gray's F(2x2, 3x3) and F(4x4, 3x3).
TRANSFORMS = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
         [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}

#: The tile that config.winograd="on" uses wherever the form applies (the more accurate one).
TILE = 2


def tile_for(x, kernel, stride, dilation, groups, pads, channels, out_hw) -> int:
    """The output tile m of the Winograd form for this convolution, or 0 for the im2col form.

    Only 3x3, stride-1, dilation-1, one-group convolutions with padding at most 2 qualify. ``"auto"``
    applies the rule measured on a CPU (docs/performance.md, "Winograd convolution"), on libraries that
    are not launch-bound (GPUs keep their one-product forms), for float32 only (float64, the checking
    dtype, keeps im2col, which rounds least), with one BLAS thread (``cores.threads_in_force``; with more,
    im2col's product is threaded and measured faster): F(4x4) from 32 channels in and out on images of 16x16
    and more, F(2x2) from 128 channels on smaller ones, else im2col.
    """
    mode = config.get().winograd
    if mode == "off" or kernel != (3, 3) or stride != (1, 1) or dilation != (1, 1) or groups != 1 or max(pads) > 2:
        return 0
    if mode == "on":
        return TILE
    if launch_bound(x) or x.dtype != array_api_compat.array_namespace(x).float32:
        return 0
    # the transforms run on one core while im2col's one product uses every BLAS thread: with two, the VGG-small
    # step ran 30% slower through Winograd (docs/performance.md), with one the rule below was measured
    if cores.threads_in_force() > 1:
        return 0
    fewest, smallest = min(channels), min(out_hw)
    if fewest >= 32 and smallest >= 16:
        return 4
    return 2 if fewest >= 128 else 0


@dataclass
class WinogradCache:
    """What conv2d_backward needs from a Winograd forward pass."""

    v: Any               # per batch block, (a², tiles, C_in) transformed input tiles; None in evaluation
                         # (rebuilt from x_nhwc)
    x_nhwc: Any          # the input, channels-last, when v is not kept
    weight: Any          # (C_out, C_in, 3, 3), the forward pass's weight (a reference)
    x_shape: tuple
    has_bias: bool
    pads: tuple          # (top, bottom, left, right)
    out_hw: tuple
    tile: int            # m
    blocks: list         # the batch slices the forward pass took; v holds one array per block


def conv2d_forward(xp, x, weight, bias, pads, out_hw, tile, training=True):
    """y = x ⋆ W + b for a 3x3 stride-1 convolution. x (N, C_in, H, W), weight (C_out, C_in, 3, 3),
    bias (C_out,) or None; returns y (N, C_out, OH, OW) (an NCHW view of channels-last memory) and the cache.

    The batch is taken in blocks whose tiles fill about ``config.conv_block_bytes`` (on CPUs; one block on
    launch-bound libraries): the transforms' temporaries then stay in cache and in reused heap memory."""
    x_nhwc = _windows.channels_last(x, xp)
    n, (oh, ow), c_out = x.shape[0], out_hw, weight.shape[0]
    u = _weight_transform(xp, weight, tile)
    blocks = _blocks(xp, x, out_hw, tile, max(x.shape[1], c_out))
    ys, vs = [], []
    for block in blocks:
        y, v = _correlate(xp, x_nhwc[block, ...], pads, u, tile, out_hw)
        ys.append(y)
        vs.append(v)
    cropped = oh % tile or ow % tile
    y = xp.concat(ys, axis=0) if len(ys) > 1 or cropped else ys[0]       # compact, this call's own memory
    if bias is not None:
        rows = _windows.wide_rows(y, xp)
        rows += _windows.per_channel(bias, ow, xp)                          # in place where the library allows
        y = xp.reshape(rows, (n, oh, ow, c_out))
    cache = WinogradCache(vs if training else None, None if training else x_nhwc, weight, tuple(x.shape),
                          bias is not None, pads, out_hw, tile, blocks)
    return xp.permute_dims(y, (0, 3, 1, 2)), cache


def conv2d_backward(dy, cache: WinogradCache, *, need_dx: bool = True, need_params: bool = True):
    """(dx, dweight, dbias) of a Winograd forward pass; dy (N, C_out, OH, OW). See the module docstring."""
    n, c_in, h, w = cache.x_shape
    c_out = cache.weight.shape[0]
    m, (oh, ow) = cache.tile, cache.out_hw
    xp = checks.backward_namespace("conv2d_backward", dy, cache.weight, (n, c_out, oh, ow))
    dy_nhwc = _windows.channels_last(dy, xp)
    db = _windows.channel_sum(_windows.wide_rows(dy_nhwc, xp), ow, xp) if cache.has_bias and need_params else None
    top, bottom, left, right = cache.pads
    if need_dx:
        flipped = xp.flip(xp.permute_dims(cache.weight, (1, 0, 2, 3)), axis=(2, 3))       # rot180, channels swapped
        u_flipped = _weight_transform(xp, flipped, m)
    du, dxs = None, []
    for index, block in enumerate(cache.blocks):
        if need_params:
            v = cache.v[index] if cache.v is not None else _correlate(xp, cache.x_nhwc[block, ...], cache.pads,
                                                                      None, m, cache.out_hw)[1]
            part = xp.matmul(xp.permute_dims(v, (0, 2, 1)), _tile_gradients(xp, dy_nhwc[block, ...], m))
            du = part if du is None else du + part                                          # (a², C_in, C_out)
        if need_dx:
            dxs.append(_correlate(xp, dy_nhwc[block, ...], (2 - top, 2 - bottom, 2 - left, 2 - right),
                                  u_flipped, m, (h, w))[0])
    dw = dx = None
    if need_params:
        a = m + 2
        du = xp.permute_dims(xp.reshape(du, (a, a, c_in, c_out)), (3, 2, 0, 1))             # (C_out, C_in, a, a)
        g = _constant(xp, TRANSFORMS[m][1], dy)
        dw = xp.matmul(xp.matmul(xp.permute_dims(g, (1, 0)), du), g)                       # Gᵀ dU G
    if need_dx:
        dx = xp.concat(dxs, axis=0) if len(dxs) > 1 or h % m or w % m else dxs[0]
        dx = xp.permute_dims(dx, (0, 3, 1, 2))
    return dx, dw, db


def _blocks(xp, x, out_hw, m, channels) -> list[slice]:
    """Batch slices whose tiles, (m+2)² x tiles x channels values, fill about config.conv_block_bytes."""
    n = x.shape[0]
    if launch_bound(x):
        return [slice(0, n)]
    tiles = -(-out_hw[0] // m) * -(-out_hw[1] // m)
    per_sample = (m + 2) ** 2 * tiles * channels * (xp.finfo(x.dtype).bits // 8)
    chunk = max(1, config.get().conv_block_bytes // per_sample)
    return [slice(start, min(start + chunk, n)) for start in range(0, n, chunk)]


def _constant(xp, rows, like):
    """The transform matrix ``rows`` on ``like``'s library and device, made once per place and dtype."""
    key = ("winograd", tuple(map(tuple, rows)), str(like.dtype))
    return made_once(key, like, lambda device: xp.asarray(rows, dtype=like.dtype, device=device))


def _weight_transform(xp, weight, m):
    """U = G g Gᵀ for every (output, input) channel pair: weight (O, C, 3, 3) -> (a², C, O)."""
    g = _constant(xp, TRANSFORMS[m][1], weight)
    u = xp.matmul(xp.matmul(g, weight), xp.permute_dims(g, (1, 0)))                       # (O, C, a, a)
    a = m + 2
    return xp.reshape(xp.permute_dims(u, (2, 3, 1, 0)), (a * a, weight.shape[1], weight.shape[0]))


def _correlate(xp, x_nhwc, pads, u, m, out_hw):
    """The 3x3 stride-1 correlation of x (N, H, W, C) padded by ``pads`` with transformed weights u (a², C, O):
    returns y (N, OH, OW, O) (a cropped view when OH or OW is not a multiple of m) and V (a², tiles, C).
    With ``u`` None, only V."""
    n, _, _, c = x_nhwc.shape
    (oh, ow), a = out_hw, m + 2
    th, tw = -(-oh // m), -(-ow // m)
    top, bottom, left, right = pads
    x_pad = _windows.pad_hw(x_nhwc, (top, bottom + m * th - oh, left, right + m * tw - ow), (1, 2))
    b_t = TRANSFORMS[m][0]
    rows = _combine(b_t, [x_pad[:, i:i + m * (th - 1) + 1:m, ...] for i in range(a)])        # a x (N, th, W', C)
    parts = [part for row in rows for part in _combine(b_t, [row[:, :, j:j + m * (tw - 1) + 1:m, :] for j in range(a)])]
    v = xp.reshape(xp.stack(parts, axis=0), (a * a, n * th * tw, c))                          # Bᵀ d B
    if u is None:
        return None, v
    products = xp.matmul(v, u)                                                                 # (a², tiles, O)
    a_t, o = TRANSFORMS[m][2], u.shape[2]
    cells = [xp.reshape(products[k, ...], (n, th, tw, o)) for k in range(a * a)]
    by_column = [_combine(a_t, cells[j::a]) for j in range(a)]                               # Aᵀ M, column j
    out = [_combine(a_t, [by_column[j][i] for j in range(a)]) for i in range(m)]              # (Aᵀ M) A
    y = xp.reshape(xp.stack([xp.stack(row, axis=3) for row in out], axis=2), (n, m * th, m * tw, o))
    if (m * th, m * tw) != (oh, ow):
        y = y[:, :oh, :ow, :]
    return y, v


def _tile_gradients(xp, dy_nhwc, m):
    """Δ = A δ Aᵀ for every m x m tile of δ (N, OH, OW, O), zero past the edge: (a², tiles, O)."""
    n, oh, ow, o = dy_nhwc.shape
    th, tw = -(-oh // m), -(-ow // m)
    dy_pad = _windows.pad_hw(dy_nhwc, (0, m * th - oh, 0, m * tw - ow), (1, 2))
    a_matrix = [list(column) for column in zip(*TRANSFORMS[m][2])]                           # A = (Aᵀ)ᵀ, (a, m)
    rows = _combine(a_matrix, [dy_pad[:, i:i + m * (th - 1) + 1:m, ...] for i in range(m)])
    parts = [part for row in rows for part in _combine(a_matrix, [row[:, :, j:j + m * (tw - 1) + 1:m, :]
                                                                   for j in range(m)])]
    return xp.reshape(xp.stack(parts, axis=0), ((m + 2) ** 2, n * th * tw, o))


def _combine(matrix, parts):
    """[Σ_j matrix[i][j] · parts[j] for each row i], as adds and subtracts where the entry is ±1 (after the
    first, into the row's own new array, in place where the library allows)."""
    out = []
    for row in matrix:
        total, fresh = None, False
        for coefficient, part in zip(row, parts):
            if coefficient == 0:
                continue
            term = part if coefficient in (1, -1) else coefficient * part
            if total is None:
                total, fresh = (-term, True) if coefficient == -1 else (term, term is not part)
            elif not fresh:
                total, fresh = (total - term if coefficient == -1 else total + term), True
            elif coefficient == -1:
                total -= term
            else:
                total += term
        out.append(total)
    return out
