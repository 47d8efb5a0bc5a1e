"""The callbacks :func:`xpcnn.train.fit` adds itself, in the order it runs them: validation, the divergence
guard, the progress bar and the warning for a learning rate of 0 (then the schedule, the History, the
printed line and the user's callbacks, from :mod:`xpcnn.callbacks`)."""
from __future__ import annotations

import math
import sys
import warnings
from typing import Callable

from ..backend import device_copy
from ..callbacks import Callback
from .metrics import evaluate_feed


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the model holds the weights of the last complete epoch."""


class Validation(Callback):
    """Add ``val_loss`` (and ``val_accuracy``) over ``data`` (a DeviceData or HostFeed) to each epoch's logs,
    right after the training figures (the columns of a metrics file: epoch, loss, accuracy, val_loss, ...)."""

    def __init__(self, data, loss_fn: Callable, batch_size: int):
        self.data, self.loss_fn, self.batch_size = data, loss_fn, batch_size

    def on_epoch_end(self, trainer, epoch, logs):
        scores = evaluate_feed(trainer.model, self.data, self.loss_fn, self.batch_size)
        after = {key: logs.pop(key) for key in list(logs) if key not in ("epoch", "loss", "accuracy")}
        logs.update({f"val_{key}": value for key, value in scores.items()}, **after)


class DivergenceGuard(Callback):
    """Stop with :class:`TrainingDiverged` when a read finds the loss NaN or infinite (or, at an epoch's end,
    the weights), after putting back the model and optimizer as the epoch began: a device-side copy taken
    then, so no host copy per epoch. It runs before any callback sees or saves the epoch."""

    def __init__(self, log_every: int):
        self.log_every, self.snapshot, self.epoch = log_every, None, 0

    def on_epoch_begin(self, trainer, epoch):
        self.epoch = epoch
        buffers = [(owner, attr, device_copy(getattr(owner, attr))) for _, owner, attr in trainer.model.buffer_slots()]
        self.snapshot = buffers, trainer.optimizer.snapshot()

    def on_batch_end(self, trainer, batch, logs):
        if "loss" not in logs or (math.isfinite(logs["loss"]) and logs.get("weights_finite", True)):
            return
        buffers, optimizer_snapshot = self.snapshot
        for layer, name, value in buffers:
            setattr(layer, name, value)
        trainer.optimizer.restore(optimizer_snapshot)
        trainer.model.zero_grad()
        epoch = self.epoch
        what = (f"the loss became {logs['loss']}" if not math.isfinite(logs["loss"])
                else "the weights became NaN or infinite")
        every = "every step" if self.log_every == 1 else f"every {self.log_every} steps"
        before = f"the end of epoch {epoch - 1}" if epoch > 1 else "its state before training"
        raise TrainingDiverged(f"fit: {what} by epoch {epoch}, batch {batch + 1} (losses are read {every} and at "
                               f"each epoch's end); the model was restored to {before}. Try a lower learning "
                               f"rate (now {trainer.optimizer.lr:g}).")


class ProgressBar(Callback):
    """A tqdm bar per epoch, in images, when stderr is a terminal and tqdm is installed; it shows the running
    loss and accuracy at each read."""

    def __init__(self):
        self.bar = None

    def on_epoch_begin(self, trainer, epoch):
        self.on_epoch_end(trainer, epoch, {})
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=trainer.feed.samples, desc=f"epoch {epoch}/{trainer.epochs}", unit="img",
                            leave=False, dynamic_ncols=True)

    def on_batch_end(self, trainer, batch, logs):
        if self.bar is None:
            return
        self.bar.update(logs["size"])
        if "loss" in logs:                  # tqdm shows the rate itself, in images per second
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", acc=f"{logs['accuracy']:.3f}" if "accuracy" in logs else "-")

    def on_epoch_end(self, trainer, epoch, logs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ZeroRateWarning(Callback):
    """Warn when an epoch starts at learning rate 0 (a schedule that ended early): its weights cannot change."""

    def on_epoch_begin(self, trainer, epoch):
        if trainer.optimizer.lr == 0:
            warnings.warn(f"fit: epoch {epoch} runs at learning rate 0 (the schedule has reached its end), so the "
                          "weights will not change; lengthen the schedule (e.g. CosineAnnealingLR's T_max)",
                          stacklevel=7)           # the line that called model.fit
