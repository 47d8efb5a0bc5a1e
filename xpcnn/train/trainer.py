"""The training loop, as Chainer's trainer runs it: for each batch one step, then the callbacks.

    trainer = Trainer(model, optimizer, loss, TrainingFeed(data, 64, rng=rng), [History(), EpochPrinter()])
    trainer.run(epochs=5)

A step is the chain rule written out (:func:`train_step`); everything else (validation, the progress bar,
the divergence guard, schedules, checkpoints, the printed line) is a callback, run in order by a
:class:`~xpcnn.callbacks.CallbackList`. The model is anything :class:`~xpcnn.train.protocol.TrainableModel`
names; the loop reads device memory only where :class:`~xpcnn.train.metrics.RunningSums` reads it.
"""
from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any, Callable, Iterable

from .. import checkpoint as ckpt
from ..callbacks import Callback, CallbackList
from .batches import Batch, ProcessGroup, TrainingFeed
from .metrics import RunningSums, accuracy_count, batch_loss
from .protocol import TrainableModel


def train_step(model: TrainableModel, optimizer, loss_fn: Callable, batch: Batch) -> tuple[Any, Any]:
    """One step on ``batch``; returns ``(loss, logits)``, both on the device (nothing is read).

    logits = model(x); (loss, dlogits) = loss_fn(logits, y); dlogits is scaled by the batch's weight
    (a process's share of a distributed global batch); model.backward(dlogits); optimizer.step() (which
    clips the gradients first when the optimizer has ``clip_grad_norm``, and, for a DistributedOptimizer,
    averages them over the processes before that)."""
    logits = model(batch.x)
    loss, dlogits = loss_fn(logits, batch.y)
    if batch.weight != 1:
        dlogits = dlogits * batch.weight
    model.zero_grad()
    model.backward(dlogits, need_dx=False)
    optimizer.step()
    return loss, logits


class History(Callback, Mapping):
    """Per-epoch metrics, a read-only mapping of metric name to list: ``history["loss"]``,
    ``"val_accuracy" in history``, ``dict(history)``, ``len(history)``; also ``history.history`` (the dict
    itself), ``history.epochs`` and ``history.optimizer``, the optimizer that trained (the one fit made
    for a name such as "adam"). As a callback (Keras' History) it appends each epoch's logs."""

    def __init__(self, history: dict[str, list] | None = None):
        self.history: dict[str, list] = {key: list(values) for key, values in (history or {}).items()}
        self.optimizer = None

    def append(self, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def on_epoch_end(self, trainer, epoch, logs):
        self.append(logs)

    @property
    def epochs(self) -> list[int]:
        return list(self.history.get("epoch", []))

    def __getitem__(self, key: str) -> list:
        return self.history[key]

    def __iter__(self):
        return iter(self.history)

    def __len__(self) -> int:
        return len(self.history)

    def __repr__(self) -> str:
        return f"History({self.history})"


class Trainer:
    """One training run: :meth:`run` is the loop; the trainer is also what callbacks see (``trainer.model``,
    ``.optimizer``, ``.history``, ``.epoch``, ``.epochs``, ``.stop_training``, :meth:`say`, :meth:`save`).

    ``loss(logits, y) -> (loss, dlogits)`` (``softmax_cross_entropy`` runs without its device-side label
    check, a read per step on a GPU: check the labels once, as ``fit`` does on the host); ``feed`` a
    :class:`~xpcnn.train.batches.TrainingFeed`; ``callbacks`` run in the order given. ``run`` returns
    ``history``: by default the :class:`History` among the callbacks, or one added after them.
    ``scheduler`` is only saved with checkpoints (a :class:`~xpcnn.callbacks.LRSchedule` steps it);
    ``log_every``: the running figures are read every that many steps and at an epoch's end."""

    def __init__(self, model: TrainableModel, optimizer, loss: Callable, feed: TrainingFeed,
                 callbacks: Iterable[Callback] = (), *, history: History | None = None, scheduler=None,
                 log_every: int = 50, verbose: int = 1, start_epoch: int = 0):
        callbacks = list(callbacks)
        if history is None:     # the History among the callbacks, or one run last
            history = next((c for c in callbacks if isinstance(c, History)), None)
            if history is None:
                history = History()
                callbacks.append(history)
        self.model, self.optimizer, self.loss, self.feed = model, optimizer, batch_loss(loss), feed
        self.callbacks = CallbackList(callbacks)
        self.history = history
        self.scheduler, self.log_every, self.verbose = scheduler, log_every, int(verbose)
        self.epoch, self.epochs, self.stop_training = start_epoch, start_epoch, False

    @property
    def group(self) -> ProcessGroup:
        return self.feed.group

    @property
    def is_main(self) -> bool:
        """False on every process but rank 0 of a distributed fit: they print and write nothing."""
        return self.group.is_main

    def run(self, epochs: int) -> History:
        """Train until epoch ``epochs`` (counted from the start of training) or until a callback stops it."""
        self.epochs = epochs
        self.model.train()
        self.callbacks.on_train_begin(self)
        for epoch in range(self.epoch + 1, epochs + 1):
            self.callbacks.on_epoch_begin(self, epoch)
            logs = self.run_epoch(epoch)
            self.epoch = epoch
            self.callbacks.on_epoch_end(self, epoch, logs)
            self.stop_training = self.group.any(self.stop_training)   # one process stopping stops them all
            if self.stop_training:
                break
        self.callbacks.on_train_end(self)
        return self.history

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the feed; after each step ``on_batch_end(trainer, index, logs)``, where logs holds
        the batch's ``"size"`` and, at each read (every ``log_every`` steps, and the epoch's last, which also
        tells ``"weights_finite"``), the running ``"loss"`` (and ``"accuracy"``). Returns the epoch's logs."""
        sums, last, figures = RunningSums(self.group.sum), len(self.feed) - 1, {}
        started = time.perf_counter()
        for index, batch in enumerate(self.feed):
            loss, logits = train_step(self.model, self.optimizer, self.loss, batch)
            sums.add(loss, accuracy_count(logits, batch.y), int(batch.x.shape[0]))
            logs = {"size": batch.samples}
            if (index + 1) % self.log_every == 0 or index == last:
                figures = sums.read(self.model if index == last else None)
                logs.update(figures)
            self.callbacks.on_batch_end(self, index, logs)
        seconds = time.perf_counter() - started
        figures.pop("weights_finite", None)
        return {"epoch": epoch, **figures, "lr": self.optimizer.lr, "seconds": seconds,
                "images_per_s": self.feed.samples / max(seconds, 1e-9)}

    def say(self, message: str) -> None:
        """Print a line for the user unless the run is silent (verbose=0; callbacks report through this)."""
        if self.verbose:
            print(message, flush=True)

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> pathlib.Path | None:
        """Write a checkpoint of the run (only rank 0 writes in a distributed fit; the others return None)."""
        if not self.is_main:
            return None
        return ckpt.save(self.model, path, optimizer=self.optimizer, scheduler=self.scheduler, epoch=self.epoch,
                         history=self.history.history, data_rng_state=self.feed.rng.bit_generator.state,
                         metadata=metadata)
