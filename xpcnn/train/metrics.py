"""The figures of training and evaluation, kept on the device: a batch's loss (without a device-side label
check) and correct count, their running sums read to the host in one transfer, and evaluation over a feed."""
from __future__ import annotations

import functools
from typing import Any, Callable

import array_api_compat

from .. import functional as F
from ..backend import to_numpy


def batch_loss(loss_fn: Callable) -> Callable:
    """The loss as a step calls it per batch: the label values were checked once on the host (fit's
    target check), so cross-entropy skips its device-side check (no device read per step)."""
    if loss_fn is F.softmax_cross_entropy:
        return functools.partial(F.softmax_cross_entropy, check_labels=False)
    return loss_fn


def accuracy_count(logits: Any, y: Any) -> Any:
    """The number of rows whose largest logit is the label, as a 0-d device array; None unless ``y`` holds
    class labels (N,) for logits (N, K)."""
    xp = array_api_compat.array_namespace(logits)
    if y.ndim != 1 or logits.ndim != 2:
        return None
    return xp.sum(xp.astype(xp.argmax(logits, axis=1) == xp.astype(y, xp.int64), xp.int64))


class RunningSums:
    """The loss sum and correct count of the batches so far, kept on the device; :meth:`read` brings both
    to the host in one transfer (a GPU synchronises there, and only there). ``total`` adds host figures
    over the processes of a distributed fit (:meth:`ProcessGroup.sum`), so each reads the global batch's."""

    def __init__(self, total: Callable[[list[float]], list[float]] = list):
        self.loss = self.correct = None
        self.seen, self.counted, self.total = 0, True, total

    def add(self, loss, correct, n: int) -> None:
        weighted = loss * n
        self.loss = weighted if self.loss is None else self.loss + weighted
        if correct is None:
            self.counted = False
        else:
            self.correct = correct if self.correct is None else self.correct + correct
        self.seen += n

    def read(self, model=None) -> dict[str, float]:
        """``{"loss": mean, "accuracy": fraction}`` (no accuracy without class labels) over the batches so far;
        with ``model``, the same transfer brings ``"weights_finite"``: whether its parameters and buffers are."""
        xp = array_api_compat.array_namespace(self.loss)
        values = [self.loss] + ([xp.astype(self.correct, self.loss.dtype)] if self.counted else [])
        if model is not None:
            values.append(_nonfinite_count(model, xp, self.loss))
        *host, seen = self.total([*to_numpy(xp.stack(values)).tolist(), self.seen])
        logs = {"loss": host[0] / seen}
        if self.counted:
            logs["accuracy"] = host[1] / seen
        if model is not None:
            logs["weights_finite"] = host[-1] == 0
        return logs


def _nonfinite_count(model, xp, like) -> Any:
    """On the device, as a 0-d array of ``like``'s dtype: how many parameters and float buffers hold a NaN
    or an infinity (nothing is read here)."""
    arrays = [p.data for p in model.parameters()] + [value for _, value in model.named_buffers()]
    flags = [xp.astype(xp.any(~xp.isfinite(a)), like.dtype) for a in arrays if xp.isdtype(a.dtype, "real floating")]
    return xp.sum(xp.stack(flags)) if flags else xp.zeros_like(like)


def evaluate_feed(model, data, loss_fn: Callable, batch_size: int) -> dict[str, float]:
    """Mean loss (and accuracy) over ``data`` (a DeviceData or HostFeed) in evaluation mode, read once."""
    loss_of = batch_loss(loss_fn)
    sums = RunningSums()
    with model.evaluating():
        for xb, yb in data.batches(batch_size):
            logits = model(xb)
            loss, _ = loss_of(logits, yb)
            sums.add(loss, accuracy_count(logits, yb), int(xb.shape[0]))
    return sums.read()
