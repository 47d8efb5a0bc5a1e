"""Transforms of image batches: scaling to standardised floats (host), random shifts (augmentation, on the
host or, with :class:`RandomShift`, in the batch's own namespace on its device)."""
from __future__ import annotations

import array_api_compat
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


class RandomShift:
    """Augmentation that shifts each image by up to ``max_shift`` pixels in each direction, filling the
    uncovered border with the batch's minimum (the background of standardised digits).

    Unlike a plain ``augment(x_batch, rng)`` function, it can run where the data is: ``fit`` draws every
    offset of an epoch on the host at once (:meth:`draw`, from the data generator, so a seed gives the same
    shifts on every backend), and :meth:`apply` moves the pixels with array operations of the batch's own
    namespace (two gathers and a select, no loop over samples), on the device when the data lives there.
    Called as ``shift(x_batch, rng)`` it is the host function :func:`random_shift` draws per batch.
    """

    def __init__(self, max_shift: int = 2):
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
            raise ValueError(f"RandomShift: max_shift must be an int >= 0, got {max_shift!r}")
        self.max_shift = max_shift

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Offsets for ``n`` images, shape (n, 2): rows then columns, each in [-max_shift, max_shift]."""
        return rng.integers(-self.max_shift, self.max_shift + 1, size=(n, 2))

    def apply(self, x, offsets):
        """Shift the images ``x`` (N, C, H, W) by ``offsets`` (N, 2) integers of x's namespace and device."""
        if self.max_shift == 0:
            return x
        xp = array_api_compat.array_namespace(x)
        n, _, h, w = (int(s) for s in x.shape)
        device = array_api_compat.device(x)
        out = x
        valid = None
        for axis, size in ((2, h), (3, w)):
            positions = [1, 1, 1, 1]
            positions[axis] = size
            source = xp.reshape(xp.arange(size, device=device), tuple(positions))
            source = source + xp.reshape(offsets[:, axis - 2], (n, 1, 1, 1))
            inside = (source >= 0) & (source < size)
            # any in-bounds index serves outside (the select below fills there): a remainder, not clip, which
            # array-api-compat gives CuPy as assignments through boolean masks (a host read of each mask's count)
            index = xp.broadcast_to(source % size, tuple(out.shape[:axis]) + (size,)
                                    + tuple(out.shape[axis + 1:]))
            out = xp.take_along_axis(out, xp.astype(index, xp.int64), axis=axis)
            valid = inside if valid is None else valid & inside
        return xp.where(valid, out, xp.min(x))

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return random_shift(x, rng, self.max_shift)

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift})"
