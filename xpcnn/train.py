"""The training loop: fit / evaluate / predict, with callbacks and progress.

    history = model.fit(x, y, optimizer=xpcnn.optim.Adam(model.parameters()), epochs=5, batch_size=64,
                        validation_data=(x_test, y_test), seed=0)

Each step is the chain rule written out: logits = model(x); (loss, dlogits) = loss_fn(logits, y);
model.backward(dlogits); optimizer.step().
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import pathlib
import sys
import time
import warnings
from typing import Any, Callable, Iterable

import array_api_compat
import numpy as np

from . import checkpoint as ckpt
from . import functional as F
from .functional._checks import positive_int
from ._files import atomic_write_bytes
from .backend import to_numpy
from .datasets import batches
from .model import Sequential
from .optim import LRScheduler, Optimizer

LOSSES: dict[str, Callable] = {"cross_entropy": F.softmax_cross_entropy, "mse": F.mse_loss}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the model holds the weights of the last complete epoch."""


class History:
    """Per-epoch metrics: ``history["loss"]``, ``history["val_accuracy"]``, ... and ``history.epochs``."""

    def __init__(self, history: dict[str, list] | None = None):
        self.history: dict[str, list] = {key: list(values) for key, values in (history or {}).items()}

    def append(self, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    @property
    def epochs(self) -> list[int]:
        return list(self.history.get("epoch", []))

    def __getitem__(self, key: str) -> list:
        return self.history[key]

    def __repr__(self) -> str:
        return f"History({self.history})"


class Callback:
    """Hooks called by :func:`fit`; set ``trainer.stop_training = True`` to stop after this epoch."""

    def on_train_begin(self, trainer: "Trainer") -> None: ...
    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...


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


class Trainer:
    """The state of one fit: what callbacks see and what a checkpoint stores."""

    def __init__(self, model: Sequential, optimizer: Optimizer, scheduler: LRScheduler | None, loss_fn: Callable,
                 epochs: int, rng: np.random.Generator, history: History):
        self.model, self.optimizer, self.scheduler, self.loss_fn = model, optimizer, scheduler, loss_fn
        self.epochs, self.rng, self.history = epochs, rng, history
        self.epoch = 0
        self.stop_training = False
        self.verbose = 1

    def say(self, message: str) -> None:
        """Print a line for the user unless fit runs with verbose=0 (callbacks report through this)."""
        if self.verbose:
            print(message, flush=True)

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> pathlib.Path:
        return ckpt.save(self.model, path, optimizer=self.optimizer, scheduler=self.scheduler, epoch=self.epoch,
                         history=self.history.history, data_rng_state=self.rng.bit_generator.state,
                         metadata=metadata)


def _loss_function(loss: str | Callable) -> Callable:
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"fit: loss must be one of {', '.join(LOSSES)} or a callable, got {loss!r}")
    return LOSSES[loss]


def _check_data(name: str, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(to_numpy(x)), np.asarray(to_numpy(y))
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"{name}: x must be a non-empty batch of samples, got shape {x.shape}")
    if len(y) != len(x):
        raise ValueError(f"{name}: x has {len(x)} samples but y has {len(y)}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0])
        raise ValueError(f"{name}: x contains NaN or infinity (first in sample {bad})")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{name}: y contains NaN or infinity")
    return x, y


def _check_targets(name: str, model: Sequential, x: np.ndarray, y: np.ndarray, loss_fn: Callable) -> None:
    """Every label in range (or every target of the output's shape) before any work is done."""
    if loss_fn is not F.softmax_cross_entropy:
        return
    classes = model.output_shape(tuple(x.shape))[-1]
    if y.dtype.kind in "iu":
        if y.ndim != 1:
            raise ValueError(f"{name}: integer labels must have shape ({len(x)},), got {y.shape}")
        bad = np.flatnonzero((y < 0) | (y >= classes))
        if bad.size:
            raise ValueError(f"{name}: labels must lie in [0, {classes}) for a model with {classes} outputs; "
                             f"sample {int(bad[0])} has label {int(y[bad[0]])} ({bad.size} out of range)")
    elif y.dtype.kind == "f":
        if y.shape != (len(x), classes):
            raise ValueError(f"{name}: probability targets must have shape ({len(x)}, {classes}), got {y.shape}")
        sums = y.sum(axis=1)
        off = np.flatnonzero((np.abs(sums - 1.0) > 1e-3) | (y < 0).any(axis=1))
        if off.size:
            raise ValueError(f"{name}: probability targets must be non-negative and sum to 1; row {int(off[0])} "
                             f"sums to {sums[off[0]]:.6g}")
    else:
        raise TypeError(f"{name}: labels must be integers or float probabilities, got dtype {y.dtype}")


def _accuracy_count(logits: Any, y: Any) -> Any:
    xp = array_api_compat.array_namespace(logits)
    if y.ndim != 1 or logits.ndim != 2:
        return None
    return xp.sum(xp.astype(xp.argmax(logits, axis=1) == xp.astype(y, xp.int64), xp.int64))


def _progress(enabled: bool, total: int, description: str):
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=description, unit="img", leave=False, dynamic_ncols=True)


def fit(model: Sequential, x, y, *, optimizer: Optimizer, loss: str | Callable = "cross_entropy", epochs: int = 1,
        batch_size: int = 32, validation_data=None, shuffle: bool = True, seed: int | None = None,
        callbacks: Iterable[Callback] = (), progress: bool = True, scheduler: LRScheduler | None = None,
        augment: Callable | None = None, resume: "ckpt.Checkpoint | str | os.PathLike | None" = None,
        verbose: int = 1) -> History:
    """Train ``model`` on host arrays ``x`` (N, C, H, W) and ``y`` (labels (N,) or targets).

    ``verbose=1`` (the default) prints one line per epoch (and callbacks such as EarlyStopping say
    what they did), with a progress bar when stderr is a terminal and ``progress`` is true;
    ``verbose=0`` prints nothing.

    ``epochs`` counts from the start of training, so resuming a checkpoint saved after epoch 2
    with ``epochs=4`` trains epochs 3 and 4. ``augment(x_batch, rng)`` transforms host batches.
    A NaN or infinite loss stops training with :class:`TrainingDiverged`, the model restored to
    the end of the last complete epoch.
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"fit: optimizer must be an xpcnn.optim optimizer, got {type(optimizer).__name__}")
    positive_int("fit", "epochs", epochs)
    if verbose not in (0, 1, True, False):
        raise ValueError(f"fit: verbose must be 0 (silent) or 1 (a line per epoch), got {verbose!r}")
    loss_fn = _loss_function(loss)
    x, y = _check_data("fit", x, y)
    _check_targets("fit", model, x, y, loss_fn)
    if validation_data is not None:
        validation_data = _check_data("fit (validation_data)", *validation_data)
        _check_targets("fit (validation_data)", model, *validation_data, loss_fn)
    rng = np.random.default_rng(seed)
    history = History()
    start_epoch = 0
    if resume is not None:
        start_epoch, history = _resume(model, optimizer, scheduler, rng, resume)
    trainer = Trainer(model, optimizer, scheduler, loss_fn, epochs, rng, history)
    trainer.epoch = start_epoch
    trainer.verbose = int(verbose)
    callbacks = list(callbacks)
    if verbose and not any(isinstance(callback, EpochPrinter) for callback in callbacks):
        callbacks.insert(0, EpochPrinter())
    for callback in callbacks:
        callback.on_train_begin(trainer)
    model.train()
    for epoch in range(start_epoch + 1, epochs + 1):
        if optimizer.lr == 0:
            warnings.warn(f"fit: epoch {epoch} runs at learning rate 0 (the schedule has reached its end), so the "
                          "weights will not change; lengthen the schedule (e.g. CosineAnnealingLR's T_max)",
                          stacklevel=2)
        good_state = model.state_dict()
        good_optimizer = optimizer.state_dict()
        bar = _progress(progress and verbose, len(x), f"epoch {epoch}/{epochs}")
        started = time.perf_counter()
        total_loss, total_correct, seen, counted = 0.0, 0, 0, True
        for index, (xb, yb) in enumerate(batches(x, y, batch_size, backend=model.backend, dtype=model.dtype,
                                                  shuffle=shuffle, rng=rng, augment=augment)):
            logits = model(xb)
            batch_loss, dlogits = loss_fn(logits, yb)
            value = float(batch_loss)
            if not math.isfinite(value):
                model.load_state_dict(good_state)
                optimizer.load_state_dict(good_optimizer)
                if bar is not None:
                    bar.close()
                raise TrainingDiverged(
                    f"fit: the loss became {value} at epoch {epoch}, batch {index + 1}; the model was restored to "
                    f"the end of epoch {epoch - 1}. Try a lower learning rate (now {optimizer.lr:g}).")
            model.zero_grad()
            model.backward(dlogits, input_grad=False)
            optimizer.step()
            n = int(xb.shape[0])
            correct = _accuracy_count(logits, yb)
            counted = counted and correct is not None
            total_loss += value * n
            total_correct += int(correct) if correct is not None else 0
            seen += n
            if bar is not None:  # tqdm shows the rate itself, in images per second
                bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{total_correct / seen:.3f}" if counted else "-")
                bar.update(n)
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - started
        logs = {"epoch": epoch, "loss": total_loss / seen}
        if counted:
            logs["accuracy"] = total_correct / seen
        if validation_data is not None:
            scores = evaluate(model, *validation_data, loss=loss_fn, batch_size=max(batch_size, 256))
            logs.update({f"val_{k}": v for k, v in scores.items()})
        logs.update(lr=optimizer.lr, seconds=seconds, images_per_s=seen / max(seconds, 1e-9))
        if scheduler is not None:
            scheduler.step()
        trainer.epoch = epoch
        history.append(logs)
        for callback in callbacks:
            callback.on_epoch_end(trainer, epoch, logs)
        if trainer.stop_training:
            break
    for callback in callbacks:
        callback.on_train_end(trainer)
    return history


def _resume(model, optimizer, scheduler, rng, resume):
    checkpoint = resume if isinstance(resume, ckpt.Checkpoint) else ckpt.load_checkpoint(resume, model.backend)
    model.load_state_dict(checkpoint.model.state_dict())
    model.rng.bit_generator.state = checkpoint.model.rng.bit_generator.state
    if checkpoint.optimizer is not None:
        optimizer.load_state_dict(checkpoint.optimizer.state_dict())
    if scheduler is not None and checkpoint.scheduler is not None:
        scheduler.load_state_dict(checkpoint.scheduler.state_dict())
    if checkpoint.data_rng_state is not None:
        rng.bit_generator.state = checkpoint.data_rng_state
    return checkpoint.epoch, History(checkpoint.history)


def evaluate(model: Sequential, x, y, *, loss: str | Callable = "cross_entropy", batch_size: int = 256) -> dict:
    """Mean loss (and accuracy, for class labels) over ``x``, in evaluation mode."""
    loss_fn = _loss_function(loss)
    x, y = _check_data("evaluate", x, y)
    _check_targets("evaluate", model, x, y, loss_fn)
    total_loss, total_correct, counted = 0.0, 0, True
    with model.evaluating():
        for xb, yb in batches(x, y, batch_size, backend=model.backend, dtype=model.dtype):
            logits = model(xb)
            batch_loss, _ = loss_fn(logits, yb)
            total_loss += float(batch_loss) * int(xb.shape[0])
            correct = _accuracy_count(logits, yb)
            counted = counted and correct is not None
            total_correct += int(correct) if correct is not None else 0
    scores = {"loss": total_loss / len(x)}
    if counted:
        scores["accuracy"] = total_correct / len(x)
    return scores


def predict(model: Sequential, x, *, batch_size: int = 256) -> np.ndarray:
    """The model's outputs (logits for a classifier) for ``x`` as a host NumPy array, in evaluation mode."""
    x = np.asarray(to_numpy(x))
    with model.evaluating():
        outputs = [to_numpy(model(xb)) for xb, _ in batches(x, None, batch_size, backend=model.backend,
                                                             dtype=model.dtype)]
    return np.concatenate(outputs, axis=0)
