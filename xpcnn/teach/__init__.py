"""Teaching mode: worked examples that show every number of forward and backward propagation.

    xpcnn teach --list
    xpcnn teach conv-mse
    >>> from xpcnn import teach
    >>> print(teach.run("conv-backprop"))

Every number is computed by xpcnn's own ops on the chosen backend; each step is printed as a
formula and then with the numbers filled in. ``run`` returns a :class:`Lesson` whose ``values``
hold the computed arrays, so tests (and students) can check them independently.
"""
from __future__ import annotations

from .lesson import Lesson
from .trace import trace
from .examples import EXAMPLES, run

__all__ = ["Lesson", "EXAMPLES", "run", "trace"]
