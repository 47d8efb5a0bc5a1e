"""Weight initialisers, drawn on the host with a ``numpy.random.Generator``.

Drawing on the host means one seed gives bit-identical initial weights on every backend.
Conv2D and Dense default to ``torch_default`` for weights and biases, PyTorch's own defaults, so an
untrained network's outputs have the scale PyTorch gives (a 10-class LeNet starts near the
uniform loss ln 10 = 2.30; He initialisation of every layer, output layer included, starts at 4-5).
Each initialiser is ``f(rng, shape, fan_in, fan_out) -> numpy float64 array``.

    kaiming_uniform  U(-b, b), b = sqrt(6 / fan_in)           (He et al. 2015, for ReLU)
    kaiming_normal   N(0, 2 / fan_in)
    xavier_uniform   U(-b, b), b = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)
    xavier_normal    N(0, 2 / (fan_in + fan_out))
    torch_default    U(-1/sqrt(fan_in), 1/sqrt(fan_in))        (PyTorch's Conv2d/Linear default)
    zeros, ones
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np


def kaiming_uniform(rng, shape, fan_in, fan_out):
    bound = math.sqrt(6.0 / fan_in)
    return rng.uniform(-bound, bound, size=shape)


def kaiming_normal(rng, shape, fan_in, fan_out):
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)


def xavier_uniform(rng, shape, fan_in, fan_out):
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape)


def xavier_normal(rng, shape, fan_in, fan_out):
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)


def torch_default(rng, shape, fan_in, fan_out):
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape)


def zeros(rng, shape, fan_in, fan_out):
    return np.zeros(shape)


def ones(rng, shape, fan_in, fan_out):
    return np.ones(shape)


INITIALIZERS: dict[str, Callable] = {
    "kaiming_uniform": kaiming_uniform, "he_uniform": kaiming_uniform,
    "kaiming_normal": kaiming_normal, "he_normal": kaiming_normal,
    "xavier_uniform": xavier_uniform, "glorot_uniform": xavier_uniform,
    "xavier_normal": xavier_normal, "glorot_normal": xavier_normal,
    "torch_default": torch_default, "zeros": zeros, "ones": ones,
}


def get(owner: str, argument: str, init: str | Callable) -> Callable:
    """Look up an initialiser by name (or accept a callable), with a clear error naming the owner."""
    if callable(init):
        return init
    if init == "custom":  # a checkpoint of a model built with a custom initialiser: its weights are loaded anyway
        return kaiming_uniform
    if init not in INITIALIZERS:
        raise ValueError(f"{owner}: unknown {argument} {init!r}; choose one of {', '.join(sorted(INITIALIZERS))}")
    return INITIALIZERS[init]


def name_of(init: Callable) -> str:
    """The registered name of an initialiser (a custom callable is recorded as "custom")."""
    return next((name for name, fn in INITIALIZERS.items() if fn is init), "custom")
