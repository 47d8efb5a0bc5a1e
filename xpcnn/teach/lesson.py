"""The Lesson: printed lines plus the values behind them; number formatting shared by the examples."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backend import to_numpy


def scalar(value: Any) -> float:
    """The single number held by a Python number or a one-element array of any backend."""
    array = np.asarray(to_numpy(value), dtype=np.float64)
    if array.size != 1:
        raise ValueError(f"expected a single number, got shape {array.shape}")
    return float(array.reshape(-1)[0])


def num(value: Any) -> str:
    """A number as printed in lessons: up to 6 significant digits, no trailing zeros."""
    value = scalar(value)
    if value == 0:
        return "0"
    return f"{value:.6g}"


def grid(array: Any, indent: str = "    ") -> str:
    """A 1-D or 2-D array as aligned rows of numbers."""
    array = np.asarray(to_numpy(array), dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    cells = [[num(v) for v in row] for row in array]
    width = max(len(c) for row in cells for c in row)
    return "\n".join(indent + "[" + "  ".join(c.rjust(width) for c in row) + "]" for row in cells)


def summary(array: Any) -> str:
    """min, max, mean and L2 norm of an array too large to print."""
    a = np.asarray(to_numpy(array), dtype=np.float64)
    return (f"min {num(a.min())}, max {num(a.max())}, mean {num(a.mean())}, norm {num(np.linalg.norm(a))} "
            f"({a.size} values)")


@dataclass
class Lesson:
    """The text of a worked example and the values it computed (host NumPy arrays and floats)."""

    name: str
    title: str
    lines: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def say(self, *lines: str) -> None:
        self.lines.extend(lines)

    def step(self, heading: str) -> None:
        self.lines.extend(["", heading, "-" * len(heading)])

    def keep(self, **values: Any) -> None:
        for key, value in values.items():
            array = np.array(to_numpy(value), dtype=np.float64)
            self.values[key] = float(array) if array.ndim == 0 else array

    def __str__(self) -> str:
        return "\n".join([self.title, "=" * len(self.title)] + self.lines)
