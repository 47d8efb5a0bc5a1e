"""Gradient clipping to a global L2 norm, as ``torch.nn.utils.clip_grad_norm_``: with n = sqrt(Σ |g|²) over
every gradient, each g is multiplied by min(1, max_norm / (n + 1e-6)). Everything stays on the device (no
value is read, so a GPU does not synchronise)."""
from __future__ import annotations

import functools
import operator
from typing import Any, Iterable

import array_api_compat

from ..layers.base import Parameter
from .checks import in_range


def global_norm(xp, grads: list) -> Any:
    """sqrt(Σ |g|²) over every array of ``grads``, a 0-d array of their library."""
    return xp.sqrt(functools.reduce(operator.add, [xp.sum(g * g) for g in grads]))


def clip_scale(xp, norm: Any, max_norm: float) -> Any:
    """min(1, max_norm / (norm + 1e-6)), a 0-d array like ``norm``."""
    return xp.minimum(max_norm / (norm + 1e-6), xp.ones_like(norm))


def clip_grad_norm(parameters: Iterable[Parameter], max_norm: float) -> Any:
    """Scale the gradients of ``parameters`` so that their global L2 norm is at most ``max_norm``, in
    place of each ``p.grad`` (for a custom loop; an optimizer made with ``clip_grad_norm=`` clips in its own
    step). Returns n as a 0-d array of the gradients' library, or None when no parameter has a gradient.
    Frozen parameters (``requires_grad=False``) have none."""
    max_norm = in_range("clip_grad_norm", "max_norm", max_norm, 0.0, low_open=True)
    params = [p for p in parameters if isinstance(p, Parameter) and p.grad is not None]
    if not params:
        return None
    xp = array_api_compat.array_namespace(*[p.grad for p in params])
    norm = global_norm(xp, [p.grad for p in params])
    scale = clip_scale(xp, norm, max_norm)
    for p in params:
        p.grad = p.grad * xp.astype(scale, p.grad.dtype, copy=False)
    return norm
