"""Helpers for testing code across backends (used by xpcnn's own tests, usable by yours).

``assert_close`` checks namespace, dtype, shape and device before values, so a result that
silently fell back to NumPy, or lost its float32, fails loudly.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import array_api_compat

from .backend import Backend, backend_of, resolve, to_backend, to_numpy

#: (rtol, atol) used when comparing a backend's result with a NumPy float64 expectation.
TOLERANCES = {"float64": (1e-10, 1e-12), "float32": (1e-4, 1e-5)}


def assert_close(actual: Any, desired: Any, backend: str | Backend, dtype: str = "float64",
                 rtol: float | None = None, atol: float | None = None, name: str = "value") -> None:
    """Assert ``actual`` lives on ``backend`` with ``dtype`` and the shape of ``desired``, and is close to it."""
    target = resolve(backend)
    assert actual is not None, f"{name}: got None"
    assert backend_of(actual) == target.name, f"{name}: expected a {target.name} array, got {type(actual)}"
    assert str(actual.dtype).endswith(dtype), f"{name}: expected dtype {dtype}, got {actual.dtype}"
    assert array_api_compat.device(actual) == target.device, (
        f"{name}: expected device {target.device}, got {array_api_compat.device(actual)}")
    desired = np.asarray(desired)
    assert tuple(actual.shape) == desired.shape, f"{name}: expected shape {desired.shape}, got {tuple(actual.shape)}"
    default_rtol, default_atol = TOLERANCES[dtype]
    np.testing.assert_allclose(to_numpy(actual).astype(np.float64), desired,
                               rtol=default_rtol if rtol is None else rtol,
                               atol=default_atol if atol is None else atol, err_msg=name)


def on(backend: str | Backend, *arrays: Any, dtype: str | None = None):
    """Move host arrays to ``backend`` (``None`` passes through); one array in, one out."""
    moved = tuple(None if a is None else to_backend(np.asarray(a), backend, dtype=dtype) for a in arrays)
    return moved[0] if len(moved) == 1 else moved


def tie_free(shape, seed: int = 0) -> np.ndarray:
    """A shuffled linspace: every value distinct, so max-pool has no ties."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    return rng.permutation(np.linspace(-1.0, 1.0, size)).reshape(shape)
