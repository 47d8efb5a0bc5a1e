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


def plot_history(history: dict, path: str | os.PathLike, title: str | None = None,
                 validation_label: str = "validation") -> pathlib.Path:
    """Loss and accuracy per epoch (train and ``val_*``) side by side, written to ``path``. ``title`` heads the
    figure ("learning curves" by default); ``validation_label`` names the ``val_*`` lines by what that data is
    (``"test"`` when the test set was passed as validation data, as ``xpcnn train`` does)."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    epochs = history.get("epoch") or list(range(1, len(history.get("loss", [])) + 1))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in ((left, "loss"), (right, "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            if f"{prefix}{metric}" in history:
                axis.plot(epochs, history[f"{prefix}{metric}"], style, label=validation_label if prefix else "train")
        axis.set_title(f"{metric} per epoch", fontsize=10)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))     # epochs are whole numbers
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title or "learning curves")
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


#: Tiles of filters and feature maps: inches per tile, the colour bar's width and the title band, at 100 dpi.
TILE_INCHES, COLORBAR_INCHES, TITLE_INCHES, TILE_DPI = 2.0, 1.0, 0.6, 100


def _tiles(plt, images: np.ndarray, title: str, path: pathlib.Path, cmap: str, centred: bool) -> pathlib.Path:
    """One tile per image on one colour scale (symmetric about 0 when ``centred``), with a colour bar."""
    count = len(images)
    columns = min(8, count)
    rows = math.ceil(count / columns)
    width, height = TILE_INCHES * columns + COLORBAR_INCHES, TILE_INCHES * rows + TITLE_INCHES
    figure, axes = plt.subplots(rows, columns, figsize=(width, height), squeeze=False)
    low, high = float(np.min(images)), float(np.max(images))
    if centred:
        low, high = -max(abs(low), abs(high)), max(abs(low), abs(high))
    if low == high:
        low, high = low - 1.0, high + 1.0                 # a constant picture still gets a readable scale
    shown = None
    for index, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if index < count:
            shown = axis.imshow(images[index], cmap=cmap, interpolation="nearest", vmin=low, vmax=high)
            axis.set_title(str(index), fontsize=9)
    figure.suptitle(title, fontsize=11)
    figure.subplots_adjust(left=0.02, right=1 - COLORBAR_INCHES / width, top=1 - TITLE_INCHES / height, bottom=0.02)
    bar = figure.add_axes((1 - 0.75 * COLORBAR_INCHES / width, 0.1, 0.2 * COLORBAR_INCHES / width, 0.75))
    figure.colorbar(shown, cax=bar)
    return _save(plt, figure, path, TILE_DPI)


def plot_filters(model, path: str | os.PathLike) -> pathlib.Path:
    """The kernels of the first Conv2D layer, one tile per output channel (averaged over input channels)."""
    conv = next((layer for layer in model.layers if isinstance(layer, Conv2D)), None)
    if conv is None:
        raise ValueError("plot_filters: the model has no Conv2D layer")
    weights = to_numpy(conv.weight.data).astype(np.float64).mean(axis=1)
    return _tiles(_pyplot(), weights, f"first-layer filters {conv!r}", pathlib.Path(path), "RdBu_r", centred=True)


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
                                    pathlib.Path(out_dir) / f"features-{index}.png", "viridis", centred=False))
    return paths
