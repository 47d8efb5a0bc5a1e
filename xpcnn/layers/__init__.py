"""Stateful layers (floor 3 of docs/architecture.md): each holds its Parameters and cache and calls
xpcnn.functional for the math. A layer checks its input's shape when called on its own and trusts the
model's check inside one (checks.trusted()); it keeps no backend of its own."""
from .activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer, Parameter
from .conv import Conv2D
from .dense import Dense, Flatten
from .pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .batchnorm import BatchNorm2D
from .dropout import Dropout

__all__ = ["Layer", "Parameter", "Conv2D", "Dense", "Flatten", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D",
           "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "Dropout", "BatchNorm2D"]

#: The built-in layer types by class name: what a checkpoint's architecture spec may name.
LAYER_TYPES = {cls.__name__: cls for cls in (Conv2D, Dense, Flatten, MaxPool2D, AvgPool2D, GlobalAvgPool2D, ReLU,
                                             LeakyReLU, Sigmoid, Tanh, Softmax, Dropout, BatchNorm2D)}
