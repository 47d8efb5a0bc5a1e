"""trace(model, x, y): every layer's forward and backward arrays for one batch, and each parameter's update."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ..backend import to_numpy
from .lesson import Lesson, grid, num, summary


def _show(array: Any, max_full: int) -> str:
    a = np.asarray(to_numpy(array))
    if a.size <= max_full:
        flat = a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a
        return "\n" + grid(flat, indent="      ")
    return " " + summary(a)


def trace(model, x, y, *, lr: float = 0.1, loss: str = "cross_entropy", max_full: int = 16) -> Lesson:
    """Run one forward and backward pass of ``model`` on (x, y) and describe every layer.

    Arrays of at most ``max_full`` values are printed in full, larger ones summarised (min, max,
    mean, norm). For each parameter the gradient and the plain SGD update -lr * grad are shown;
    the model's parameters are not changed (its gradients are left as computed).
    """
    lesson = Lesson("trace", f"Trace of one batch through {len(model.layers)} layers ({model.backend.name})")
    h = model.prepare_input(x)
    lesson.step("Forward")
    lesson.say(f"input  {tuple(h.shape)}:{_show(h, max_full)}")
    activations = []
    for index, layer in enumerate(model.layers):
        h = layer.forward(h)
        activations.append(h)
        lesson.say(f"[{index}] {layer.describe()} -> {tuple(h.shape)}:{_show(h, max_full)}")
    labels = model.backend.asarray(np.asarray(y))
    loss_fn = F.softmax_cross_entropy if loss == "cross_entropy" else F.mse_loss
    value, delta = loss_fn(h, labels)
    lesson.step("Loss")
    lesson.say(f"{loss} = {num(value)}" + (f"   (target classes {np.asarray(to_numpy(labels)).tolist()})"
                                            if loss == "cross_entropy" else ""))
    lesson.say(f"dL/d(output) {tuple(delta.shape)}:{_show(delta, max_full)}")
    lesson.step("Backward")
    model.zero_grad()
    for index in range(len(model.layers) - 1, -1, -1):
        layer = model.layers[index]
        delta = layer.backward(delta)
        lesson.say(f"[{index}] {layer.describe()}: dL/d(input) {tuple(delta.shape)}:{_show(delta, max_full)}")
        for name, param in layer.named_parameters():
            lesson.say(f"      dL/d{name} {param.shape}:{_show(param.grad, max_full)}")
            lesson.say(f"      SGD update -lr*dL/d{name} (lr {num(lr)}):{_show(-lr * to_numpy(param.grad), max_full)}")
    lesson.keep(loss=value)
    return lesson
