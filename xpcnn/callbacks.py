"""Callbacks for :func:`xpcnn.train.fit`: early stopping, checkpoints, metric logs, a line per epoch.

A callback sees the trainer (``trainer.model``, ``trainer.history``, ``trainer.save(path)``,
``trainer.say(line)``, ``trainer.stop_training``); it imports neither the model nor the loop.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import pathlib
import sys

from ._files import atomic_write_bytes
from .optim import ReduceLROnPlateau

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "MetricsLogger", "EpochPrinter",
           "ReduceLROnPlateau"]   # the last is a schedule of xpcnn.optim that also works as a callback, as in Keras


class Callback:
    """Hooks called by :func:`fit`; set ``trainer.stop_training = True`` to stop after this epoch."""

    def on_train_begin(self, trainer) -> None: ...
    def on_epoch_end(self, trainer, epoch: int, logs: dict[str, float]) -> None: ...
    def on_train_end(self, trainer) -> None: ...


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs; optionally
    restore the best weights."""

    def __init__(self, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0,
                 restore_best_weights: bool = True):
        if patience < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, patience, abs(min_delta)
        self.restore_best_weights = restore_best_weights
        self.sign = 1.0 if "acc" in monitor else -1.0   # accuracy goes up, loss goes down
        self.best, self.best_state, self.wait, self.stopped_epoch = -math.inf, None, 0, None
        self.best_epoch = None

    def on_epoch_end(self, trainer, epoch, logs):
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping: metric {self.monitor!r} is not logged; have {sorted(logs)}")
        score = self.sign * logs[self.monitor]
        if score > self.best + self.min_delta:
            self.best, self.wait, self.best_epoch = score, 0, epoch
            if self.restore_best_weights:
                self.best_state = trainer.model.state_dict()
        else:
            self.wait += 1
            if self.wait > self.patience:
                trainer.stop_training, self.stopped_epoch = True, epoch
                message = (f"early stopping after epoch {epoch}: {self.monitor} has not improved by more than "
                           f"{self.min_delta:g} for {self.wait} epoch{'s' if self.wait > 1 else ''} "
                           f"(best {self.sign * self.best:.4f} at epoch {self.best_epoch})")
                if self.best_state is not None:
                    trainer.model.load_state_dict(self.best_state)
                    message += f"; restored the weights of epoch {self.best_epoch}"
                trainer.say(message)


class ModelCheckpoint(Callback):
    """Save the model, optimizer, schedule, RNG states and history after every epoch (atomically).

    ``path`` may contain ``{epoch}``; otherwise the same file is replaced each epoch, so it always
    holds the last complete epoch.
    """

    def __init__(self, path: str | os.PathLike, metadata: dict | None = None):
        self.path, self.metadata = str(path), metadata or {}

    def on_epoch_end(self, trainer, epoch, logs):
        trainer.save(self.path.format(epoch=epoch), metadata=self.metadata)


class MetricsLogger(Callback):
    """Write the metrics of every epoch so far to a ``.csv`` or ``.json`` file (rewritten atomically)."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        if self.path.suffix not in (".csv", ".json"):
            raise ValueError(f"MetricsLogger: path must end in .csv or .json, got {self.path}")

    def on_epoch_end(self, trainer, epoch, logs):
        if not getattr(trainer, "is_main", True):      # a distributed fit: rank 0 writes
            return
        history = trainer.history.history
        if self.path.suffix == ".json":
            payload = json.dumps(history, indent=1).encode()
        else:
            keys = list(history)
            text = io.StringIO()
            writer = csv.writer(text)
            writer.writerow(keys)
            writer.writerows(zip(*(history[k] for k in keys)))
            payload = text.getvalue().encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, payload)


class EpochPrinter(Callback):
    """Print one line per epoch (for logs and terminals alike)."""

    def __init__(self, stream=None):
        self.stream = stream

    def on_epoch_end(self, trainer, epoch, logs):
        parts = [f"epoch {epoch}/{trainer.epochs}"] + [f"{k} {v:.4f}" for k, v in logs.items()
                                                       if k not in ("epoch", "seconds", "images_per_s", "lr")]
        parts.append(f"{logs['images_per_s']:.0f} img/s")
        print("  ".join(parts), file=self.stream or sys.stdout, flush=True)
