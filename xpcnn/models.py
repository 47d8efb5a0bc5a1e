"""Deprecated alias of :mod:`xpcnn.zoo` (the ready-made architectures), kept for code written for xpcnn 0.1."""
import warnings

from .zoo import MODELS, lenet, mlp, vgg_small

warnings.warn("xpcnn.models is now xpcnn.zoo; import from there", DeprecationWarning, stacklevel=2)

__all__ = ["MODELS", "lenet", "mlp", "vgg_small"]
