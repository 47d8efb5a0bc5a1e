"""The validated front door of training: fit / evaluate / predict.

``fit`` checks every argument on the host (one-line errors; bad input changes nothing), then builds a
:class:`~xpcnn.train.Trainer` (the loop: a step per batch, then the callbacks) and runs it. It works on
any :class:`~xpcnn.train.protocol.TrainableModel` (a Sequential) and never imports :mod:`xpcnn.model`.
Resuming reads a checkpoint's plain state (:func:`xpcnn.checkpoint.read`).

    history = model.fit(x, y, optimizer=xpcnn.optim.Adam(model.parameters()), epochs=5, batch_size=64,
                        validation_data=(x_test, y_test), seed=0)

Data: a training set under ``xpcnn.config``'s ``device_data_bytes`` (1 GiB) is copied to the model's device
once and batches are gathered there (a step copies nothing from the host); a larger one, or one with a
host-only ``augment`` function, is batched on the host by a thread running ``prefetch_batches`` ahead. Both
give the same batches (see :mod:`xpcnn.train.batches`).

Reads: no training step reads device memory. The running loss and correct count stay on the device and are
read together, in one transfer, every ``log_every`` steps and at the end of each epoch (the progress bar
advances every step and refreshes its figures at those reads). A NaN or infinite loss found at a read stops
training with :class:`TrainingDiverged`, the model and optimizer restored from a device-side copy taken at
the start of the epoch; the read at an epoch's end also tells whether every parameter and buffer is finite
(the last step's update comes after its loss), so a divergence there stops training before any callback
runs or saves: a :class:`~xpcnn.callbacks.ModelCheckpoint` keeps the last good epoch.

Distributed (``distributed=True`` or a :class:`~xpcnn.distributed.DistributedOptimizer`, in a program
started by ``mpiexec``): ``batch_size`` is the global batch; each process takes its slice
(:func:`xpcnn.distributed.local_slice`), its loss gradient is weighted by its share of the batch, the
gradients are averaged over the processes in the optimizer's step, and rank 0's weights, optimizer state and
seed start every process. The logs are the global batch's on every process (so callbacks decide alike);
only rank 0 prints, shows progress and writes files. An error on one process ends all of them.

Modes: a fit that completes leaves the model in training mode (as Keras and PyTorch loops do); a fit that
fails (bad arguments, a divergence, Ctrl-C) leaves it in the mode it was called in.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from .. import checkpoint as ckpt
from .. import distributed as D
from .. import functional as F
from ..backend import to_numpy
from ..callbacks import Callback, EpochPrinter, LRSchedule
from ..checks import integral, positive_int
from ..optim import OPTIMIZERS, CosineAnnealingLR, LRScheduler, Optimizer, ReduceLROnPlateau, StepLR
from .batches import ProcessGroup, TrainingFeed, batches, feed
from .extensions import DivergenceGuard, ProgressBar, TrainingDiverged, Validation, ZeroRateWarning
from .metrics import evaluate_feed
from .trainer import History, Trainer

LOSSES: dict[str, Callable] = {"cross_entropy": F.softmax_cross_entropy, "mse": F.mse_loss}

# fit(scheduler=NAME): a schedule of xpcnn.optim for (optimizer, epochs, has validation data)
SCHEDULES: dict[str, Callable] = {
    "cosine": lambda optimizer, epochs, validated: CosineAnnealingLR(optimizer, T_max=epochs),
    "step": lambda optimizer, epochs, validated: StepLR(optimizer, step_size=max(1, epochs // 3)),
    "plateau": lambda optimizer, epochs, validated: ReduceLROnPlateau(
        optimizer, monitor="val_loss" if validated else "loss"),
}

__all__ = ["fit", "evaluate", "predict", "LOSSES", "SCHEDULES", "History", "Trainer", "TrainingDiverged"]


def fit(model, x, y, *, optimizer: Optimizer | str, lr: float | None = None, loss: str | Callable = "cross_entropy",
        epochs: int = 1, batch_size: int = 32, validation_data=None, validation_split: float | None = None,
        shuffle: bool = True, seed: int | None = None, callbacks: Iterable[Callback] = (), progress: bool = True,
        scheduler: LRScheduler | str | None = None, clip_grad_norm: float | None = None, augment: Callable | None = None,
        resume: "ckpt.Checkpoint | str | os.PathLike | None" = None, verbose: int = 1,
        log_every: int = 50, distributed: bool = False) -> History:
    """Train ``model`` on host arrays ``x`` (N, C, H, W), float32 or float64, and ``y``: integer labels (N,) or
    probability rows (N, K) for "cross_entropy", float targets of the output's shape for "mse", or what a
    callable ``loss(logits, y_batch) -> (0-d mean loss, dlogits)`` takes. Returns a :class:`History`.

    ``optimizer``: an :mod:`xpcnn.optim` optimizer over this model's parameters (or a subset), or a name with
    ``lr`` (then ``history.optimizer``). ``validation_split=0.1`` holds out the last tenth, unshuffled.
    ``clip_grad_norm=c``: the optimizer clips each step's gradients to a global norm of at most c, in this fit.
    ``scheduler``: a schedule over it, or "cosine" (``T_max=epochs``), "step" (``step_size=max(1, epochs // 3)``),
    "plateau" (on "val_loss", else "loss"). ``seed`` fixes shuffling and augmentation (else the model's
    generator does); ``epochs`` counts from the start of training; ``augment(x_batch, rng)`` on the host, or a
    transform such as RandomShift. ``verbose=1``: a line per epoch (a bar on a terminal: ``progress``); more in
    the module's docstring."""
    distributed = distributed or isinstance(optimizer, D.DistributedOptimizer)
    with D.abort_on_error("fit") if distributed else contextlib.nullcontext():
        stepper, optimizer = ((optimizer, optimizer.optimizer) if isinstance(optimizer, D.DistributedOptimizer)
                              else (None, optimizer))
        run = _Settings.checked(optimizer, lr, scheduler, validation_data, epochs=epochs, batch_size=batch_size,
                                log_every=log_every, seed=seed, verbose=verbose, progress=progress, shuffle=shuffle,
                                augment=augment, clip_grad_norm=clip_grad_norm)
        callbacks = _check_callbacks(callbacks, scheduler, validation_data is not None or validation_split is not None)
        loss_fn = _loss_function(loss)
        x, y, validation_data = _check_training_data(model, x, y, loss_fn, validation_data, validation_split)
        optimizer, scheduler = _optimizer_and_schedule(model, optimizer, lr, scheduler, run.epochs,
                                                       validation_data is not None)
        group = ProcessGroup.world() if distributed else ProcessGroup()
        data = TrainingFeed(feed(x, y, backend=model.backend, dtype=model.dtype, augment=augment), run.batch_size,
                            rng=_data_rng(model, run.seed, group), shuffle=shuffle, augment=augment, group=group)
        start, history, clipping = _start(model, optimizer, scheduler, data, resume, run, (x, validation_data))
        stepper = stepper or (D.DistributedOptimizer(optimizer) if distributed else optimizer)
        callbacks = _callbacks(model, run, loss_fn, validation_data, scheduler, group, history, callbacks)
        trainer = Trainer(model, stepper, loss_fn, data, callbacks, history=history,
                          scheduler=scheduler, log_every=run.log_every, verbose=run.verbose if group.is_main else 0,
                          start_epoch=start)
        return _run(trainer, optimizer, run, clipping)


@dataclass(frozen=True)
class _Settings:
    """fit's checked settings (NumPy integers become ints), what the run is built from."""

    epochs: int
    batch_size: int
    log_every: int
    seed: int | None
    verbose: int
    progress: bool
    shuffle: bool
    augment: Any
    clip_grad_norm: float | None

    @classmethod
    def checked(cls, optimizer, lr, scheduler, validation_data, **given) -> "_Settings":
        """The settings ``given`` checked (with the optimizer, schedule and validation data's form): a ValueError
        or TypeError naming the first bad one."""
        _check_optimizer(optimizer, lr)
        for name in ("epochs", "batch_size", "log_every"):
            given[name] = positive_int("fit", name, given[name])
        given["seed"] = _check_seed(given["seed"])
        if given["verbose"] not in (0, 1, True, False):
            raise ValueError(f"fit: verbose must be 0 (silent) or 1 (a line per epoch), got {given['verbose']!r}")
        given["verbose"] = int(given["verbose"])
        clip = given["clip_grad_norm"]
        if clip is not None and not _positive_number(clip):
            raise ValueError(f"fit: clip_grad_norm must be a positive number or None, got {clip!r}")
        if scheduler is not None and not isinstance(scheduler, (str, LRScheduler)):
            raise TypeError(f"fit: scheduler must be an xpcnn.optim schedule or one of {', '.join(SCHEDULES)}, "
                            f"got {type(scheduler).__name__}")
        if isinstance(scheduler, str) and scheduler not in SCHEDULES:
            raise ValueError(f"fit: scheduler must be an xpcnn.optim schedule or one of {', '.join(SCHEDULES)}, "
                             f"got {scheduler!r}")
        if validation_data is not None and (not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2):
            raise ValueError(f"fit: validation_data must be a pair (x, y), got {_describe(validation_data)}")
        return cls(**given)


def _check_training_data(model, x, y, loss_fn: Callable, validation_data, validation_split):
    """x and y (and the validation data, held out by ``validation_split`` or given) checked on the host, the
    model built for x's samples; returns ``(x, y, validation_data or None)``."""
    x, y = _check_data("fit", model, x, y)
    if validation_split is not None:
        x, y, validation_data = _split(x, y, validation_split, validation_data)
    if not model.built:
        _warn_if_channels_last("fit", x.shape, stacklevel=5)
        model.build(tuple(int(s) for s in x.shape[1:]))
    _check_targets("fit", model, x, y, loss_fn)
    if validation_data is not None:
        validation_data = _check_data("fit (validation_data)", model, *validation_data)
        _check_targets("fit (validation_data)", model, *validation_data, loss_fn)
    return x, y, validation_data


def _optimizer_and_schedule(model, optimizer, lr, scheduler, epochs: int, validated: bool):
    """The optimizer (made over ``model.parameters()`` when named) and the schedule (made when named)."""
    if isinstance(optimizer, str):
        optimizer = OPTIMIZERS[optimizer](model.parameters(), lr=_default_lr(optimizer) if lr is None else lr)
    _check_owned(model, optimizer, scheduler)
    if isinstance(scheduler, str):
        scheduler = SCHEDULES[scheduler](optimizer, epochs, validated)
    return optimizer, scheduler


def _data_rng(model, seed: int | None, group: ProcessGroup) -> np.random.Generator:
    """The generator of shuffling and augmentation: from ``seed``; without one from the model's generator
    (so Sequential(seed=...) then fit repeats), or, in a distributed fit, one seed drawn by rank 0."""
    if group.distributed:
        return np.random.default_rng(D.seed_everywhere(seed))
    return np.random.default_rng(int(model.rng.integers(2**63)) if seed is None else seed)


def _start(model, optimizer, scheduler, data: TrainingFeed, resume, run: _Settings, shared: tuple):
    """Where the run starts: ``(epoch, History, the optimizer's clip_grad_norm before the run)`` of the checkpoint
    ``resume`` (loaded into the model, optimizer, schedule and data generator) or (0, a new History, ...). In a distributed fit each process gets its own
    dropout stream, the processes check that they agree on ``shared`` (x, validation data) and the settings,
    and rank 0's state starts every one."""
    clipping = optimizer.clip_grad_norm                # fit restores it (a resume may load a clipping fit's)
    start, history = (0, History()) if resume is None else _resume(model, optimizer, scheduler, data.rng, resume)
    if data.group.distributed and model.noise is not None:     # after a resume, which loads rank 0's stream
        model.set_noise(model.noise.split(data.group.rank))     # the processes' samples draw different masks
    if data.group.distributed:
        _agree_across_processes(*shared, run, start)
        D.broadcast_parameters(model, optimizer=optimizer)
    history.optimizer = optimizer
    return start, history, clipping


def _callbacks(model, run: _Settings, loss_fn, validation_data, scheduler, group: ProcessGroup, history: History,
               given: list[Callback]) -> list[Callback]:
    """The callbacks of the run, in order: validation, the divergence guard, the progress bar, the zero-rate
    warning, the schedule, the History, the printed line (verbose, on rank 0, unless given) and ``given``."""
    added: list[Callback] = []
    if validation_data is not None:
        data = feed(*validation_data, backend=model.backend, dtype=model.dtype)
        added.append(Validation(data, loss_fn, max(run.batch_size, 256)))
    added += [DivergenceGuard(run.log_every)]
    if run.progress and run.verbose and group.is_main:
        added.append(ProgressBar())
    added.append(ZeroRateWarning())
    if scheduler is not None:
        added.append(LRSchedule(scheduler))
    added.append(history)
    if run.verbose and group.is_main and not any(isinstance(callback, EpochPrinter) for callback in given):
        added.append(EpochPrinter())
    return added + given


def _run(trainer: Trainer, optimizer: Optimizer, run: _Settings, clipping) -> History:
    """``trainer.run(epochs)`` with the optimizer clipping at fit's ``clip_grad_norm`` (when given) for this
    run only, then at ``clipping`` again; a run that fails leaves the model in the mode it came in."""
    was_training = trainer.model.training
    if run.clip_grad_norm is not None:
        optimizer.clip_grad_norm = run.clip_grad_norm
    try:
        return trainer.run(run.epochs)
    except BaseException:
        trainer.model.train(was_training)
        raise
    finally:
        optimizer.clip_grad_norm = clipping


def _agree_across_processes(x, validation_data, run: _Settings, start_epoch: int) -> None:
    """What every process must share, or the collectives would not pair up (a hang, an MPI abort, or shards
    that overlap): one exchange, one Disagreement on every process naming the first difference."""
    D.agree("fit", {"epochs": run.epochs, "the epoch resumed from": start_epoch, "batch_size": run.batch_size,
                    "len(x)": len(x), "the sample shape": tuple(x.shape[1:]), "x.dtype": str(x.dtype),
                    "shuffle": bool(run.shuffle), "log_every": run.log_every,
                    "len(validation data)": None if validation_data is None else len(validation_data[0])})


def _loss_function(loss: str | Callable) -> Callable:
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"fit: loss must be one of {', '.join(LOSSES)} or a callable, got {loss!r}")
    return LOSSES[loss]


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


def _check_callbacks(callbacks, scheduler, validated: bool) -> list[Callback]:
    """Callbacks as a list of Callback objects; a schedule (or a schedule callback) watching a validation
    metric needs validation data."""
    if isinstance(callbacks, Callback) or not isinstance(callbacks, Iterable):
        raise TypeError(f"fit: callbacks must be a list of Callback objects, got {_describe(callbacks)}")
    callbacks = list(callbacks)
    for index, callback in enumerate(callbacks):
        if isinstance(callback, LRScheduler):
            raise TypeError(f"fit: callbacks[{index}] is a {type(callback).__name__} schedule; pass it as "
                            f"scheduler= or wrap it: xpcnn.callbacks.LRSchedule(schedule)")
        if not isinstance(callback, Callback):
            raise TypeError(f"fit: callbacks[{index}] must be an xpcnn.callbacks.Callback (subclass it and define "
                            f"on_epoch_end), got {_describe(callback)}")
    schedules = [scheduler] + [c.scheduler for c in callbacks if isinstance(c, LRSchedule)]
    for schedule in schedules:
        if isinstance(schedule, ReduceLROnPlateau) and schedule.monitor.startswith("val_") and not validated:
            raise ValueError(f"fit: {type(schedule).__name__} monitors {schedule.monitor!r}, which needs "
                             "validation_data or validation_split (or monitor='loss')")
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


def _warn_if_channels_last(name: str, shape: tuple, stacklevel: int = 4) -> None:
    """(N, 32, 32, 3) read as NCHW would be 32 channels of 32x3 pixels: almost surely channels-last data."""
    if len(shape) == 4 and shape[3] in (1, 3) and shape[1] >= 8 and shape[1] == shape[2]:
        warnings.warn(f"{name}: x has shape {tuple(shape)}, which looks like NHWC (channels last); xpcnn takes "
                      f"NCHW (N, C, H, W), so this trains on {shape[1]} channels: use x.transpose(0, 3, 1, 2)", UserWarning, stacklevel=stacklevel)


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
    return evaluate_feed(model, feed(x, y, backend=model.backend, dtype=model.dtype), loss_fn, batch_size)


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
    known = model.input_shape
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
