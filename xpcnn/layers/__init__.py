"""Stateful layers: each holds its Parameters and cache and calls xpcnn.functional."""
from .activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer, Parameter
from .conv import Conv2D
from .dense import Dense, Flatten
from .pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .regularization import BatchNorm2D, Dropout

__all__ = ["Layer", "Parameter", "Conv2D", "Dense", "Flatten", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D",
           "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "Dropout", "BatchNorm2D"]
