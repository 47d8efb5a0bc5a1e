"""PNG pictures of training (matplotlib is optional: without it, nothing is drawn and None is returned)."""
from __future__ import annotations

import os
import pathlib


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_history(history: dict, path: str | os.PathLike) -> pathlib.Path | None:
    """Loss and accuracy per epoch (train and validation) side by side, written to ``path``."""
    plt = _pyplot()
    if plt is None:
        return None
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
    path = pathlib.Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_lines(series: dict, path: str | os.PathLike, xlabel: str, ylabel: str, log_x: bool = False,
               log_y: bool = False) -> pathlib.Path | None:
    """One line per ``label: (x, y)`` in ``series``, written to ``path`` (7x4 inches, 100 dpi)."""
    plt = _pyplot()
    if plt is None:
        return None
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
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
