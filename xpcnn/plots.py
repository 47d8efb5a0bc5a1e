"""Pictures (PNG, drawn with matplotlib): training curves, line charts, a model's filters and feature maps.

Each function writes one PNG (or, for feature maps, one per conv layer) and returns its path.
"""
from __future__ import annotations

import math
import os
import pathlib

import numpy as np

from .backend import to_numpy
from .layers import Conv2D

__all__ = ["plot_history", "plot_lines", "plot_filters", "plot_feature_maps"]


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")            # files only: no window, no display needed
    import matplotlib.pyplot as plt
    return plt


def _save(plt, figure, path: str | os.PathLike, dpi: int) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


def plot_history(history: dict, path: str | os.PathLike) -> pathlib.Path:
    """Loss and accuracy per epoch (train and validation) side by side, written to ``path``."""
    plt = _pyplot()
    epochs = history.get("epoch") or list(range(1, len(history.get("loss", [])) + 1))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in ((left, "loss"), (right, "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            if f"{prefix}{metric}" in history:
                axis.plot(epochs, history[f"{prefix}{metric}"], style, label=f"{'validation' if prefix else 'train'}")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return _save(plt, figure, path, 100)


def plot_lines(series: dict, path: str | os.PathLike, xlabel: str, ylabel: str, log_x: bool = False,
               log_y: bool = False) -> pathlib.Path:
    """One line per ``label: (x, y)`` in ``series``, written to ``path`` (7x4 inches, 100 dpi)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    for label, (x, y) in series.items():
        axis.plot(x, y, "-o" if len(x) < 12 else "-", label=label, markersize=4)
    if log_x:
        axis.set_xscale("log", base=2)
    if log_y:
        axis.set_yscale("log")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return _save(plt, figure, path, 100)


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
    return _save(plt, figure, path, 80)


def plot_filters(model, path: str | os.PathLike) -> pathlib.Path:
    """The kernels of the first Conv2D layer, one tile per output channel (averaged over input channels)."""
    conv = next((layer for layer in model.layers if isinstance(layer, Conv2D)), None)
    if conv is None:
        raise ValueError("plot_filters: the model has no Conv2D layer")
    weights = to_numpy(conv.weight.data).astype(np.float64).mean(axis=1)
    return _tiles(_pyplot(), weights, f"first-layer filters {conv!r}", pathlib.Path(path), "RdBu_r")


def plot_feature_maps(model, image, out_dir: str | os.PathLike) -> list[pathlib.Path]:
    """For one input image (C, H, W), the output maps of every Conv2D layer: ``features-<index>.png``."""
    plt = _pyplot()
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
