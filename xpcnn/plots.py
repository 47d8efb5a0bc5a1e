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
