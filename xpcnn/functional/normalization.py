"""Batch normalisation over (N, H, W) per channel, and inverted dropout.

batch_norm2d, training (M = N*H*W values per channel):
    μ = mean x,  σ² = mean (x - μ)²,  x̂ = (x - μ) / sqrt(σ² + ε),  y = γ x̂ + β
    dβ = Σ δ,  dγ = Σ δ ⊙ x̂,  dx = γ / (M sqrt(σ² + ε)) · (M δ - dβ - x̂ ⊙ dγ)
batch_norm2d, evaluation (running statistics μ_r, σ²_r are constants):
    y = γ (x - μ_r) / sqrt(σ²_r + ε) + β,  dx = δ γ / sqrt(σ²_r + ε)
dropout (inverted): y = x ⊙ m / (1 - p) with a 0/1 keep-mask m;  dx = δ ⊙ m / (1 - p)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import _checks

_BN = "batch_norm2d"


@dataclass
class BatchNormCache:
    x_hat: Any
    inv_std: Any          # (1, C, 1, 1)
    weight: Any           # (1, C, 1, 1) or None
    training: bool
    batch_mean: Any       # (C,): what the layer blends into its running mean
    batch_var: Any        # (C,), biased (divided by M)
    count: int            # M = N*H*W


def batch_norm2d_forward(x, weight, bias, running_mean, running_var, *, training: bool, eps: float = 1e-5):
    """x (N, C, H, W); weight, bias, running_mean, running_var (C,) (weight/bias may be None).

    In training the batch statistics are used (and returned in the cache for the running averages);
    in evaluation the running statistics. Returns ``(y, cache)``.
    """
    xp = _checks.namespace(_BN, x, weight, bias, running_mean, running_var)
    _checks.check_float(_BN, "x", x, xp)
    _checks.check_ndim(_BN, "x", x, 4, "(N, C, H, W)")
    channels = x.shape[1]
    for name, array in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                        ("running_var", running_var)):
        if array is not None and tuple(array.shape) != (channels,):
            raise ValueError(f"{_BN}: {name} must have shape ({channels},), got {tuple(array.shape)}")
    count = x.shape[0] * x.shape[2] * x.shape[3]
    if training:
        if count < 2:
            raise ValueError(f"{_BN}: training needs more than one value per channel, got input shape {tuple(x.shape)}")
        mean = xp.mean(x, axis=(0, 2, 3))
        centred = x - xp.reshape(mean, (1, channels, 1, 1))
        var = xp.mean(centred * centred, axis=(0, 2, 3))
    else:
        mean, var = running_mean, running_var
        centred = x - xp.reshape(mean, (1, channels, 1, 1))
    inv_std = 1.0 / xp.sqrt(xp.reshape(var, (1, channels, 1, 1)) + eps)
    x_hat = centred * inv_std
    gamma = None if weight is None else xp.reshape(weight, (1, channels, 1, 1))
    y = x_hat if gamma is None else x_hat * gamma
    if bias is not None:
        y = y + xp.reshape(bias, (1, channels, 1, 1))
    return y, BatchNormCache(x_hat, inv_std, gamma, training, mean, var, count)


def batch_norm2d_backward(dy, cache: BatchNormCache):
    """dy (N, C, H, W) -> ``(dx, dweight, dbias)`` (dweight/dbias are (C,); dweight is None without weight)."""
    xp = _checks.namespace("batch_norm2d_backward", dy, cache.x_hat)
    if tuple(dy.shape) != tuple(cache.x_hat.shape):
        raise ValueError(f"batch_norm2d_backward: dy must have shape {tuple(cache.x_hat.shape)}, got {tuple(dy.shape)}")
    dbias = xp.sum(dy, axis=(0, 2, 3))
    dweight = xp.sum(dy * cache.x_hat, axis=(0, 2, 3))
    scale = cache.inv_std if cache.weight is None else cache.inv_std * cache.weight
    if not cache.training:
        return dy * scale, (None if cache.weight is None else dweight), dbias
    channels = dy.shape[1]
    mean_dy = xp.reshape(dbias, (1, channels, 1, 1)) / cache.count
    mean_dy_xhat = xp.reshape(dweight, (1, channels, 1, 1)) / cache.count
    dx = scale * (dy - mean_dy - cache.x_hat * mean_dy_xhat)
    return dx, (None if cache.weight is None else dweight), dbias


def dropout_forward(x, keep_mask, p: float):
    """Inverted dropout with a given 0/1 ``keep_mask`` of x's shape (drawn by the caller). Returns ``(y, cache)``."""
    xp = _checks.namespace("dropout", x, keep_mask)
    _checks.check_float("dropout", "x", x, xp)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p!r}")
    if tuple(keep_mask.shape) != tuple(x.shape):
        raise ValueError(f"dropout: keep_mask must have the shape of x {tuple(x.shape)}, got {tuple(keep_mask.shape)}")
    scaled = xp.astype(keep_mask, x.dtype) * (1.0 / (1.0 - p))
    return x * scaled, scaled


def dropout_backward(dy, cache):
    _checks.namespace("dropout_backward", dy, cache)
    return dy * cache
