"""The training loop: fit / evaluate / predict, with callbacks and progress.

It works on any model with ``layers``, ``__call__``/``backward``, ``zero_grad``, ``state_dict``/
``load_state_dict``, ``rng``, ``backend``, ``dtype`` and train/eval modes (a Sequential); it never imports
:mod:`xpcnn.model`. Resuming reads a checkpoint's plain state (:func:`xpcnn.checkpoint.read`).

    history = model.fit(x, y, optimizer=xpcnn.optim.Adam(model.parameters()), epochs=5, batch_size=64,
                        validation_data=(x_test, y_test), seed=0)

Each step is the chain rule written out: logits = model(x); (loss, dlogits) = loss_fn(logits, y);
model.backward(dlogits); optimizer.step().
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import pathlib
import sys
import time
import warnings
from collections.abc import Mapping
from typing import Any, Callable, Iterable

import array_api_compat
import numpy as np

from .. import checkpoint as ckpt
from .. import distributed as D
from .. import functional as F
from ..backend import device_copy, to_numpy
from ..callbacks import Callback, EpochPrinter
from ..checks import integral, positive_int
from ..optim import (OPTIMIZERS, CosineAnnealingLR, LRScheduler, Optimizer, ReduceLROnPlateau, StepLR,
                     clip_grad_norm as clip_gradients)
from .batches import batches, bounds, feed

LOSSES: dict[str, Callable] = {"cross_entropy": F.softmax_cross_entropy, "mse": F.mse_loss}

# fit(scheduler=NAME): a schedule of xpcnn.optim for (optimizer, epochs, has validation data)
SCHEDULES: dict[str, Callable] = {
    "cosine": lambda optimizer, epochs, validated: CosineAnnealingLR(optimizer, T_max=epochs),
    "step": lambda optimizer, epochs, validated: StepLR(optimizer, step_size=max(1, epochs // 3)),
    "plateau": lambda optimizer, epochs, validated: ReduceLROnPlateau(
        optimizer, monitor="val_loss" if validated else "loss"),
}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the model holds the weights of the last complete epoch."""


class History(Mapping):
    """Per-epoch metrics, a read-only mapping of metric name to list: ``history["loss"]``,
    ``"val_accuracy" in history``, ``dict(history)``, ``len(history)``; also ``history.history`` (the dict
    itself), ``history.epochs`` and ``history.optimizer``, the optimizer that trained (the one fit made
    for a name such as "adam")."""

    def __init__(self, history: dict[str, list] | None = None):
        self.history: dict[str, list] = {key: list(values) for key, values in (history or {}).items()}
        self.optimizer = None

    def append(self, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

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
    """The state of one fit: what callbacks see and what a checkpoint stores."""

    def __init__(self, model, optimizer: Optimizer, scheduler: LRScheduler | None, loss_fn: Callable,
                 epochs: int, rng: np.random.Generator, history: History):
        self.model, self.optimizer, self.scheduler, self.loss_fn = model, optimizer, scheduler, loss_fn
        self.epochs, self.rng, self.history = epochs, rng, history
        self.epoch = 0
        self.stop_training = False
        self.verbose = 1
        self.is_main = True        # False on every process but rank 0 of a distributed fit: they write nothing

    def say(self, message: str) -> None:
        """Print a line for the user unless fit runs with verbose=0 (callbacks report through this)."""
        if self.verbose:
            print(message, flush=True)

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> pathlib.Path | None:
        """Write a checkpoint of the run (only rank 0 writes in a distributed fit; the others return None)."""
        if not self.is_main:
            return None
        return ckpt.save(self.model, path, optimizer=self.optimizer, scheduler=self.scheduler, epoch=self.epoch,
                         history=self.history.history, data_rng_state=self.rng.bit_generator.state,
                         metadata=metadata)


def _loss_function(loss: str | Callable) -> Callable:
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"fit: loss must be one of {', '.join(LOSSES)} or a callable, got {loss!r}")
    return LOSSES[loss]


def _batch_loss(loss_fn: Callable) -> Callable:
    """The loss as the loop calls it per batch: the label values were checked once on the host
    (_check_targets), so cross-entropy skips its device-side check (no device read per step)."""
    if loss_fn is F.softmax_cross_entropy:
        return functools.partial(F.softmax_cross_entropy, check_labels=False)
    return loss_fn


def _check_x(name: str, model, x: Any) -> np.ndarray:
    """x on the host, refused as ``model(x)`` refuses it: a dtype other than float32/float64 (uint8 images,
    bool, float16, complex) is an error, not a silent cast."""
    x = np.asarray(to_numpy(x))
    if x.dtype.kind != "f" or x.dtype.itemsize < 4:
        raise TypeError(f"{name}: x must have dtype float32 or float64 (the model computes in {model.dtype}), "
                        f"got dtype {x.dtype}; convert images with x.astype('float32') / 255")
    return x


def _check_data(name: str, model, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _check_x(name, model, x), np.asarray(to_numpy(y))
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"{name}: x must be a non-empty batch of samples, got shape {x.shape}")
    if y.ndim == 0:
        raise TypeError(f"{name}: y must be an array of labels or targets, one per sample, got {y.tolist()!r}")
    if len(y) != len(x):
        raise ValueError(f"{name}: x has {len(x)} samples but y has {len(y)}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0])
        raise ValueError(f"{name}: x contains NaN or infinity (first in sample {bad})")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{name}: y contains NaN or infinity")
    return x, y


def _check_targets(name: str, model, x: np.ndarray, y: np.ndarray, loss_fn: Callable) -> None:
    """Every label in range (or every target of the output's shape) before any work is done: a built-in
    loss's targets are checked here, before the first batch changes anything (BatchNorm's statistics)."""
    if loss_fn is F.mse_loss:
        out = (len(x),) + tuple(model.output_shape(tuple(x.shape)))[1:]
        if y.dtype.kind != "f" or y.shape != out:
            raise ValueError(f"{name}: loss 'mse' needs float targets of the output's shape {out}, "
                             f"got dtype {y.dtype} and shape {y.shape}")
        return
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


def fit(model, x, y, *, optimizer: Optimizer | str, lr: float | None = None, loss: str | Callable = "cross_entropy",
        epochs: int = 1, batch_size: int = 32, validation_data=None, validation_split: float | None = None,
        shuffle: bool = True, seed: int | None = None, callbacks: Iterable[Callback] = (), progress: bool = True,
        scheduler: LRScheduler | None = None, clip_grad_norm: float | None = None, augment: Callable | None = None,
        resume: "ckpt.Checkpoint | str | os.PathLike | None" = None, verbose: int = 1,
        log_every: int = 50, distributed: bool = False) -> History:
    """Train ``model`` on host arrays ``x`` (N, C, H, W) and ``y`` (labels (N,) or targets).

    ``x`` must be float32 or float64, as ``model(x)`` demands (fit, evaluate and predict refuse uint8,
    bool, float16 and complex rather than cast them: ``x.astype("float32") / 255`` for images); a lazy
    model given ``(N, H, W, 1|3)`` data warns that it looks like NHWC. ``y``: integer labels ``(N,)`` or
    probability rows ``(N, K)`` for ``loss="cross_entropy"``; float targets of the output's shape for
    ``loss="mse"``; all checked on the host before the first batch. ``loss`` may also be a function
    ``loss(logits, y_batch) -> (loss, dlogits)``: a 0-d array of the mean loss over the batch and its
    gradient with respect to ``logits`` (same shape), both on the model's backend.

    ``optimizer`` is an :mod:`xpcnn.optim` optimizer over this model's parameters (all of them, or a subset
    when some are frozen; another model's are refused), or a name (``"sgd"``, ``"adam"``, ...) with ``lr``
    (default: the optimizer's own default; 0.01 for SGD): a fresh one over ``model.parameters()``,
    found afterwards as ``history.optimizer``. ``validation_split=0.1`` holds out the last tenth of
    ``x``/``y`` (before any shuffling, as Keras does) as validation data. ``clip_grad_norm=c`` scales
    each step's gradients to a global norm of at most c, on the device. ``scheduler`` is a schedule of
    :mod:`xpcnn.optim` over that optimizer, or a name: ``"cosine"`` (CosineAnnealingLR, ``T_max=epochs``),
    ``"step"`` (StepLR, ``step_size=max(1, epochs // 3)``, ``gamma=0.1``) or ``"plateau"``
    (ReduceLROnPlateau on ``"val_loss"``, or ``"loss"`` without validation data). A ``scheduler`` that
    needs a metric is stepped with the epoch's ``logs[monitor]``.

    ``seed`` (an int >= 0) fixes the shuffling and augmentation; without it they are drawn from the
    model's own generator, so ``Sequential(..., seed=0)`` followed by ``fit`` repeats exactly.
    ``batch_size``, ``epochs`` and ``log_every`` are positive ints (NumPy integers too). ``callbacks`` is a
    list of :class:`~xpcnn.callbacks.Callback` objects. Returns a :class:`History`, a read-only mapping of
    metric name to per-epoch list.

    ``distributed=True`` (or a :class:`~xpcnn.distributed.DistributedOptimizer`), in a program started by
    ``mpiexec``: data-parallel training. ``batch_size`` is the global batch; each process takes its slice
    (:func:`xpcnn.distributed.local_slice`), its loss gradient is weighted by its share of the batch, the
    gradients are averaged over the processes before each step, and rank 0's weights, optimizer state and
    seed start every process. The logs are the global batch's on every process (so callbacks decide
    alike); only rank 0 prints, shows progress and writes files. An error on one process ends all of them.

    ``verbose=1`` (the default) prints one line per epoch (and callbacks such as EarlyStopping say
    what they did), with a progress bar when stderr is a terminal and ``progress`` is true;
    ``verbose=0`` prints nothing.

    ``epochs`` counts from the start of training, so resuming a checkpoint saved after epoch 2
    with ``epochs=4`` trains epochs 3 and 4. ``augment`` is a function ``augment(x_batch, rng)`` of host
    batches, or a transform such as :class:`xpcnn.datasets.RandomShift` that also runs on the device.

    Data: a training set under ``xpcnn.config``'s ``device_data_bytes`` (1 GiB) is copied to the model's
    device once and batches are gathered there (a step copies nothing from the host); a larger one, or
    one with a host-only ``augment`` function, is batched on the host by a thread running
    ``prefetch_batches`` ahead. Both give the same batches (see :mod:`xpcnn.train.batches`).

    No training step reads device memory: the running loss and correct count stay on the device
    and are read together, in one transfer, every ``log_every`` steps and at the end of each epoch
    (the progress bar advances every step and refreshes its figures at those reads). A NaN or
    infinite loss found at a read stops training with :class:`TrainingDiverged`, the model and
    optimizer restored from a device-side copy taken at the start of the epoch; the read at an epoch's
    end also tells whether every parameter and buffer is finite (the last step's update comes after its
    loss), so a divergence there stops training before any callback runs or saves: a
    :class:`~xpcnn.callbacks.ModelCheckpoint` keeps the last good epoch.

    Modes: a fit that completes leaves the model in training mode (as Keras and PyTorch loops do); a fit
    that fails (bad arguments, a divergence, Ctrl-C) leaves it in the mode it was called in.
    """
    distributed = distributed or isinstance(optimizer, D.DistributedOptimizer)
    # in a distributed fit an error on one process (bad data there, say) must end every process, not leave
    # the others waiting in a collective: from the first check on
    with D.abort_on_error("fit") if distributed else contextlib.nullcontext():
        stepper = None
        if isinstance(optimizer, D.DistributedOptimizer):
            stepper, optimizer, distributed = optimizer, optimizer.optimizer, True
        _check_optimizer(optimizer, lr)
        callbacks = _check_callbacks(callbacks)
        epochs = positive_int("fit", "epochs", epochs)
        batch_size = positive_int("fit", "batch_size", batch_size)
        log_every = positive_int("fit", "log_every", log_every)
        seed = _check_seed(seed)
        if verbose not in (0, 1, True, False):
            raise ValueError(f"fit: verbose must be 0 (silent) or 1 (a line per epoch), got {verbose!r}")
        if clip_grad_norm is not None and not _positive_number(clip_grad_norm):
            raise ValueError(f"fit: clip_grad_norm must be a positive number or None, got {clip_grad_norm!r}")
        if scheduler is not None and not isinstance(scheduler, (str, LRScheduler)):
            raise TypeError(f"fit: scheduler must be an xpcnn.optim schedule or one of {', '.join(SCHEDULES)}, "
                            f"got {type(scheduler).__name__}")
        if isinstance(scheduler, str) and scheduler not in SCHEDULES:
            raise ValueError(f"fit: scheduler must be an xpcnn.optim schedule or one of {', '.join(SCHEDULES)}, "
                             f"got {scheduler!r}")
        if validation_data is not None and (not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2):
            raise ValueError(f"fit: validation_data must be a pair (x, y), got "
                             f"{_describe(validation_data)}")
        loss_fn = _loss_function(loss)
        x, y = _check_data("fit", model, x, y)
        if validation_split is not None:
            x, y, validation_data = _split(x, y, validation_split, validation_data)
        for watcher in [scheduler, *callbacks]:
            if getattr(watcher, "needs_metric", False) and watcher.monitor.startswith("val_") \
                    and validation_data is None:
                raise ValueError(f"fit: {type(watcher).__name__} monitors {watcher.monitor!r}, which needs "
                                 "validation_data or validation_split (or monitor='loss')")
        if not model.built:
            _warn_if_channels_last("fit", x.shape)
            model.build(tuple(int(s) for s in x.shape[1:]))
        _check_targets("fit", model, x, y, loss_fn)
        if isinstance(optimizer, str):
            optimizer = OPTIMIZERS[optimizer](model.parameters(), lr=_default_lr(optimizer) if lr is None else lr)
        _check_owned(model, optimizer, scheduler)
        if isinstance(scheduler, str):
            scheduler = SCHEDULES[scheduler](optimizer, epochs, validation_data is not None)
        was_training = model.training
        try:
            if distributed:
                return _fit_distributed(model, x, y, optimizer, stepper, loss_fn, epochs, batch_size,
                                        validation_data, shuffle, seed, callbacks, progress, scheduler,
                                        clip_grad_norm, augment, resume, verbose, log_every)
            return _fit(model, x, y, optimizer, None, loss_fn, epochs, batch_size, validation_data, shuffle, seed,
                        callbacks, progress, scheduler, clip_grad_norm, augment, resume, verbose, log_every)
        except BaseException:
            model.train(was_training)       # a failed fit leaves the model in the mode it came in
            raise


def _fit_distributed(model, x, y, optimizer, stepper, loss_fn, epochs, batch_size, validation_data, shuffle, seed,
                     callbacks, progress, scheduler, clip_grad_norm, augment, resume, verbose, log_every) -> History:
    """fit's distributed set-up: one seed and rank 0's state everywhere, a noise stream of each rank's own
    (dropout masks must differ between the processes' samples), then the common loop with the shard."""
    seed = D.seed_everywhere(seed)
    if model.noise is not None:
        model.set_noise(model.noise.split(D.rank()))
    stepper = stepper if stepper is not None else D.DistributedOptimizer(optimizer)
    try:
        return _fit(model, x, y, optimizer, stepper, loss_fn, epochs, batch_size, validation_data, shuffle, seed,
                    callbacks, progress, scheduler, clip_grad_norm, augment, resume, verbose if D.is_main() else 0,
                    log_every, shard=(D.rank(), D.size()))
    finally:
        D.set_global_batch(None)


def _agree_across_processes(x, validation_data, epochs, start_epoch, batch_size, shuffle, log_every) -> None:
    """What every process must share, or the collectives would not pair up (a hang, an MPI abort, or shards
    that overlap): one exchange, one Disagreement on every process naming the first difference."""
    D.agree("fit", {"epochs": epochs, "the epoch resumed from": start_epoch, "batch_size": batch_size,
                    "len(x)": len(x), "the sample shape": tuple(x.shape[1:]), "x.dtype": str(x.dtype),
                    "shuffle": bool(shuffle), "log_every": log_every,
                    "len(validation data)": None if validation_data is None else len(validation_data[0])})


def _fit(model, x, y, optimizer, stepper, loss_fn, epochs, batch_size, validation_data, shuffle, seed, callbacks,
         progress, scheduler, clip_grad_norm, augment, resume, verbose, log_every, shard=None) -> History:
    """The loop itself (arguments checked by fit); ``stepper`` steps the optimizer (a DistributedOptimizer
    with ``shard=(rank, size)``), else the optimizer itself."""
    stepper = stepper if stepper is not None else optimizer
    if validation_data is not None:
        validation_data = _check_data("fit (validation_data)", model, *validation_data)
        _check_targets("fit (validation_data)", model, *validation_data, loss_fn)
    if seed is None and shard is None:      # Sequential(seed=...) then fit(...) shuffles alike on every run
        seed = int(model.rng.integers(2**63))
    rng = np.random.default_rng(seed)
    history = History()
    start_epoch = 0
    if resume is not None:
        start_epoch, history = _resume(model, optimizer, scheduler, rng, resume)
    if shard is not None:
        _agree_across_processes(x, validation_data, epochs, start_epoch, batch_size, shuffle, log_every)
        D.broadcast_parameters(model, optimizer=optimizer)
    history.optimizer = optimizer
    trainer = Trainer(model, optimizer, scheduler, loss_fn, epochs, rng, history)
    trainer.epoch = start_epoch
    trainer.verbose = int(verbose)
    trainer.is_main = shard is None or shard[0] == 0
    callbacks = list(callbacks)
    if verbose and not any(isinstance(callback, EpochPrinter) for callback in callbacks):
        callbacks.insert(0, EpochPrinter())
    for callback in callbacks:
        callback.on_train_begin(trainer)
    step_loss = _batch_loss(loss_fn)
    data = feed(x, y, backend=model.backend, dtype=model.dtype, augment=augment)
    if validation_data is not None:
        validation_data = feed(*validation_data, backend=model.backend, dtype=model.dtype)
    model.train()
    for epoch in range(start_epoch + 1, epochs + 1):
        if optimizer.lr == 0:
            warnings.warn(f"fit: epoch {epoch} runs at learning rate 0 (the schedule has reached its end), so the "
                          "weights will not change; lengthen the schedule (e.g. CosineAnnealingLR's T_max)",
                          stacklevel=3)
        snapshot = _snapshot(model, optimizer)          # on the device: no host copy per epoch
        bar = _progress(progress and verbose, len(x), f"epoch {epoch}/{epochs}")
        started = time.perf_counter()
        sums = _RunningSums(summed=shard is not None)
        steps = [stop - start for start, stop, _, _ in bounds(len(x), batch_size, shard)]   # global batch sizes
        for index, (xb, yb) in enumerate(data.batches(batch_size, shuffle=shuffle, rng=rng, augment=augment,
                                                      shard=shard)):
            if shard is not None:
                D.set_global_batch(steps[index])           # SyncBatchNorm2D's counts, known on the host
            logits = model(xb)
            batch_loss, dlogits = step_loss(logits, yb)
            if shard is not None and int(xb.shape[0]) * shard[1] != steps[index]:
                dlogits = dlogits * (int(xb.shape[0]) * shard[1] / steps[index])   # this process's share
            model.zero_grad()
            model.backward(dlogits, input_grad=False)
            if clip_grad_norm is not None:
                if shard is not None:
                    stepper.allreduce_gradients()                # the global gradient's norm, on every process
                clip_gradients(optimizer.params, clip_grad_norm)
                optimizer.step()
            else:
                stepper.step()
            sums.add(batch_loss, _accuracy_count(logits, yb), int(xb.shape[0]))
            if bar is not None:
                bar.update(steps[index])
            if (index + 1) % log_every == 0 or index + 1 == len(steps):
                # at an epoch's end the same read says whether the weights are finite (the last step's
                # update comes after its loss), before any callback sees them or saves them
                mean_loss, accuracy = sums.read(model if index + 1 == len(steps) else None)
                if not math.isfinite(mean_loss) or not sums.weights_finite:
                    _restore(model, optimizer, snapshot)
                    if bar is not None:
                        bar.close()
                    what = (f"the loss became {mean_loss}" if not math.isfinite(mean_loss)
                            else "the weights became NaN or infinite")
                    every = "every step" if log_every == 1 else f"every {log_every} steps"
                    before = f"the end of epoch {epoch - 1}" if epoch > 1 else "its state before training"
                    raise TrainingDiverged(
                        f"fit: {what} by epoch {epoch}, batch {index + 1} (losses are read {every} and at each "
                        f"epoch's end); the model was restored to {before}. Try a lower learning rate "
                        f"(now {optimizer.lr:g}).")
                if bar is not None:  # tqdm shows the rate itself, in images per second
                    bar.set_postfix(loss=f"{mean_loss:.4f}", acc="-" if accuracy is None else f"{accuracy:.3f}")
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - started
        seen = sum(steps)
        logs = {"epoch": epoch, "loss": mean_loss}
        if accuracy is not None:
            logs["accuracy"] = accuracy
        if validation_data is not None:
            scores = _evaluate(model, validation_data, loss_fn, max(batch_size, 256))
            logs.update({f"val_{k}": v for k, v in scores.items()})
        logs.update(lr=optimizer.lr, seconds=seconds, images_per_s=seen / max(seconds, 1e-9))
        if scheduler is not None:
            if scheduler.needs_metric:
                scheduler.step(logs[scheduler.monitor])
            else:
                scheduler.step()
        trainer.epoch = epoch
        history.append(logs)
        for callback in callbacks:
            callback.on_epoch_end(trainer, epoch, logs)
        if shard is not None:                              # one process's callback stopping stops them all
            trainer.stop_training = D.any_process(trainer.stop_training)
        if trainer.stop_training:
            break
    for callback in callbacks:
        callback.on_train_end(trainer)
    return history


def _check_optimizer(optimizer, lr) -> None:
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"fit: optimizer must be an xpcnn.optim optimizer or one of {', '.join(OPTIMIZERS)}, "
                             f"got {optimizer!r}")
        if lr is not None and not _positive_number(lr):
            raise ValueError(f"fit: lr must be a positive number, got {lr!r}")
        return
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"fit: optimizer must be an xpcnn.optim optimizer or a name such as 'adam', "
                        f"got {type(optimizer).__name__}")
    if lr is not None:
        raise ValueError(f"fit: lr= goes with an optimizer given by name; set lr on the {type(optimizer).__name__} "
                         f"itself (it has lr={optimizer.lr:g})")


def _check_callbacks(callbacks) -> list:
    """Callbacks as a list; each a Callback, or an object with its three hooks (ReduceLROnPlateau)."""
    if isinstance(callbacks, Callback) or not isinstance(callbacks, Iterable):
        raise TypeError(f"fit: callbacks must be a list of Callback objects, got {_describe(callbacks)}")
    callbacks = list(callbacks)
    for index, callback in enumerate(callbacks):
        if not all(callable(getattr(callback, hook, None)) for hook in ("on_train_begin", "on_epoch_end",
                                                                          "on_train_end")):
            raise TypeError(f"fit: callbacks[{index}] must be an xpcnn.callbacks.Callback (subclass it and define "
                            f"on_epoch_end), got {_describe(callback)}")
    return callbacks


def _check_seed(seed):
    """None, or an int >= 0 (NumPy integers too), as numpy.random.default_rng takes it."""
    if seed is None:
        return None
    value = integral(seed)
    if value is None or value < 0:
        raise ValueError(f"fit: seed must be None or an int >= 0, got {seed!r}")
    return value


def _check_owned(model, optimizer, scheduler) -> None:
    """An optimizer over another model's parameters would train nothing: refuse it (a subset is fine:
    frozen layers left out)."""
    own = {id(p) for p in model.parameters()}
    foreign = sum(id(p) not in own for p in optimizer.params)
    if foreign:
        raise ValueError(f"fit: the optimizer holds {foreign} parameter(s) that are not this model's; make it "
                         f"from this model: {type(optimizer).__name__}(model.parameters(), ...)")
    if isinstance(scheduler, LRScheduler) and scheduler.optimizer is not optimizer:
        raise ValueError(f"fit: the scheduler's optimizer is not the optimizer fit trains with; make the "
                         f"{type(scheduler).__name__} from that optimizer")


def _warn_if_channels_last(name: str, shape: tuple) -> None:
    """(N, 32, 32, 3) read as NCHW would be 32 channels of 32x3 pixels: almost surely channels-last data."""
    if len(shape) == 4 and shape[3] in (1, 3) and shape[1] >= 8 and shape[1] == shape[2]:
        warnings.warn(f"{name}: x has shape {tuple(shape)}, which looks like NHWC (channels last); xpcnn takes "
                      f"NCHW (N, C, H, W), so this trains on {shape[1]} channels: use x.transpose(0, 3, 1, 2)", UserWarning, stacklevel=4)


def _describe(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return repr(value) if isinstance(value, (int, float, str, type(None))) else f"a {type(value).__name__}"


def _positive_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0 and math.isfinite(value)


def _default_lr(name: str) -> float:
    """An optimizer's default learning rate (SGD has none in torch.optim; Keras' 0.01 is used)."""
    default = inspect.signature(OPTIMIZERS[name]).parameters["lr"].default
    return 0.01 if default is inspect.Parameter.empty else default


def _split(x: np.ndarray, y: np.ndarray, fraction, validation_data) -> tuple:
    """The last ``fraction`` of x and y held out as validation data (Keras' validation_split)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"fit: validation_split must be a fraction in (0, 1), got {fraction!r}")
    if validation_data is not None:
        raise ValueError("fit: pass validation_data or validation_split, not both")
    held = int(round(len(x) * fraction))
    if held < 1 or held >= len(x):
        raise ValueError(f"fit: validation_split={fraction} of {len(x)} samples leaves "
                         f"{'no validation' if held < 1 else 'no training'} samples")
    return x[:-held], y[:-held], (x[-held:], y[-held:])


class _RunningSums:
    """The loss sum and correct count of the batches so far, kept on the device; :meth:`read` brings both
    to the host in one transfer (a GPU synchronises there, and only there). ``summed``: the sums (and the
    sample count) are then added over every process, so each reads the global batch's figures."""

    def __init__(self, summed: bool = False):
        self.loss = self.correct = None
        self.seen, self.counted, self.summed = 0, True, summed
        self.weights_finite = True

    def add(self, batch_loss, correct, n: int) -> None:
        weighted = batch_loss * n
        self.loss = weighted if self.loss is None else self.loss + weighted
        if correct is None:
            self.counted = False
        else:
            self.correct = correct if self.correct is None else self.correct + correct
        self.seen += n

    def read(self, model=None) -> tuple[float, float | None]:
        """(mean loss, accuracy or None) over the batches so far; with ``model``, the same transfer brings
        whether its parameters and buffers are all finite (:attr:`weights_finite`)."""
        xp = array_api_compat.array_namespace(self.loss)
        values = [self.loss] + ([xp.astype(self.correct, self.loss.dtype)] if self.counted else [])
        if model is not None:
            values.append(_nonfinite_count(model, xp, self.loss))
        host = to_numpy(xp.stack(values))
        seen = self.seen
        if self.summed:
            *host, seen = D.all_sum([*host.tolist(), seen])
        if model is not None:
            self.weights_finite = float(host[-1]) == 0
        return float(host[0]) / seen, (float(host[1]) / seen if self.counted else None)


def _nonfinite_count(model, xp, like) -> Any:
    """On the device, as a 0-d array of ``like``'s dtype: how many parameters and float buffers hold a NaN
    or an infinity (nothing is read here)."""
    arrays = [p.data for p in model.parameters()] + [value for _, value in model.named_buffers()]
    flags = [xp.astype(xp.any(~xp.isfinite(a)), like.dtype) for a in arrays if xp.isdtype(a.dtype, "real floating")]
    return xp.sum(xp.stack(flags)) if flags else xp.zeros_like(like)


def _snapshot(model, optimizer):
    """Device copies of the parameters, buffers and optimizer state: what a divergence rolls back to."""
    buffers = [(owner, attr, device_copy(getattr(owner, attr))) for _, owner, attr in model.buffer_slots()]
    return buffers, optimizer.snapshot()


def _restore(model, optimizer, snapshot) -> None:
    buffers, optimizer_snapshot = snapshot
    for layer, name, value in buffers:
        setattr(layer, name, value)
    optimizer.restore(optimizer_snapshot)
    model.zero_grad()


def _resume(model, optimizer, scheduler, rng, resume):
    """Load the state of a Checkpoint object or a checkpoint file into this run; returns (epoch, History)."""
    if isinstance(resume, ckpt.Checkpoint):
        model_state, model_rng = resume.model.state_dict(), resume.model.rng.bit_generator.state
        noise = resume.model.noise.state()
        optimizer_state = None if resume.optimizer is None else resume.optimizer.state_dict()
        scheduler_state = None if resume.scheduler is None else resume.scheduler.state_dict()
        epoch, history, data_rng = resume.epoch, resume.history, resume.data_rng_state
    else:
        saved = ckpt.read(resume, expected=lambda spec: _expected_entries(model, optimizer))
        model_state, model_rng, optimizer_state = saved.model_state, saved.model_rng, saved.optimizer
        noise = saved.noise
        scheduler_state, epoch, history, data_rng = saved.scheduler, saved.epoch, saved.history, saved.data_rng_state
    try:
        model.load_state_dict(model_state)
    except ValueError as exc:
        raise ckpt.CheckpointError(f"fit: the checkpoint does not fit this model: {exc}") from None
    model.rng.bit_generator.state = model_rng
    model.noise.set_state(noise)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    if scheduler is not None and scheduler_state is not None:
        scheduler.load_state_dict(scheduler_state)
    if data_rng is not None:
        rng.bit_generator.state = data_rng
    return epoch, History(history)


def _expected_entries(model, optimizer) -> tuple[dict[str, tuple], list[str]]:
    """What a checkpoint of this run may hold (:func:`xpcnn.checkpoint.read` refuses larger entries unread): the
    model's arrays, and the optimizer's state numbered in the optimizer's own parameter order."""
    shapes, _ = ckpt.state_shapes(model)
    keys = {id(param): key for key, param in model.named_parameters()}
    return shapes, [keys[id(param)] for param in optimizer.params]


def evaluate(model, x, y, *, loss: str | Callable = "cross_entropy", batch_size: int = 256) -> dict:
    """Mean loss (and accuracy, for class labels) over ``x``, in evaluation mode. The sums stay on the
    device and are read once, at the end."""
    loss_fn = _loss_function(loss)
    x, y = _check_data("evaluate", model, x, y)
    batch_size = positive_int("evaluate", "batch_size", batch_size)
    _check_targets("evaluate", model, x, y, loss_fn)
    return _evaluate(model, feed(x, y, backend=model.backend, dtype=model.dtype), loss_fn, batch_size)


def _evaluate(model, data, loss_fn: Callable, batch_size: int) -> dict:
    batch_loss_fn = _batch_loss(loss_fn)
    sums = _RunningSums()
    with model.evaluating():
        for xb, yb in data.batches(batch_size):
            logits = model(xb)
            batch_loss, _ = batch_loss_fn(logits, yb)
            sums.add(batch_loss, _accuracy_count(logits, yb), int(xb.shape[0]))
    mean_loss, accuracy = sums.read()
    return {"loss": mean_loss} if accuracy is None else {"loss": mean_loss, "accuracy": accuracy}


def predict(model, x, *, batch_size: int = 256, probabilities: bool = False) -> np.ndarray:
    """The model's outputs (logits for a classifier) for ``x`` as a host NumPy array, in evaluation mode;
    with ``probabilities=True`` the softmax of each output row (computed on the device).

    ``x`` is a batch, or one sample without the batch axis (a ``(C, H, W)`` image for a conv net), whose
    output then has no batch axis either. A sample is recognised by the model's input shape when known
    (``input_shape=``/``build``/a first batch: one axis fewer), else by the rank the layers take.
    """
    batch_size = positive_int("predict", "batch_size", batch_size)
    x = _check_x("predict", model, x)
    single = _is_single_sample(model, x)
    if single:
        x = x[None, ...]
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"predict: x must be a non-empty batch of samples (or one sample), got shape {x.shape}")
    if not model.built:
        _warn_if_channels_last("predict", x.shape)
    with model.evaluating():
        outputs = []
        for xb, _ in batches(x, None, batch_size, backend=model.backend, dtype=model.dtype):
            out = model(xb)
            if probabilities:
                out, _ = F.softmax_forward(out, axis=-1)
            outputs.append(to_numpy(out))
    result = np.concatenate(outputs, axis=0)
    return result[0] if single else result


def _is_single_sample(model, x: np.ndarray) -> bool:
    known = getattr(model, "input_shape", None)
    if known is not None:
        return x.ndim == len(known)
    try:
        model.output_shape(tuple(x.shape))
        return False
    except ValueError:
        try:
            model.output_shape((1,) + tuple(x.shape))
        except ValueError:
            return False      # neither: the model's own error follows
        return True
