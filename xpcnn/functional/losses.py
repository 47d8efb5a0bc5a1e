"""Losses, each returning ``(loss, dloss/dinput)`` in one call.

softmax_cross_entropy:  L = -(1/N) Σ_n Σ_k t[n,k] log softmax(z)[n,k];  dL/dz = (softmax(z) - t) / N
mse_loss:               L = (1/M) Σ (p - t)²  (M = number of elements);  dL/dp = 2 (p - t) / M
"""
from __future__ import annotations

from .. import checks
from ..backend import made_once
from .activations import log_softmax_forward

_CE = "softmax_cross_entropy"


def softmax_cross_entropy(logits, labels, *, check_labels: bool | None = None):
    """Mean cross-entropy of softmax(logits) against ``labels``.

    logits (N, K) float; labels either integer class indices (N,) in [0, K) or probability
    targets (N, K) whose rows sum to 1. Returns ``(loss, dlogits)``: a 0-d array and (N, K).
    Uses log-softmax shifted by the row maximum, so logits of ±1e4 stay finite.

    ``check_labels`` decides whether the label values are checked (range; rows finite, non-negative,
    summing to 1): ``None`` (the default) checks them on every backend when called directly and skips
    them inside ``checks.trusted()``, where the caller has checked them (as ``fit`` does once on the
    host); ``True`` always checks, ``False`` never does. On a GPU a check is a device-to-host read (a
    sync), so a training loop of your own checks its labels once and passes ``False`` or runs the step
    inside ``checks.trusted()``. Shapes and dtypes are always checked.
    """
    xp = checks.namespace(_CE, logits, labels)
    checks.check_float(_CE, "logits", logits, xp)
    checks.check_ndim(_CE, "logits", logits, 2, "(N, K)")
    n, k = logits.shape
    if n == 0:
        raise ValueError(f"{_CE}: logits is an empty batch, shape {tuple(logits.shape)}")
    if check_labels is None:
        check_labels = not checks.is_trusted()
    elif not isinstance(check_labels, bool):
        raise TypeError(f"{_CE}: check_labels must be True, False or None, got {check_labels!r}")
    target = _targets(xp, logits, labels, check_labels)
    log_p, _ = log_softmax_forward(logits)
    loss = xp.sum(target * log_p) * (-1.0 / n)
    dlogits = (xp.exp(log_p) - target) / n
    return loss, dlogits


def _targets(xp, logits, labels, check_values: bool):
    n, k = logits.shape
    if xp.isdtype(labels.dtype, "integral"):
        if tuple(labels.shape) != (n,):
            raise ValueError(f"{_CE}: integer labels must have shape ({n},), got {tuple(labels.shape)}")
        if check_values:
            low, high = int(xp.min(labels)), int(xp.max(labels))
            if low < 0 or high >= k:
                raise ValueError(f"{_CE}: labels must lie in [0, {k}), got values from {low} to {high}")
        classes = made_once(("classes", k, str(labels.dtype)), labels,
                                     lambda device: xp.arange(k, dtype=labels.dtype, device=device))
        return xp.astype(labels[:, None] == classes, logits.dtype)
    if labels.dtype == xp.bool:
        raise TypeError(f"{_CE}: labels must be integer class indices or float probabilities, got dtype bool")
    checks.check_float(_CE, "labels", labels, xp)
    if tuple(labels.shape) != (n, k):
        raise ValueError(f"{_CE}: probability targets must have shape ({n}, {k}), got {tuple(labels.shape)}")
    if not check_values:
        return xp.astype(labels, logits.dtype)
    if not bool(xp.all(xp.isfinite(labels))) or bool(xp.any(labels < 0)):
        raise ValueError(f"{_CE}: probability targets must be finite and non-negative")
    row_sums = xp.sum(labels, axis=1)
    tolerance = 1e-3 if labels.dtype == xp.float32 else 1e-6
    if bool(xp.any(xp.abs(row_sums - 1.0) > tolerance)):
        worst = float(xp.max(xp.abs(row_sums - 1.0)))
        raise ValueError(f"{_CE}: each row of probability targets must sum to 1, off by up to {worst:.3g}")
    return xp.astype(labels, logits.dtype)


def mse_loss(pred, target):
    """Mean squared error over all elements. Returns ``(loss, dpred)``; pred and target share a shape."""
    xp = checks.namespace("mse_loss", pred, target)
    checks.check_float("mse_loss", "pred", pred, xp)
    checks.check_float("mse_loss", "target", target, xp)
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"mse_loss: target must have the shape of pred {tuple(pred.shape)}, got {tuple(target.shape)}")
    count = 1
    for size in pred.shape:
        count *= size
    if count == 0:
        raise ValueError(f"mse_loss: pred is empty, shape {tuple(pred.shape)}")
    diff = pred - xp.astype(target, pred.dtype)
    return xp.sum(diff * diff) / count, diff * (2.0 / count)
