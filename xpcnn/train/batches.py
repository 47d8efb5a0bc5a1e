"""Batches for the training loop: host arrays in, arrays of the model's backend out, one transfer per batch."""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from ..backend import Backend, resolve, to_backend
from ..checks import positive_int


def batches(x: np.ndarray, y: np.ndarray | None, batch_size: int, *, backend: str | Backend | None = None,
            dtype: str = "float32", shuffle: bool = False, rng: np.random.Generator | None = None,
            augment=None) -> Iterator[tuple[Any, Any]]:
    """Yield ``(x_batch, y_batch)`` on ``backend``; each batch is moved once (never per sample).

    Shuffling and ``augment(x_batch, rng)`` happen on the host with ``rng``, so a seed gives the
    same batches on every backend.
    """
    positive_int("batches", "batch_size", batch_size)
    if y is not None and len(y) != len(x):
        raise ValueError(f"batches: x has {len(x)} samples but y has {len(y)}")
    target = resolve(backend)
    rng = rng if rng is not None else np.random.default_rng()
    order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
    for start in range(0, len(x), batch_size):
        index = order[start:start + batch_size]
        xb = x[index]
        if augment is not None:
            xb = augment(xb, rng)
        yb = None if y is None else to_backend(np.ascontiguousarray(y[index]), target)
        yield to_backend(np.ascontiguousarray(xb), target, dtype=dtype), yb
