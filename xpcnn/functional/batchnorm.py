"""Batch normalisation over (N, H, W) per channel.

batch_norm2d, training (M = N*H*W values per channel):
    μ = mean x,  σ² = mean (x - μ)²,  x̂ = (x - μ) / sqrt(σ² + ε),  y = γ x̂ + β
    dβ = Σ δ,  dγ = Σ δ ⊙ x̂,  dx = γ / (M sqrt(σ² + ε)) · (M δ - dβ - x̂ ⊙ dγ)
batch_norm2d, evaluation (running statistics μ_r, σ²_r are constants):
    y = γ (x - μ_r) / sqrt(σ²_r + ε) + β,  dx = δ γ / sqrt(σ²_r + ε)

With ``reduce`` (synchronised batch norm over several processes, :mod:`xpcnn.distributed`), μ and σ²
are the global batch's (every process's combined) and the sums dβ and dγ in the formula of dx are
summed over every process first (M counts every process's values); dβ and dγ themselves stay this
process's, to be averaged with the other gradients.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat

from .. import checks
from . import _windows
from ._launch import launch_bound

_BN = "batch_norm2d"


class _WideRows:
    """The layout NumPy is fast in: (N, C, H, W) as (N*H, W*C) channels-last rows (a view when x is laid out
    channels-last, as conv outputs are; one transposing copy otherwise). Per-channel statistics are then
    _windows.channel_sum reductions and per-channel factors _windows.per_channel vectors, both on long
    contiguous rows."""

    def __init__(self, shape: tuple, xp):
        self.shape, self.width, self.xp = shape, shape[3], xp

    def rows(self, x):
        return _windows.wide_rows(_windows.channels_last(x, self.xp), self.xp)

    def back(self, y):
        n, c, h, w = self.shape
        return self.xp.permute_dims(self.xp.reshape(y, (n, h, w, c)), (0, 3, 1, 2))

    def per_channel(self, vector):
        return _windows.per_channel(vector, self.width, self.xp)

    def sum(self, rows, scale: float = 1.0):
        total = _windows.channel_sum(rows, self.width, self.xp)
        return total if scale == 1.0 else total * scale


class _Columns(_WideRows):
    """The few-launch layout (GPUs, array_api_strict; _launch.launch_bound): the same channels-last memory
    as an (N*H*W, C) matrix (a view), a per-channel vector broadcast as a (1, C) row, and a statistic one
    matrix product with a constant row (_windows.column_sums), which GPU libraries reduce in parallel
    where a sum over the rows of a few contiguous columns runs on one thread block."""

    def rows(self, x):
        n, c, h, w = self.shape
        return self.xp.reshape(_windows.channels_last(x, self.xp), (n * h * w, c))

    def per_channel(self, vector):
        return self.xp.reshape(vector, (1, -1))

    def sum(self, rows, scale: float = 1.0):
        return _windows.column_sums(self.xp, rows, scale)


@dataclass
class BatchNormCache:
    centred: Any          # x - μ in the layout's form (x̂ = centred * inv_std is never stored)
    inv_std: Any          # (C,): 1 / sqrt(σ² + ε)
    weight: Any           # (C,) or None
    training: bool
    batch_mean: Any       # (C,): what the layer blends into its running mean
    batch_var: Any        # (C,), biased (divided by M)
    count: int            # M = N*H*W (over every process with reduce)
    x_shape: tuple
    reduce: Any = None    # the link to the other processes (SyncBatchNorm2D), or None
    layout: Any = None    # _WideRows or _Columns
    scale: Any = None     # (C,): γ / sqrt(σ² + ε) (inv_std without weight)


def _layout(x, xp):
    return (_Columns if launch_bound(x) else _WideRows)(tuple(x.shape), xp)


def batch_norm2d_forward(x, weight, bias, running_mean, running_var, *, training: bool, eps: float = 1e-5,
                         reduce=None):
    """x (N, C, H, W); weight, bias, running_mean, running_var (C,) (weight/bias may be None).

    In training the batch statistics are used (and returned in the cache for the running averages);
    in evaluation the running statistics. Returns ``(y, cache)``; y = (x - μ) · (γ / sqrt(σ² + ε)) + β,
    with the per-channel factor formed first so the full-size array sees one product and one sum.
    ``reduce``, in training, links the processes of a synchronised batch norm: ``reduce.moments(mean,
    var, x.shape)`` turns this process's statistics into the global batch's ``(mean, var, count)`` (one
    reduction), and ``reduce(a)`` sums a 1-D array over the processes (the backward pass's sums).
    """
    if checks.is_trusted():
        xp = array_api_compat.array_namespace(x)
    else:
        xp = _validate(x, weight, bias, running_mean, running_var, training)
    count = x.shape[0] * x.shape[2] * x.shape[3]
    layout = _layout(x, xp)
    rows = layout.rows(x)
    reduce = reduce if training else None
    if not training:
        mean = running_mean
    elif reduce is None:
        mean = layout.sum(rows, 1.0 / count)
    else:      # this process's two-pass statistics, combined with the other processes' in one reduction
        own_mean = layout.sum(rows, 1.0 / count)
        own = rows - layout.per_channel(own_mean)
        mean, var, count = reduce.moments(own_mean, layout.sum(own * own, 1.0 / count), tuple(x.shape))
    centred = rows - layout.per_channel(mean)
    if not training:
        var = running_var
    elif reduce is None:
        var = layout.sum(centred * centred, 1.0 / count)
    inv_std = (var + eps) ** -0.5
    scale = inv_std if weight is None else inv_std * weight
    y = centred * layout.per_channel(scale)
    if bias is not None:
        y += layout.per_channel(bias)                      # y is this call's fresh product
    cache = BatchNormCache(centred, inv_std, weight, training, mean, var, count, tuple(x.shape), reduce, layout, scale)
    return layout.back(y), cache


def _validate(x, weight, bias, running_mean, running_var, training):
    """batch_norm2d_forward's input checks (skipped inside checks.trusted()); returns the namespace."""
    xp = checks.namespace(_BN, x, weight, bias, running_mean, running_var)
    checks.check_float(_BN, "x", x, xp)
    checks.check_ndim(_BN, "x", x, 4, "(N, C, H, W)")
    checks.flag(_BN, "training", training)
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{_BN}: evaluation (training=False) uses running_mean and running_var, got None; "
                         "pass both, or training=True")
    channels = x.shape[1]
    for name, array in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                        ("running_var", running_var)):
        if array is not None and tuple(array.shape) != (channels,):
            raise ValueError(f"{_BN}: {name} must have shape ({channels},), got {tuple(array.shape)}")
        checks.check_same_dtype(_BN, x, name, array)      # a float64 statistic would upcast a float32 output
        checks.check_same_device(_BN, x, name, array)
    if training and x.shape[0] * x.shape[2] * x.shape[3] < 2:
        raise ValueError(f"{_BN}: training needs more than one value per channel, got input shape {tuple(x.shape)}")
    return xp


def batch_norm2d_backward(dy, cache: BatchNormCache):
    """dy (N, C, H, W) -> ``(dx, dweight, dbias)`` (dweight/dbias are (C,); dweight is None without weight).

    With x̂ = centred · inv_std and scale = γ · inv_std, the training formula
    dx = scale · (δ - mean δ - x̂ · mean(δ x̂)) is evaluated as δ · scale + centred · b + c with the
    per-channel b = -scale · inv_std · mean(δ x̂) and c = -scale · mean δ.
    """
    xp = checks.backward_namespace("batch_norm2d_backward", dy, cache.centred, cache.x_shape)
    layout, scale = cache.layout, cache.scale
    rows = layout.rows(dy)
    dbias = layout.sum(rows)
    dweight = layout.sum(rows * cache.centred) * cache.inv_std      # Σ δ x̂
    weight_grad = None if cache.weight is None else dweight
    dx = rows * layout.per_channel(scale)
    if cache.training:
        sum_dweight, sum_dbias = dweight, dbias
        if cache.reduce is not None:                    # the sums over the global batch
            channels = int(dbias.shape[0])
            both = cache.reduce(xp.concat([dweight, dbias]))
            sum_dweight, sum_dbias = both[:channels], both[channels:]
        share = scale * (-1.0 / cache.count)            # -scale / M
        dx += cache.centred * layout.per_channel(share * cache.inv_std * sum_dweight)
        dx += layout.per_channel(share * sum_dbias)
    return layout.back(dx), weight_grad, dbias
