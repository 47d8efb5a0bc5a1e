"""The checks of optimizer and schedule arguments: one line naming the owner, the argument, what was
expected and what came."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def in_range(owner: str, name: str, value: Any, low: float, high: float | None = None,
           low_open: bool = False, high_open: bool = True) -> float:
    """``value`` as a float when it is a finite number in the interval from ``low`` to ``high``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
        raise ValueError(f"{owner}: {name} must be in {left}{low}, {right}, got {value!r}")
    return float(value)


def flag(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{owner}: {name} must be True or False, got {value!r}")
    return bool(value)
