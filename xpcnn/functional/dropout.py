"""Inverted dropout: y = x ⊙ m / (1 - p) with a 0/1 keep-mask m;  dx = δ ⊙ m / (1 - p)."""
from __future__ import annotations

import array_api_compat

from .. import checks
from ..backend import constant


def dropout_forward(x, keep_mask, p: float):
    """Inverted dropout with a given 0/1 ``keep_mask`` of x's shape (bool or float, drawn by the caller).
    Returns ``(y, cache)``."""
    if checks.is_trusted():
        xp = array_api_compat.array_namespace(x)
    else:
        xp = checks.namespace("dropout", x, keep_mask)
        checks.check_float("dropout", "x", x, xp)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout: p must be in [0, 1), got {p!r}")
        if tuple(keep_mask.shape) != tuple(x.shape):
            raise ValueError(f"dropout: keep_mask must have the shape of x {tuple(x.shape)}, "
                             f"got {tuple(keep_mask.shape)}")
    if keep_mask.dtype == xp.bool:        # the scaled mask in one select
        scaled = xp.where(keep_mask, constant(1.0 / (1.0 - p), x), constant(0.0, x))
    else:
        scaled = xp.astype(keep_mask, x.dtype, copy=False) * (1.0 / (1.0 - p))    # no copy for a float mask
    return x * scaled, scaled


def dropout_backward(dy, cache):
    checks.backward_namespace("dropout_backward", dy, cache, tuple(cache.shape))
    return dy * cache
