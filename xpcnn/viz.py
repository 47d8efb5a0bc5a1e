"""Pictures of a model: first-layer filters, the feature maps of each conv layer, training curves.

Each function writes a PNG and returns its path, or returns None when matplotlib is not installed.
"""
from __future__ import annotations

import math
import os
import pathlib

import numpy as np

from .backend import to_numpy
from .layers import Conv2D
from .plots import _pyplot, plot_history

__all__ = ["plot_filters", "plot_feature_maps", "plot_history"]


def _tiles(plt, images: np.ndarray, title: str, path: pathlib.Path, cmap: str) -> pathlib.Path:
    count = len(images)
    columns = min(8, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.4 * rows + 0.4), squeeze=False)
    for index, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if index < count:
            axis.imshow(images[index], cmap=cmap, interpolation="nearest")
            axis.set_title(str(index), fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def plot_filters(model, path: str | os.PathLike) -> pathlib.Path | None:
    """The kernels of the first Conv2D layer, one tile per output channel (averaged over input channels)."""
    plt = _pyplot()
    if plt is None:
        return None
    conv = next((layer for layer in model.layers if isinstance(layer, Conv2D)), None)
    if conv is None:
        raise ValueError("plot_filters: the model has no Conv2D layer")
    weights = to_numpy(conv.weight.data).astype(np.float64).mean(axis=1)
    return _tiles(plt, weights, f"first-layer filters {conv!r}", pathlib.Path(path), "RdBu_r")


def plot_feature_maps(model, image, out_dir: str | os.PathLike) -> list[pathlib.Path]:
    """For one input image (C, H, W), the output maps of every Conv2D layer: ``features-<index>.png``."""
    plt = _pyplot()
    if plt is None:
        return []
    x = np.asarray(to_numpy(image))[None]
    paths = []
    with model.evaluating():
        h = model.prepare_input(x)
        model.output_shape(tuple(h.shape))
        for index, layer in enumerate(model.layers):
            h = layer.forward(h)
            if isinstance(layer, Conv2D):
                maps = to_numpy(h)[0].astype(np.float64)
                paths.append(_tiles(plt, maps, f"layer {index} {layer!r}: {maps.shape[0]} feature maps",
                                    pathlib.Path(out_dir) / f"features-{index}.png", "viridis"))
    return paths
