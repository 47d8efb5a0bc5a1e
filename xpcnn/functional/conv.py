"""2-D convolution (cross-correlation, as in every deep-learning library), NCHW.

Forward, for output channel o in group g:

    y[n, o, p, q] = b[o] + sum_{c, i, j} x_pad[n, g*Cg + c, p*s + i*d, q*s + j*d] * W[o, c, i, j]

Backward, with δ = dL/dy:

    dW = a ⋆ δ                   (valid cross-correlation of the input with δ)
    db[o] = sum_{n, p, q} δ[n, o, p, q]
    δ_prev = pad(δ) ∗ rot180(W)   (full convolution of δ with the flipped kernel)

Implementation: the input is viewed as NHWC and unrolled into columns by looping
over the kH*kW kernel offsets only (strided slices), so the whole batch becomes one
matrix product per group; δ_prev is the same product transposed, folded back by
adding kH*kW strided slices (col2im).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat

from . import _checks, _windows

_OP = "conv2d"


@dataclass
class Conv2dCache:
    """What conv2d_backward needs: the columns, the weight matrix and the geometry."""

    cols: Any            # (G, N*OH*OW, kH*kW*Cg)
    weight_matrix: Any   # (G, kH*kW*Cg, Cout/G)
    x_shape: tuple
    weight_shape: tuple
    has_bias: bool
    stride: tuple
    pads: tuple          # (top, bottom, left, right)
    dilation: tuple
    groups: int
    out_hw: tuple


def conv_padding(op: str, padding: Any, kernel, stride, dilation) -> tuple[int, int, int, int]:
    """Normalise ``padding`` (int, pair, "valid", "same") to (top, bottom, left, right)."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode == "same":
            if stride != (1, 1):
                raise ValueError(f"{op}: padding='same' needs stride 1, got stride {stride}")
            total_h, total_w = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
            return (total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2)
        raise ValueError(f"{op}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    ph, pw = _checks.pair(op, "padding", padding, 0)
    return (ph, ph, pw, pw)


def conv2d_forward(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1):
    """Convolve ``x`` with ``weight``.

    Shapes: x (N, C_in, H, W); weight (C_out, C_in/groups, kH, kW); bias (C_out,) or None.
    Returns ``(y, cache)`` with y (N, C_out, OH, OW),
    OH = floor((H + pad_top + pad_bottom - dilation*(kH-1) - 1) / stride) + 1.
    """
    xp = _checks.namespace(_OP, x, weight, bias)
    _checks.check_float(_OP, "x", x, xp)
    _checks.check_ndim(_OP, "x", x, 4, "(N, C, H, W)")
    _checks.check_float(_OP, "weight", weight, xp)
    _checks.check_ndim(_OP, "weight", weight, 4, "(C_out, C_in/groups, kH, kW)")
    _checks.check_same_dtype(_OP, x, "weight", weight)
    _checks.check_same_device(_OP, x, "weight", weight)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{_OP}: groups must be a positive int, got {groups!r}")
    n, c_in, _, _ = x.shape
    c_out, c_group, kh, kw = weight.shape
    if c_in % groups or c_out % groups:
        raise ValueError(f"{_OP}: groups={groups} must divide in_channels={c_in} and out_channels={c_out}")
    if c_group * groups != c_in:
        raise ValueError(
            f"{_OP}: expected input with {c_group * groups} channels (weight {tuple(weight.shape)}, "
            f"groups={groups}), got shape {tuple(x.shape)}"
        )
    if bias is not None:
        _checks.check_same_dtype(_OP, x, "bias", bias)
        _checks.check_same_device(_OP, x, "bias", bias)
        if tuple(bias.shape) != (c_out,):
            raise ValueError(f"{_OP}: bias must have shape ({c_out},), got {tuple(bias.shape)}")
    if kh < 1 or kw < 1:
        raise ValueError(f"{_OP}: kernel size must be >= 1, got {kh}x{kw}")
    stride = _checks.pair(_OP, "stride", stride, 1)
    dilation = _checks.pair(_OP, "dilation", dilation, 1)
    pads = conv_padding(_OP, padding, (kh, kw), stride, dilation)
    out_hw = _checks.check_window(_OP, x.shape, (kh, kw), stride, pads, dilation)

    x_nhwc = _windows.pad_hw(xp.permute_dims(x, (0, 2, 3, 1)), pads, (1, 2))
    cols = _im2col(xp, x_nhwc, (kh, kw), stride, dilation, out_hw, groups)
    weight_matrix = _weight_matrix(xp, weight, groups)
    y = xp.matmul(cols, weight_matrix)                                  # (G, M, Cout/G)
    y = xp.reshape(xp.permute_dims(y, (1, 0, 2)), (n, out_hw[0], out_hw[1], c_out))
    if bias is not None:
        y = y + bias
    y = xp.permute_dims(y, (0, 3, 1, 2))
    cache = Conv2dCache(cols, weight_matrix, tuple(x.shape), tuple(weight.shape), bias is not None,
                        stride, pads, dilation, groups, out_hw)
    return y, cache


def conv2d_backward(dy, cache: Conv2dCache, *, need_dx: bool = True):
    """Gradients of a convolution.

    dy (N, C_out, OH, OW) -> ``(dx, dweight, dbias)`` with the shapes of x, weight and bias
    (dbias is None without bias; dx is None when ``need_dx`` is False, e.g. for a first layer).
    dW = a ⋆ δ (columns^T @ δ), δ_prev = pad(δ) ∗ rot180(W) (δ @ W^T folded back by col2im).
    """
    xp = _checks.namespace("conv2d_backward", dy, cache.cols)
    n, c_in, h, w = cache.x_shape
    c_out, c_group, kh, kw = cache.weight_shape
    groups, (oh, ow) = cache.groups, cache.out_hw
    if tuple(dy.shape) != (n, c_out, oh, ow):
        raise ValueError(f"conv2d_backward: dy must have shape {(n, c_out, oh, ow)}, got {tuple(dy.shape)}")
    m = n * oh * ow
    dy_nhwc = xp.permute_dims(dy, (0, 2, 3, 1))
    dy_groups = xp.permute_dims(xp.reshape(dy_nhwc, (m, groups, c_out // groups)), (1, 0, 2))  # (G, M, Cout/G)

    dw = xp.matmul(xp.permute_dims(cache.cols, (0, 2, 1)), dy_groups)   # (G, K*Cg, Cout/G)
    dw = xp.reshape(dw, (groups, kh, kw, c_group, c_out // groups))
    dw = xp.reshape(xp.permute_dims(dw, (0, 4, 3, 1, 2)), (c_out, c_group, kh, kw))
    db = xp.sum(xp.reshape(dy_nhwc, (m, c_out)), axis=0) if cache.has_bias else None
    if not need_dx:
        return None, dw, db

    dcols = xp.matmul(dy_groups, xp.permute_dims(cache.weight_matrix, (0, 2, 1)))  # (G, M, K*Cg)
    dcols = xp.reshape(dcols, (groups, n, oh, ow, kh * kw, c_group))
    dcols = xp.reshape(xp.permute_dims(dcols, (1, 2, 3, 4, 0, 5)), (n, oh, ow, kh * kw, c_in))
    top, bottom, left, right = cache.pads
    dx_pad = xp.zeros((n, h + top + bottom, w + left + right, c_in), dtype=dy.dtype,
                      device=array_api_compat.device(dy))
    for k, rows, cols in _windows.offsets((kh, kw), cache.stride, cache.dilation, (oh, ow)):
        dx_pad = _windows.accumulate(dx_pad, (slice(None), rows, cols, slice(None)), dcols[:, :, :, k, :])
    dx = xp.permute_dims(_windows.crop_hw(dx_pad, cache.pads, (1, 2)), (0, 3, 1, 2))
    return dx, dw, db


def _im2col(xp, x_nhwc, kernel, stride, dilation, out_hw, groups):
    """Columns (G, N*OH*OW, kH*kW*Cg) of a padded NHWC input, one slice per kernel offset."""
    n, _, _, c = x_nhwc.shape
    patches = [x_nhwc[:, rows, cols, :] for _, rows, cols in _windows.offsets(kernel, stride, dilation, out_hw)]
    stacked = xp.stack(patches, axis=3)                                  # (N, OH, OW, K, C)
    m, k = n * out_hw[0] * out_hw[1], kernel[0] * kernel[1]
    if groups == 1:
        return xp.reshape(stacked, (1, m, k * c))
    grouped = xp.reshape(stacked, (m, k, groups, c // groups))
    return xp.reshape(xp.permute_dims(grouped, (2, 0, 1, 3)), (groups, m, k * (c // groups)))


def _weight_matrix(xp, weight, groups):
    """Weight (Cout, Cg, kH, kW) as (G, kH*kW*Cg, Cout/G), matching the column layout."""
    c_out, c_group, kh, kw = weight.shape
    w = xp.reshape(weight, (groups, c_out // groups, c_group, kh, kw))
    w = xp.permute_dims(w, (0, 3, 4, 2, 1))
    return xp.reshape(w, (groups, kh * kw * c_group, c_out // groups))
