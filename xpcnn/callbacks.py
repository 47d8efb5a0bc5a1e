"""Callbacks for :func:`xpcnn.train.fit` and :class:`xpcnn.train.Trainer`, run in order by a
:class:`CallbackList` as in Keras: early stopping, checkpoints, metric logs, a line per epoch, a
learning-rate schedule.

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
from .checkpoint import check_writable
from .checks import integral, monitor_mode
from .cores import CoreShare
from .optim import LRScheduler, ReduceLROnPlateau

__all__ = ["Callback", "CallbackList", "EarlyStopping", "ModelCheckpoint", "MetricsLogger", "EpochPrinter",
           "LRSchedule", "ShareCores"]


class Callback:
    """Hooks called by the trainer; set ``trainer.stop_training = True`` to stop after this epoch.

    ``on_batch_end``'s logs hold the batch's ``"size"`` and, at the steps where the running figures are
    read (every ``log_every`` steps and an epoch's last), ``"loss"`` (and ``"accuracy"``); ``on_epoch_end``'s
    are the epoch's metrics, which a callback may add to (validation does)."""

    def on_train_begin(self, trainer) -> None: ...
    def on_epoch_begin(self, trainer, epoch: int) -> None: ...
    def on_batch_end(self, trainer, batch: int, logs: dict[str, float]) -> None: ...
    def on_epoch_end(self, trainer, epoch: int, logs: dict[str, float]) -> None: ...
    def on_train_end(self, trainer) -> None: ...


class CallbackList(Callback):
    """Callbacks called in order at each hook (Keras' CallbackList)."""

    def __init__(self, callbacks=()):
        self.callbacks = list(callbacks)

    def on_train_begin(self, trainer):
        for callback in self.callbacks:
            callback.on_train_begin(trainer)

    def on_epoch_begin(self, trainer, epoch):
        for callback in self.callbacks:
            callback.on_epoch_begin(trainer, epoch)

    def on_batch_end(self, trainer, batch, logs):
        for callback in self.callbacks:
            callback.on_batch_end(trainer, batch, logs)

    def on_epoch_end(self, trainer, epoch, logs):
        for callback in self.callbacks:
            callback.on_epoch_end(trainer, epoch, logs)

    def on_train_end(self, trainer):
        for callback in self.callbacks:
            callback.on_train_end(trainer)


class LRSchedule(Callback):
    """Step an :mod:`xpcnn.optim` schedule after each epoch: a ReduceLROnPlateau with the epoch's
    ``logs[monitor]``, any other with no argument (``fit(scheduler=...)`` adds one of these)."""

    def __init__(self, scheduler: LRScheduler):
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(f"LRSchedule: expected an xpcnn.optim schedule, got {type(scheduler).__name__}")
        self.scheduler = scheduler
        self.monitor = scheduler.monitor if isinstance(scheduler, ReduceLROnPlateau) else None

    def on_epoch_end(self, trainer, epoch, logs):
        if self.monitor is None:
            self.scheduler.step()
            return
        if self.monitor not in logs:
            raise ValueError(f"ReduceLROnPlateau: the epoch's logs have no {self.monitor!r} (they have "
                             f"{', '.join(sorted(logs))}); give fit validation data or choose monitor='loss'")
        self.scheduler.step(logs[self.monitor])


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs in a row
    (Keras' rule: ``patience=1`` stops after the first epoch without improvement; 0 does the same).

    ``mode``: "min" (a loss), "max" (an accuracy) or "auto" (from the name: "acc" in it means max), the
    rule :func:`xpcnn.checks.monitor_mode` gives every callback. ``restore_best_weights``: when it stops,
    the model gets the best epoch's weights back at the end of training (Keras 3 does the same), so a
    :class:`ModelCheckpoint` written at an epoch's end always holds that epoch's true weights, optimizer
    state and epoch number; only the model handed back holds the best weights.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0,
                 restore_best_weights: bool = True, mode: str = "auto"):
        if integral(patience) is None or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an int >= 0, got {patience!r}")
        self.monitor, self.patience, self.min_delta = monitor, integral(patience), abs(min_delta)
        self.restore_best_weights = restore_best_weights
        self.mode = monitor_mode("EarlyStopping", monitor, mode)
        self.sign = 1.0 if self.mode == "max" else -1.0
        self.on_train_begin(None)

    def on_train_begin(self, trainer):
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
            return
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            trainer.stop_training, self.stopped_epoch = True, epoch
            trainer.say(f"early stopping after epoch {epoch}: {self.monitor} has not improved by more than "
                        f"{self.min_delta:g} for {self.wait} epoch{'s' if self.wait > 1 else ''} "
                        f"(best {self.sign * self.best:.4f} at epoch {self.best_epoch})")

    def on_train_end(self, trainer):
        if self.stopped_epoch is not None and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)
            trainer.say(f"early stopping: restored the weights of epoch {self.best_epoch}")


class ModelCheckpoint(Callback):
    """Save the model, optimizer, schedule, RNG states and history after every epoch (atomically).

    ``path`` may contain ``{epoch}``; otherwise the same file is replaced each epoch, so it always
    holds the last complete epoch. With ``monitor`` (Keras' ``save_best_only``), only an epoch whose
    ``logs[monitor]`` is the best so far is saved; ``mode`` as EarlyStopping's (:func:`~xpcnn.checks.monitor_mode`).
    """

    def __init__(self, path: str | os.PathLike, metadata: dict | None = None, monitor: str | None = None,
                 mode: str = "auto"):
        self.path, self.metadata, self.monitor = str(path), metadata or {}, monitor
        self.sign = 1.0 if monitor_mode("ModelCheckpoint", monitor, mode) == "max" else -1.0
        self.best = -math.inf

    def on_train_begin(self, trainer):
        # a resumed run starts from the best of the epochs it resumes (so it does not overwrite a better file)
        earlier = trainer.history.history.get(self.monitor, []) if self.monitor is not None else []
        self.best = max((self.sign * value for value in earlier), default=-math.inf)
        if trainer.is_main:      # an unwritable folder fails now, not after the first epoch
            check_writable(self.path.format(epoch=1), "ModelCheckpoint")

    def on_epoch_end(self, trainer, epoch, logs):
        if self.monitor is not None:
            if self.monitor not in logs:
                raise ValueError(f"ModelCheckpoint: metric {self.monitor!r} is not logged; have {sorted(logs)}")
            if self.sign * logs[self.monitor] <= self.best:
                return
            self.best = self.sign * logs[self.monitor]
        trainer.save(self.path.format(epoch=epoch), metadata=self.metadata)


class MetricsLogger(Callback):
    """Write the metrics of every epoch so far to a ``.csv`` or ``.json`` file (rewritten atomically)."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        if self.path.suffix not in (".csv", ".json"):
            raise ValueError(f"MetricsLogger: path must end in .csv or .json, got {self.path}")

    def on_epoch_end(self, trainer, epoch, logs):
        if not trainer.is_main:      # a distributed fit: rank 0 writes
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


class ShareCores(Callback):
    """Fit the BLAS threads to the cores other programs leave free, measured over each epoch
    (:class:`xpcnn.cores.CoreShare`): on a machine shared with a busy process, fewer threads that do not
    wait for a descheduled partner train faster than one per core. Says so when the count changes.

    ``share``: a CoreShare whose window began earlier (the CLI starts one before loading the data), so the
    first decision, at the start of training, already rests on a measurement."""

    def __init__(self, share: CoreShare | None = None):
        self.share = share if share is not None else CoreShare()

    def _adapt(self, trainer) -> None:
        before = self.share.threads
        threads = self.share.adapt()
        if threads is not None and threads != before and (before is not None or threads < self.share.most):
            busy = self.share.cores - threads
            trainer.say(f"cores: {busy} of {self.share.cores} busy with other programs; "
                        f"training with {threads} BLAS thread{'s' if threads != 1 else ''}")

    def on_train_begin(self, trainer):
        self._adapt(trainer)

    def on_epoch_end(self, trainer, epoch, logs):
        self._adapt(trainer)
