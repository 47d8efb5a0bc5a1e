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


def trace(model, x, y, *, optimizer=None, lr: float = 0.1, loss: str = "cross_entropy", max_full: int = 16) -> Lesson:
    """Run one forward and backward pass of ``model`` on (x, y) and describe every layer.

    Arrays of at most ``max_full`` values are printed in full, larger ones summarised (min, max,
    mean, norm). For each parameter the gradient and the update are shown: the update ``optimizer``
    would make (its class and learning rate, from its current state), or plain SGD with ``lr``.
    Training is not perturbed: weights, buffers (batch-norm statistics), the model's random generator
    (dropout masks) and the optimizer's state are restored, so a traced run trains exactly as an
    untraced one. The gradients are left as computed, to be inspected (a training step zeroes them first).
    """
    saved_state, saved_rng, saved_noise = model.state_dict(), model.rng.bit_generator.state, model.noise.state()
    try:
        return _trace(model, x, y, optimizer, lr, loss, max_full)
    finally:
        grads = [p.grad for p in model.parameters()]
        model.load_state_dict(saved_state)              # load_state_dict clears the gradients
        model.rng.bit_generator.state = saved_rng
        model.noise.set_state(saved_noise)
        for param, grad in zip(model.parameters(), grads):
            param.grad = grad


def _updates(model, optimizer, lr) -> tuple[str, dict]:
    """The change each parameter would get from one step, without keeping it: a label with a ``{name}`` field,
    and ``{id(param): update}``."""
    if optimizer is None:
        return "SGD update -lr*dL/d{name} (lr " + num(lr) + ")", {
            id(p): -lr * to_numpy(p.grad) for p in model.parameters()}
    saved = optimizer.state_dict()
    before = {id(p): np.array(to_numpy(p.data), copy=True) for p in optimizer.params}
    data = {id(p): p.data for p in optimizer.params}
    optimizer.step()
    updates = {id(p): to_numpy(p.data) - before[id(p)] for p in optimizer.params}
    for p in optimizer.params:
        p.data = data[id(p)]
    optimizer.load_state_dict(saved)
    return f"{type(optimizer).__name__} update of {{name}} (lr {num(optimizer.lr)})", updates


def _trace(model, x, y, optimizer, lr, loss, max_full) -> Lesson:
    lesson = Lesson("trace", f"Trace of one batch through {len(model.layers)} layers ({model.backend.name})")
    h = model.prepare_input(x)
    lesson.step("Forward")
    lesson.say(f"input  {tuple(h.shape)}:{_show(h, max_full)}")
    for index, layer in enumerate(model.layers):
        h = layer.forward(h)
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
    described = []
    for index in range(len(model.layers) - 1, -1, -1):
        layer = model.layers[index]
        delta = layer.backward(delta)
        described.append((index, layer, delta))
    label, updates = _updates(model, optimizer, lr)
    for index, layer, delta in described:
        lesson.say(f"[{index}] {layer.describe()}: dL/d(input) {tuple(delta.shape)}:{_show(delta, max_full)}")
        for name, param in layer.named_parameters():
            lesson.say(f"      dL/d{name} {param.shape}:{_show(param.grad, max_full)}")
            lesson.say(f"      {label.format(name=name)}:{_show(updates[id(param)], max_full)}")
    lesson.keep(loss=value)
    return lesson
