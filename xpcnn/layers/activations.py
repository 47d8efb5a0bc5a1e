"""Activation layers: ReLU, LeakyReLU, Sigmoid, Tanh, Softmax."""
from __future__ import annotations

from .. import checks, functional as F
from .base import Layer, claim


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
        self.negative_slope = checks.finite_number("LeakyReLU", "negative_slope", negative_slope)

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
        if checks.integral(dim) is None:
            raise TypeError(f"Softmax: dim must be an int, got {dim!r}")
        self.dim = checks.integral(dim)

    def forward(self, x):
        self._ensure_built(x)
        y, self.cache = F.softmax_forward(x, axis=self.dim)
        return y

    def backward(self, dy, need_dx=True):
        return F.softmax_backward(dy, self.cache)

    def config(self):
        return {"dim": self.dim}


ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "sigmoid": Sigmoid, "tanh": Tanh, "softmax": Softmax}


def activation_layer(owner: str, value) -> Layer | None:
    """The layer for an ``activation=`` argument: None, a name of :data:`ACTIVATIONS`, an activation
    layer, or the ``{"type": ..., "config": ...}`` a checkpoint stores."""
    if value is None:
        return None
    if isinstance(value, _Activation):
        return value
    if isinstance(value, dict) and value.get("type") in {cls.__name__ for cls in ACTIVATIONS.values()}:
        cls = {cls.__name__: cls for cls in ACTIVATIONS.values()}[value["type"]]
        return cls(**value.get("config", {}))
    if isinstance(value, str) and value in ACTIVATIONS:
        return ACTIVATIONS[value]()
    raise ValueError(f"{owner}: activation must be one of {', '.join(ACTIVATIONS)}, an activation layer or None, "
                     f"got {value!r}")


class Activated:
    """Mixin of Conv2D and Dense for ``activation=``: the activation layer's forward after the layer's own,
    its backward before; ``summary`` lists the two as composed."""

    activation: Layer | None = None

    def _set_activation(self, owner: str, value) -> None:
        """``activation=`` as a layer this one holds (an activation layer object belongs to one layer only)."""
        self.activation = activation_layer(owner, value)
        if self.activation is not None:
            claim(owner, self, [("activation", self.activation)])

    def _activate(self, y):
        return y if self.activation is None else self.activation.forward(y)

    def _deactivate(self, dy):
        return dy if self.activation is None else self.activation.backward(dy)

    def _activation_config(self) -> dict:
        a = self.activation
        return {} if a is None else {"activation": {"type": type(a).__name__, "config": a.config()}}

    def _activation_text(self) -> str:
        return "" if self.activation is None else f" + {self.activation!r}"

    def train(self, mode: bool = True):
        if self.activation is not None:
            self.activation.train(mode)
        return super().train(mode)
