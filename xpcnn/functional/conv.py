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
adding kH*kW strided slices (col2im). Inputs with few channels (an image in the first
layer) are unrolled channel-major instead (CHANNEL_MAJOR_BELOW), as are grouped ones, per group
(GROUPED_CHANNEL_MAJOR_BELOW); depthwise convolutions (one input channel per group) on CPU libraries
take a direct elementwise form, one product per kernel offset (_depthwise_block).
On CPU libraries, stride-1 one-group convolutions with few channels whose columns would not be kept take
their forward pass and gradients from shifted rows of the padded input instead (_shifted, SHIFTED_BELOW),
and grouped stride-1 convolutions their δ_prev as a grouped convolution of δ (_dx_by_correlation).
The output and δ_prev are NCHW views of channels-last memory, the order every layer
hands on (see _windows.channels_last).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat

from .. import checks, config
from . import _gather, _shifted, _windows, winograd
from ._launch import launch_bound

_OP = "conv2d"


# On CPU devices, a batch whose columns exceed conv_whole_bytes is processed in blocks of about
# conv_block_bytes of columns, rebuilt in the backward pass instead of kept. glibc serves freed blocks
# below its 32 MiB mmap ceiling from reused heap memory, but maps every larger array afresh, so its
# pages fault in (and are zeroed) on every step. Measured on a 2-core machine, VGG-style step:
# 132 ms with whole-batch columns, 99 ms with 4 MiB blocks; building columns of up to 32 MiB whole
# took 2-8% off the LeNet and VGG steps against blocking those too (a forward pass alone, in evaluation,
# is faster blocked: 6.6 against 7.8 ms for 32->32 channels at 28x28, batch 32). GPUs, where each block
# costs kernel launches rather than page faults, take one block (as does every few-launch run, see
# _launch.launch_bound, so that CPU-side launch counts are the GPU's).


def _chunk_size(x, per_sample: int, n: int, keep_columns: bool = True) -> int:
    """Samples per block of a batch of ``n``: bounded by the workspace limit, and on CPUs by the block
    size unless the whole batch's columns are small enough to be built at once and kept for a
    backward pass (``keep_columns``)."""
    settings = config.get()
    workspace = settings.conv_workspace_bytes
    if launch_bound(x):                 # GPUs (and the few-launch forms): one block up to the workspace
        return max(1, workspace // max(per_sample, 1))
    if keep_columns and per_sample * n <= min(workspace, settings.conv_whole_bytes):
        return n
    return max(1, min(workspace, settings.conv_block_bytes) // max(per_sample, 1))


def _blocks(n: int, chunk: int) -> list[slice]:
    """Batch slices of ``chunk`` samples; the last one stops at ``n`` (the Array API leaves stops past
    the end unspecified, and array_api_strict refuses them)."""
    return [slice(start, min(start + chunk, n)) for start in range(0, n, chunk)]


@dataclass
class Conv2dCache:
    """What conv2d_backward needs: the columns (or, when chunked, the padded input), the weight and the geometry."""

    cols: Any            # (G, N*OH*OW, kH*kW*Cg), or (G, kH*kW*Cg, N*OH*OW) when channel_major; None when chunked
    x_pad: Any           # padded input when chunked (columns are rebuilt per chunk), else None; (G, Cg, N, H, W)
                         # when channel_major
    chunk: int           # samples per chunk
    weight: Any          # (C_out, C_in/groups, kH, kW), the forward pass's weight (a reference, not a copy)
    x_shape: tuple
    has_bias: bool
    stride: tuple
    pads: tuple          # (top, bottom, left, right)
    dilation: tuple
    groups: int
    out_hw: tuple
    channel_major: bool = False
    gather: Any = None   # few-launch forms: the _gather.Geometry the columns are gathered by (x_pad then holds rows)
    weight_matrix: Any = None  # few-launch forms: the forward's (G, kH*kW*Cg, Cout/G) weight matrix
    depthwise: bool = False    # the direct form (see _depthwise_block): x_pad holds the padded, repeated input


#: Inputs with fewer channels than this (and one group) are unrolled channel-major: a column block per
#: (kernel offset, channel) holding every output pixel, copied from the NCHW input in runs of OW values.
#: The channels-last layout copies runs of only C values, 6x slower for a 3-channel image (measured).
CHANNEL_MAJOR_BELOW = 8

#: Grouped convolutions with fewer channels per group than this are unrolled channel-major too, per group:
#: columns (G, kH*kW*Cg, N*OH*OW) copied in runs of OW values from the NCHW input, where the channels-last
#: layout copies runs of Cg values and then permutes the groups apart (see docs/performance.md).
GROUPED_CHANNEL_MAJOR_BELOW = 10**6


def conv_padding(op: str, padding: Any, kernel, stride, dilation) -> tuple[int, int, int, int]:
    """Normalise ``padding`` (int, pair, (top, bottom, left, right), "valid", "same") to (top, bottom, left, right)."""
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
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        top, bottom = checks.pair(op, "padding (top, bottom)", tuple(padding[:2]), 0)
        left, right = checks.pair(op, "padding (left, right)", tuple(padding[2:]), 0)
        return (top, bottom, left, right)
    ph, pw = checks.pair(op, "padding", padding, 0)
    return (ph, ph, pw, pw)


def conv2d_forward(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1, training=True):
    """Convolve ``x`` with ``weight``.

    Shapes: x (N, C_in, H, W); weight (C_out, C_in/groups, kH, kW); bias (C_out,) or None.
    Returns ``(y, cache)`` with y (N, C_out, OH, OW),
    OH = floor((H + pad_top + pad_bottom - dilation*(kH-1) - 1) / stride) + 1.

    ``training=False`` says no backward pass is expected: on CPUs the columns are then always built
    in cache-sized blocks and not kept (a backward pass still works, rebuilding them).
    """
    xp = array_api_compat.array_namespace(x) if checks.is_trusted() else _validate(x, weight, bias, groups, training)
    n, c_in, _, _ = x.shape
    c_out, c_group, kh, kw = weight.shape
    stride = checks.pair(_OP, "stride", stride, 1)
    dilation = checks.pair(_OP, "dilation", dilation, 1)
    pads = conv_padding(_OP, padding, (kh, kw), stride, dilation)
    out_hw = (checks.window_shape(x.shape, (kh, kw), stride, pads, dilation) if checks.is_trusted()
              else checks.check_window(_OP, x.shape, (kh, kw), stride, pads, dilation))
    tile = winograd.tile_for(x, (kh, kw), stride, dilation, groups, pads, (c_in, c_out), out_hw)
    if tile:                                    # 3x3 stride 1: fewer multiplications (see winograd.py)
        return winograd.conv2d_forward(xp, x, weight, bias, pads, out_hw, tile, training=bool(training))

    few = launch_bound(x)
    if c_group == 1 and groups > 1 and not few:     # depthwise: elementwise, not G tiny products
        return _depthwise_forward(xp, x, weight, bias, stride, pads, dilation, out_hw, training)
    channel_major = not few and (c_in < CHANNEL_MAJOR_BELOW if groups == 1 else c_group < GROUPED_CHANNEL_MAJOR_BELOW)
    gather = None
    if few:      # rows (N, H*W, C) the windows are gathered from: no padded copy
        x_padded = _gather.rows_of(xp, _windows.channels_last(x, xp))
        gather = _gather.Geometry((kh, kw), stride, dilation, pads, tuple(x.shape[2:]), out_hw)
    elif channel_major:
        x_padded = _group_major(xp, x, pads, groups)          # see CHANNEL_MAJOR_BELOW
    else:
        x_padded = _windows.pad_hw(xp.permute_dims(x, (0, 2, 3, 1)), pads, (1, 2))
    weight_matrix = _weight_matrix(xp, weight, groups)
    geometry = ((kh, kw), stride, dilation, out_hw, groups, channel_major)
    itemsize = xp.finfo(x.dtype).bits // 8
    per_sample = out_hw[0] * out_hw[1] * kh * kw * c_group * groups * itemsize
    chunk = _chunk_size(x, per_sample, n, keep_columns=bool(training))
    if chunk >= n:
        cols = _columns(xp, x_padded, geometry, gather)
        y = _columns_times_weight(xp, cols, weight_matrix, n, out_hw, c_out, channel_major)
        x_keep = None
    elif (SHIFTED_FORWARD and not (few or channel_major) and c_in < SHIFTED_BELOW
          and _shifted.applies(stride, dilation, groups)):
        # columns built in blocks (too big to keep, or evaluation): shifted rows of the padded input instead
        # (the padded copy is channels-last memory; unpadded, x itself is, as a view where it lies so)
        cols, x_keep = None, x_padded if any(pads) else _windows.channels_last(x, xp)
        rows_chunk = _shifted_samples(xp, tuple(x.shape), pads, c_out, x.dtype)
        y = xp.concat([_shifted.forward(xp, x_keep, block, (kh, kw), out_hw, weight_matrix)
                       for block in _blocks(n, rows_chunk)], axis=0)
    else:
        cols, x_keep = None, x_padded
        y = xp.concat([_columns_times_weight(xp, _columns(xp, _batch(x_padded, block, channel_major), geometry, gather),
                                             weight_matrix, block.stop - block.start, out_hw, c_out, channel_major)
                       for block in _blocks(n, chunk)], axis=0)
    y = _add_bias(xp, y, bias, few)
    cache = Conv2dCache(cols, x_keep, chunk, weight, tuple(x.shape), bias is not None, stride, pads, dilation,
                        groups, out_hw, channel_major, gather, weight_matrix if few else None)
    return y, cache


def _group_major(xp, x, pads, groups):
    """x (N, C, H, W) padded as (G, Cg, N, H_pad, W_pad), contiguous: the channel-major columns' source.
    Its kernel-offset slices stack into contiguous columns (NumPy's stack keeps its inputs' memory order,
    so slices of a transposed view would stack into a layout the columns' reshape must copy again)."""
    n, c, h, w = x.shape
    by_group = xp.permute_dims(xp.reshape(x, (n, groups, c // groups, h, w)), (1, 2, 0, 3, 4))
    if any(pads):
        return _windows.pad_hw(by_group, pads, (3, 4))
    return xp.reshape(xp.reshape(by_group, (n * c * h * w,)), by_group.shape)


def _batch(x_padded, block, channel_major):
    """The samples ``block`` of a padded input: axis 2 of the channel-major (G, Cg, N, H, W) source, else axis 0."""
    return x_padded[:, :, block, ...] if channel_major else x_padded[block, ...]


def _add_bias(xp, y, bias, few):
    """y (N, OH, OW, C_out) + bias as the NCHW view conv2d_forward returns."""
    if bias is not None and few:
        y = y + bias                            # one broadcast add over the channels-last output
    elif bias is not None:
        # NumPy: y is this call's own fresh product, added in place along rows long enough for fast loops
        rows = _windows.wide_rows(y, xp)
        rows += _windows.per_channel(bias, y.shape[2], xp)
        y = xp.reshape(rows, y.shape)
    return xp.permute_dims(y, (0, 3, 1, 2))


def _depthwise_forward(xp, x, weight, bias, stride, pads, dilation, out_hw, training):
    """conv2d_forward for one input channel per group (CPU libraries), batch block by batch block."""
    n, c_in = x.shape[0], x.shape[1]
    c_out, _, kh, kw = weight.shape
    x_nhwc = _windows.channels_last(x, xp)
    if c_out > c_in:         # channel multiplier m: output channel o reads input channel o // m
        h, w, m = x.shape[2], x.shape[3], c_out // c_in
        x_nhwc = xp.reshape(xp.broadcast_to(x_nhwc[..., None], (n, h, w, c_in, m)), (n, h, w, c_out))
    x_pad = _windows.pad_hw(x_nhwc, pads, (1, 2))
    # blocks of a quarter of conv_block_bytes of output: the products, the sums and the input rows they
    # read stay in cache (measured 1.1-1.8x faster than blocks of the whole conv_block_bytes)
    per_sample = 4 * out_hw[0] * out_hw[1] * c_out * (xp.finfo(x.dtype).bits // 8)
    chunk = _chunk_size(x, per_sample, n, keep_columns=False)
    taps = _depthwise_taps(xp, weight, out_hw[1])
    ys = [_depthwise_block(xp, x_pad[block, ...], taps, (kh, kw), stride, dilation, out_hw)
          for block in _blocks(n, chunk)]
    y = _add_bias(xp, ys[0] if len(ys) == 1 else xp.concat(ys, axis=0), bias, False)
    return y, Conv2dCache(None, x_pad, chunk, weight, tuple(x.shape), bias is not None, stride, pads, dilation,
                          c_in, out_hw, depthwise=True)


def _depthwise_taps(xp, weight, width):
    """Weight (C, 1, kH, kW) as (kH*kW, width*C): per kernel offset, the channels' weights repeated along a
    row of ``width`` output pixels (the rows of _windows.wide_rows)."""
    c, _, kh, kw = weight.shape
    return xp.tile(xp.permute_dims(xp.reshape(weight, (c, kh * kw)), (1, 0)), (1, width))


def _depthwise_block(xp, x_pad, taps, kernel, stride, dilation, out_hw):
    """y (n, OH, OW, C) = Σ_k x_pad[:, rows_k, cols_k, :] * W[:, k]: one elementwise product per kernel
    offset. A depthwise product is a handful of multiplications per output, too few for a matrix product."""
    n, c = x_pad.shape[0], x_pad.shape[3]
    oh, ow = out_hw
    y = None
    for k, rows, cols in _windows.offsets(kernel, stride, dilation, out_hw):
        term = xp.reshape(x_pad[:, rows, cols, :], (n, oh, ow * c)) * taps[k, ...]
        if y is None:
            y = term
        else:
            y += term                          # this call's own array: in place where the library allows
    return xp.reshape(y, (n, oh, ow, c))


def _depthwise_backward(xp, dy_nhwc, cache: Conv2dCache, need_dx: bool, need_dw: bool):
    """(dx NHWC, dW) of the direct form: dW[c, k] = Σ x_k ⊙ δ, δ_prev = Σ_k shift_k(δ ⊙ W[:, k])."""
    n, oh, ow, c = dy_nhwc.shape
    c_out, _, kh, kw = cache.weight.shape
    taps = _depthwise_taps(xp, cache.weight, ow) if need_dx else None
    dw, dx_pad = None, None
    if need_dx:
        dx_pad = xp.zeros(cache.x_pad.shape, dtype=dy_nhwc.dtype, device=array_api_compat.device(dy_nhwc))
    for block in _blocks(n, cache.chunk):
        x_pad = cache.x_pad[block, ...]
        dy_rows = xp.reshape(dy_nhwc[block, ...], (block.stop - block.start, oh, ow * c))
        taps_dw = []
        for k, rows, cols in _windows.offsets((kh, kw), cache.stride, cache.dilation, cache.out_hw):
            if need_dw:
                product = xp.reshape(x_pad[:, rows, cols, :], dy_rows.shape) * dy_rows
                taps_dw.append(_windows.channel_sum(xp.reshape(product, (-1, ow * c)), ow, xp))
            if need_dx:
                share = xp.reshape(dy_rows * taps[k, ...], (dy_rows.shape[0], oh, ow, c))
                dx_pad = _windows.accumulate(dx_pad, (block, rows, cols, slice(None)), share)
        if need_dw:
            block_dw = xp.stack(taps_dw, axis=1)                               # (C_out, K)
            dw = block_dw if dw is None else dw + block_dw
    dw = None if dw is None else xp.reshape(dw, (c_out, 1, kh, kw))
    if not need_dx:
        return None, dw
    dx = _windows.crop_hw(dx_pad, cache.pads, (1, 2))
    c_in = cache.x_shape[1]
    if c_out > c_in:                           # the repeated channels' gradients summed
        dx = xp.sum(xp.reshape(dx, (n, dx.shape[1], dx.shape[2], c_in, c_out // c_in)), axis=4)
    return xp.permute_dims(dx, (0, 3, 1, 2)), dw


def _validate(x, weight, bias, groups, training):
    """conv2d_forward's input checks (skipped inside checks.trusted()); returns the namespace."""
    xp = checks.input_and_weight(_OP, x, weight, bias, "(N, C, H, W)", "(C_out, C_in/groups, kH, kW)")
    checks.positive_int(_OP, "groups", groups)
    checks.flag(_OP, "training", training)
    c_in, (c_out, c_group, kh, kw) = x.shape[1], weight.shape
    if c_in % groups or c_out % groups:
        raise ValueError(f"{_OP}: groups={groups} must divide in_channels={c_in} and out_channels={c_out}")
    if c_group * groups != c_in:
        raise ValueError(
            f"{_OP}: expected input with {c_group * groups} channels (weight {tuple(weight.shape)}, "
            f"groups={groups}), got shape {tuple(x.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"{_OP}: bias must have shape ({c_out},), got {tuple(bias.shape)}")
    if kh < 1 or kw < 1:
        raise ValueError(f"{_OP}: kernel size must be >= 1, got {kh}x{kw}")
    return xp


def _columns_times_weight(xp, cols, weight_matrix, n, out_hw, c_out, channel_major=False):
    """(G, M, K*Cg) @ (G, K*Cg, Cout/G) -> NHWC output (n, OH, OW, Cout).

    Channel-major columns (1, K*C, M) enter the product transposed (a view; BLAS reads it as such)."""
    if channel_major and cols.shape[0] == 1:
        return xp.reshape(xp.matmul(xp.permute_dims(cols[0, ...], (1, 0)), weight_matrix[0, ...]),
                          (n, out_hw[0], out_hw[1], c_out))
    y = _group_matmul(xp, xp.permute_dims(cols, (0, 2, 1)) if channel_major else cols, weight_matrix)
    return xp.reshape(xp.permute_dims(y, (1, 0, 2)), (n, out_hw[0], out_hw[1], c_out))


def conv2d_backward(dy, cache: Conv2dCache, *, need_dx: bool = True, need_params: bool = True):
    """Gradients of a convolution.

    dy (N, C_out, OH, OW) -> ``(dx, dweight, dbias)`` with the shapes of x, weight and bias
    (dbias is None without bias; dx is None when ``need_dx`` is False, e.g. for a first layer;
    dweight and dbias are None when ``need_params`` is False, for a frozen layer).
    dW = a ⋆ δ (columns^T @ δ), δ_prev = pad(δ) ∗ rot180(W) (δ @ W^T folded back by col2im; for groups at
    stride 1 a grouped convolution of δ; see the module docstring for the shifted-rows forms).
    """
    if isinstance(cache, winograd.WinogradCache):
        return winograd.conv2d_backward(dy, cache, need_dx=need_dx, need_params=need_params)
    n, c_in, h, w = cache.x_shape
    c_out, c_group, kh, kw = cache.weight.shape
    groups, (oh, ow) = cache.groups, cache.out_hw
    xp = checks.backward_namespace("conv2d_backward", dy, cache.weight, (n, c_out, oh, ow))
    dy_nhwc = _windows.channels_last(dy, xp)
    few = cache.gather is not None
    if not (cache.has_bias and need_params):
        db = None
    elif few:
        db = _windows.column_sums(xp, xp.reshape(dy_nhwc, (n * oh * ow, c_out)))
    else:
        db = _windows.channel_sum(_windows.wide_rows(dy_nhwc, xp), ow, xp)
    if cache.depthwise:
        dx, dw = _depthwise_backward(xp, dy_nhwc, cache, need_dx, need_params)
        return dx, dw, db
    dx_separately = need_dx and _dx_by_correlation(cache)   # grouped, stride 1: a convolution of δ
    need_dx = need_dx and not dx_separately
    geometry = ((kh, kw), cache.stride, cache.dilation, cache.out_hw, groups, cache.channel_major)
    if not need_dx:
        weight_t = None
    elif few:    # the forward's weight matrix, transposed (a view: the product reads it so)
        weight_t = xp.permute_dims(cache.weight_matrix, (0, 2, 1))
    else:
        weight_t = _weight_matrix_t(xp, cache.weight, groups)
    if not (need_dx or need_params):
        dw = dx_nhwc = None
    elif cache.cols is not None:
        dw, dx_nhwc = _backward_block(xp, dy_nhwc, cache.cols, cache, weight_t, need_params)
    else:
        shifted = _takes_shifted(cache)
        dw, dx_blocks = None, []
        for block in _blocks(n, _shifted_chunk(xp, cache) if shifted else cache.chunk):
            if shifted:      # no columns: row shifts of the padded input (see _shifted)
                dw_block, dx_block = _shifted.gradients(xp, dy_nhwc[block, ...], cache.x_pad[block, ...],
                                                        (kh, kw), weight_t, need_params)
                dx_block = None if dx_block is None else _windows.crop_hw(dx_block, cache.pads, (1, 2))
            else:
                cols = (_columns(xp, _batch(cache.x_pad, block, cache.channel_major), geometry, cache.gather)
                        if need_params else None)
                dw_block, dx_block = _backward_block(xp, dy_nhwc[block, ...], cols, cache, weight_t, need_params)
            dw = dw_block if dw is None else dw + dw_block
            dx_blocks.append(dx_block)
        dx_nhwc = xp.concat(dx_blocks, axis=0) if need_dx else None
    if dw is not None:
        dw = xp.reshape(dw, (groups, kh, kw, c_group, c_out // groups))
        dw = xp.reshape(xp.permute_dims(dw, (0, 4, 3, 1, 2)), (c_out, c_group, kh, kw))
    if dx_separately:
        return _correlated_input_gradient(dy, cache), dw, db
    if not need_dx:
        return None, dw, db
    return xp.permute_dims(dx_nhwc, (0, 3, 1, 2)), dw, db


def _dx_by_correlation(cache: Conv2dCache) -> bool:
    """Whether δ_prev is taken as a grouped convolution of δ (_correlated_input_gradient): CPU loops, more than
    one group (not depthwise), stride 1, padding at most the dilated kernel's reach on each side.

    Measured on a 2-core CPU (64 channels in 4 groups, 3x3, 28x28, batch 32, alternating in one process):
    the whole backward pass took 15-19 ms against 22-30 ms per offset. For one group the two forms measured
    within noise of each other in the LeNet, VGG-small and ResNet-20 steps, and the per-offset form stays."""
    kh, kw = cache.weight.shape[2:]
    dh, dw = cache.dilation
    top, bottom, left, right = cache.pads
    return (cache.groups > 1 and cache.gather is None and not cache.depthwise and cache.stride == (1, 1)
            and max(top, bottom) <= dh * (kh - 1) and max(left, right) <= dw * (kw - 1))


def _correlated_input_gradient(dy, cache: Conv2dCache):
    """δ_prev = pad(δ) ∗ rot180(W) of a grouped stride-1 convolution, computed as the forward correlation of δ
    with each group's kernel flipped and its input and output channels swapped (C_in, C_out/G, kH, kW), padded
    by the dilated reach less the forward's padding: group columns of δ and G products per block (or, with
    one output channel per group, the depthwise form), where the per-offset form adds kH·kW G-interleaved
    products into strided slices of δ_prev."""
    xp = array_api_compat.array_namespace(dy)
    c_out, c_group, kh, kw = cache.weight.shape
    groups, (dh, dw) = cache.groups, cache.dilation
    w = xp.reshape(cache.weight, (groups, c_out // groups, c_group, kh, kw))
    flipped = xp.flip(xp.permute_dims(w, (0, 2, 1, 3, 4)), axis=(3, 4))          # (G, Cg, Cout/G, kH, kW)
    flipped = xp.reshape(flipped, (groups * c_group, c_out // groups, kh, kw))
    top, bottom, left, right = cache.pads
    pads = (dh * (kh - 1) - top, dh * (kh - 1) - bottom, dw * (kw - 1) - left, dw * (kw - 1) - right)
    with checks.trusted():
        dx, _ = conv2d_forward(dy, flipped, None, padding=pads, dilation=cache.dilation, groups=groups,
                               training=False)
    return dx


#: Stride-1 convolutions with fewer input channels than this, whose columns were not kept (a large batch),
#: take their gradients from row shifts of the padded input instead of rebuilding the columns (_shifted).
#: Measured on a 2-core CPU, 3x3, batch 128, C_in = C_out (scripts/measure_floors.py shifted): the backward
#: pass took 8 ms against 15-17 ms rebuilding columns at 8 channels (32x32), 16-18 against 27-31 ms at 16,
#: and 12-15 against 14-18 ms at 32 channels (16x16), which an earlier run had the other way round.
SHIFTED_BELOW = 32

#: The forward passes of those convolutions, where the columns would be built in blocks (too big to keep, or
#: in evaluation), take the shifted rows too (_shifted.forward); False keeps im2col's blocks. Measured on a
#: 2-core CPU, alternating in one process (scripts/measure_floors.py forward): the ResNet-20 step, batch 128,
#: took 577 against 647 ms (an earlier run 615 against 665; its six 16-channel 32x32 layers). One such layer
#: alone measured 20 against 23 ms, in other runs 10.5 against 16.3 and 24 against 18 ms (its timing follows
#: what the heap holds from earlier calls); at 32 channels and more im2col was faster in two runs of three.
SHIFTED_FORWARD = True


def _takes_shifted(cache: Conv2dCache) -> bool:
    return (cache.gather is None and not cache.channel_major and not cache.depthwise
            and cache.x_shape[1] < SHIFTED_BELOW and _shifted.applies(cache.stride, cache.dilation, cache.groups))


def _shifted_chunk(xp, cache: Conv2dCache) -> int:
    return _shifted_samples(xp, cache.x_shape, cache.pads, cache.weight.shape[0], cache.weight.dtype)


def _shifted_samples(xp, x_shape, pads, c_out, dtype) -> int:
    """Samples per block of the shifted-rows forms: about half of conv_block_bytes of padded grid per
    block (0.5-2 MiB blocks measured alike; 4 MiB ones ran up to 2x slower at 8 channels, batch 128)."""
    _, c_in, h, w = x_shape
    top, bottom, left, right = pads
    per_sample = (h + top + bottom) * (w + left + right) * max(c_in, c_out) * (xp.finfo(dtype).bits // 8)
    return max(1, config.get().conv_block_bytes // 2 // per_sample)


def _backward_block(xp, dy_nhwc, cols, cache: Conv2dCache, weight_t, need_dw: bool = True):
    """dW (G, K*Cg, Cout/G), or None without ``need_dw``, and the NHWC input gradient for one batch block.

    ``weight_t`` is _weight_matrix_t of the weight (the loops), the forward's weight matrix transposed (the
    few-launch forms, whose columns are gathered), or None when no input gradient is wanted.
    """
    n, oh, ow, c_out = dy_nhwc.shape
    c_in = cache.x_shape[1]
    _, c_group, kh, kw = cache.weight.shape
    groups = cache.groups
    m = n * oh * ow
    dy_groups = xp.permute_dims(xp.reshape(dy_nhwc, (m, groups, c_out // groups)), (1, 0, 2))  # (G, M, Cout/G)
    if not need_dw:
        dw = None
    elif cache.channel_major:
        dw = _group_matmul(xp, cols, dy_groups)
    elif cache.gather is not None:     # (δ^T cols)^T: laid out as the weight, so one input channel needs no copy
        dw = xp.permute_dims(_group_matmul(xp, xp.permute_dims(dy_groups, (0, 2, 1)), cols), (0, 2, 1))
    else:
        dw = _group_matmul(xp, xp.permute_dims(cols, (0, 2, 1)), dy_groups)                 # (G, K*Cg, Cout/G)
    if weight_t is None:
        return dw, None
    if cache.gather is not None:
        # δ_prev as col2im of one product: each input position sums the column cells that read it
        cells = _ungrouped(xp, _group_matmul(xp, dy_groups, weight_t), n, oh * ow * kh * kw)   # (N, P*K, C)
        return dw, xp.reshape(_gather.fold(xp, cells, cache.gather), (n, cache.x_shape[2], cache.x_shape[3], c_in))
    # δ_prev: for each kernel offset k, δ @ W_k^T is that offset's contribution, added into its strided
    # slice of the padded input gradient (col2im without materialising all kH*kW column blocks at once).
    top, bottom, left, right = cache.pads
    h, w = cache.x_shape[2], cache.x_shape[3]
    dx_pad = xp.zeros((n, h + top + bottom, w + left + right, c_in), dtype=dy_nhwc.dtype,
                      device=array_api_compat.device(dy_nhwc))
    for k, rows, cols_slice in _windows.offsets((kh, kw), cache.stride, cache.dilation, (oh, ow)):
        part = _group_matmul(xp, dy_groups, weight_t[:, :, k * c_group:(k + 1) * c_group])  # (G, M, Cg)
        part = xp.reshape(xp.permute_dims(part, (1, 0, 2)), (n, oh, ow, c_in))
        dx_pad = _windows.accumulate(dx_pad, (slice(None), rows, cols_slice, slice(None)), part)
    return dw, _windows.crop_hw(dx_pad, cache.pads, (1, 2))


def _columns(xp, source, geometry, gather):
    """im2col of a padded input (the loops), or of (N, H*W, C) rows gathered by ``gather`` (few launches)."""
    if gather is None:
        return _im2col(xp, source, *geometry)
    cells = _gather.windows(xp, source, gather)                           # (N, P*K, C)
    n, _, c = cells.shape
    return _grouped(xp, cells, n * gather.out_hw[0] * gather.out_hw[1], gather.cells, c, geometry[4])


def _grouped(xp, cells, m, k, c, groups):
    """Columns (M, K, C) in any (N, OH, OW, K, C) shape as (G, M, K*Cg) matrices."""
    if groups == 1:
        return xp.reshape(cells, (1, m, k * c))
    grouped = xp.reshape(cells, (m, k, groups, c // groups))
    return xp.reshape(xp.permute_dims(grouped, (2, 0, 1, 3)), (groups, m, k * (c // groups)))


def _ungrouped(xp, columns, n, cells):
    """(G, M, K*Cg) column values back to (N, P*K, C), the inverse of _grouped."""
    groups, m, width = columns.shape
    k = cells * n // m                           # cells per window
    if groups == 1:
        return xp.reshape(columns, (n, cells, width // k))
    split = xp.reshape(columns, (groups, m, k, width // k))
    return xp.reshape(xp.permute_dims(split, (1, 2, 0, 3)), (n, cells, groups * (width // k)))


def _im2col(xp, x_padded, kernel, stride, dilation, out_hw, groups, channel_major=False):
    """Columns (G, N*OH*OW, kH*kW*Cg) of a padded NHWC input, one slice per kernel offset;
    with ``channel_major``, columns (G, kH*kW*Cg, N*OH*OW) of a padded (G, Cg, N, H, W) input (_group_major)."""
    if channel_major:
        c_group, n = x_padded.shape[1], x_padded.shape[2]
        patches = [x_padded[:, :, :, rows, cols]
                   for _, rows, cols in _windows.offsets(kernel, stride, dilation, out_hw)]
        stacked = xp.stack(patches, axis=1)                               # (G, K, Cg, N, OH, OW)
        return xp.reshape(stacked, (groups, len(patches) * c_group, n * out_hw[0] * out_hw[1]))
    n, _, _, c = x_padded.shape
    patches = [x_padded[:, rows, cols, :] for _, rows, cols in _windows.offsets(kernel, stride, dilation, out_hw)]
    stacked = xp.stack(patches, axis=3)                                  # (N, OH, OW, K, C)
    return _grouped(xp, stacked, n * out_hw[0] * out_hw[1], kernel[0] * kernel[1], c, groups)


def _group_matmul(xp, a, b):
    """a (G, M, K) @ b (G, K, P). One group is multiplied as plain matrices: NumPy's stacked matmul
    leaves BLAS for some strided operands and can be several times slower."""
    if a.shape[0] == 1:
        return xp.matmul(a[0, ...], b[0, ...])[None, ...]
    return xp.matmul(a, b)


def _weight_matrix_t(xp, weight, groups):
    """Weight (Cout, Cg, kH, kW) as (G, Cout/G, kH*kW*Cg): the transpose of _weight_matrix, built contiguous."""
    c_out, c_group, kh, kw = weight.shape
    w = xp.reshape(weight, (groups, c_out // groups, c_group, kh, kw))
    return xp.reshape(xp.permute_dims(w, (0, 1, 3, 4, 2)), (groups, c_out // groups, kh * kw * c_group))


def _weight_matrix(xp, weight, groups):
    """Weight (Cout, Cg, kH, kW) as (G, kH*kW*Cg, Cout/G), matching the column layout."""
    c_out, c_group, kh, kw = weight.shape
    w = xp.reshape(weight, (groups, c_out // groups, c_group, kh, kw))
    w = xp.permute_dims(w, (0, 3, 4, 2, 1))
    return xp.reshape(w, (groups, kh * kw * c_group, c_out // groups))
