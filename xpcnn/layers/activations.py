"""Activation layers: ReLU, LeakyReLU, Sigmoid, Tanh, Softmax."""
from __future__ import annotations

from .. import functional as F
from .base import Layer


class _Activation(Layer):
    forward_fn = staticmethod(lambda x: None)
    backward_fn = staticmethod(lambda dy, cache: None)

    def forward(self, x):
        self._ensure_built(x)
        y, self.cache = self.forward_fn(x)
        return y

    def backward(self, dy, need_dx=True):
        return self.backward_fn(dy, self.cache)


class ReLU(_Activation):
    forward_fn, backward_fn = staticmethod(F.relu_forward), staticmethod(F.relu_backward)


class Sigmoid(_Activation):
    forward_fn, backward_fn = staticmethod(F.sigmoid_forward), staticmethod(F.sigmoid_backward)


class Tanh(_Activation):
    forward_fn, backward_fn = staticmethod(F.tanh_forward), staticmethod(F.tanh_backward)


class LeakyReLU(_Activation):
    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        self._ensure_built(x)
        y, self.cache = F.leaky_relu_forward(x, self.negative_slope)
        return y

    def backward(self, dy, need_dx=True):
        return F.leaky_relu_backward(dy, self.cache)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"

    def config(self):
        return {"negative_slope": self.negative_slope}


class Softmax(_Activation):
    """Softmax over ``dim`` (default 1, the class axis). Losses take logits: do not end a model
    trained with softmax_cross_entropy with this layer."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        self._ensure_built(x)
        y, self.cache = F.softmax_forward(x, axis=self.dim)
        return y

    def backward(self, dy, need_dx=True):
        return F.softmax_backward(dy, self.cache)

    def config(self):
        return {"dim": self.dim}
