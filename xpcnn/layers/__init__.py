"""Stateful layers (floor 3 of docs/architecture.md): each holds its Parameters and cache and calls
xpcnn.functional for the math. A layer checks its input's shape when called on its own and trusts the
model's check inside one (checks.trusted()); it keeps no backend of its own."""
from .activations import ACTIVATIONS, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer, Parameter
from .conv import Conv2D
from .dense import Dense, Flatten
from .pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .batchnorm import BatchNorm1D, BatchNorm2D
from .residual import Residual
from .dropout import Dropout

__all__ = ["Layer", "Parameter", "Conv2D", "Dense", "Flatten", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D",
           "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "Dropout", "BatchNorm2D", "BatchNorm1D",
           "Residual", "ACTIVATIONS", "register"]

#: The built-in layer types by class name: what a checkpoint's architecture spec may name.
LAYER_TYPES = {cls.__name__: cls for cls in (Conv2D, Dense, Flatten, MaxPool2D, AvgPool2D, GlobalAvgPool2D, ReLU,
                                             LeakyReLU, Sigmoid, Tanh, Softmax, Dropout, BatchNorm2D,
                                             BatchNorm1D, Residual)}


def register(cls: type) -> type:
    """Make a custom layer type savable: checkpoints then store it by class name and rebuild it with
    ``cls(**layer.config())`` (override ``config()`` to return the constructor arguments). Usable as a
    class decorator; the name must not be taken by another type."""
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"register: expected a subclass of xpcnn.layers.Layer, got {cls!r}")
    taken = LAYER_TYPES.get(cls.__name__)
    if taken is not None and taken is not cls:
        raise ValueError(f"register: a layer type named {cls.__name__!r} exists already ({taken.__module__})")
    LAYER_TYPES[cls.__name__] = cls
    return cls
