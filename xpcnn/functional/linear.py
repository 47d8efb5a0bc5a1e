"""Fully connected (dense) layer: y = x @ W^T + b.

Backward, with δ = dL/dy:  dx = δ @ W,  dW = δ^T @ x,  db = sum_n δ[n].
(Composed with an activation σ this is the textbook δ_prev = (W^T δ) ⊙ σ'(z).)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat

from .. import checks

_OP = "linear"


@dataclass
class LinearCache:
    x: Any
    weight: Any
    has_bias: bool


def linear_forward(x, weight, bias=None):
    """x (N, in), weight (out, in), bias (out,) or None -> ``(y, cache)`` with y (N, out)."""
    xp = array_api_compat.array_namespace(x) if checks.is_trusted() else _validate(x, weight, bias)
    y = xp.matmul(x, xp.permute_dims(weight, (1, 0)))
    if bias is not None:
        y = y + bias
    return y, LinearCache(x, weight, bias is not None)


def linear_backward(dy, cache: LinearCache, *, need_dx: bool = True, need_params: bool = True):
    """dy (N, out) -> ``(dx, dweight, dbias)``: dx = δ W, dW = δ^T x, db = Σ_n δ (dx None without ``need_dx``,
    dW and db None without ``need_params``)."""
    xp = checks.backward_namespace("linear_backward", dy, cache.x, (cache.x.shape[0], cache.weight.shape[0]))
    dw = xp.matmul(xp.permute_dims(dy, (1, 0)), cache.x) if need_params else None
    db = xp.sum(dy, axis=0) if cache.has_bias and need_params else None
    dx = xp.matmul(dy, cache.weight) if need_dx else None
    return dx, dw, db


def _validate(x, weight, bias):
    """linear_forward's input checks (skipped inside checks.trusted()); returns the namespace."""
    xp = checks.input_and_weight(_OP, x, weight, bias, "(N, in_features)", "(out_features, in_features)")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{_OP}: expected input (N, {weight.shape[1]}) for weight {tuple(weight.shape)}, got {tuple(x.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"{_OP}: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    return xp
