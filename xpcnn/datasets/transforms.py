"""Host-side transforms of image batches: scaling to standardised floats, random shifts (augmentation)."""
from __future__ import annotations

import numpy as np


def images_to_float(images: np.ndarray, mean: float | None = None, std: float | None = None):
    """uint8 images (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W), scaled to [0, 1] then standardised.

    Returns ``(x, mean, std)``; pass the training set's mean/std when preparing test data.
    """
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[:, None, :, :]
    if x.ndim != 4:
        raise ValueError(f"images_to_float: expected images (N, H, W) or (N, C, H, W), got shape {x.shape}")
    x = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    mean = float(x.mean()) if mean is None else float(mean)
    std = float(x.std()) if std is None else float(std)
    return (x - mean) / max(std, 1e-8), mean, std


def random_shift(x: np.ndarray, rng: np.random.Generator, max_shift: int = 2, fill: float | None = None) -> np.ndarray:
    """Shift each image (N, C, H, W) by up to ``max_shift`` pixels in each direction, filling with the minimum."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    fill = float(x.min()) if fill is None else fill
    padded = np.pad(x, ((0, 0), (0, 0), (max_shift, max_shift), (max_shift, max_shift)), constant_values=fill)
    dy = rng.integers(0, 2 * max_shift + 1, size=n)
    dx = rng.integers(0, 2 * max_shift + 1, size=n)
    rows = (np.arange(h)[None, :] + dy[:, None])[:, None, :, None]
    cols = (np.arange(w)[None, :] + dx[:, None])[:, None, None, :]
    return padded[np.arange(n)[:, None, None, None], np.arange(x.shape[1])[None, :, None, None], rows, cols]
