"""Batches for the training loop: host arrays in, arrays of the model's backend out.

Two ways to feed a step, chosen by :func:`feed`:

- **On the device**: a data set under ``config.device_data_bytes`` is copied to the model's device once;
  each epoch moves one index array (and one array of augmentation offsets) there, and every batch is
  gathered on the device with ``take``. A step then copies nothing from the host.
- **From the host, prefetched**: otherwise (or when ``augment`` is a host-only function) batches are
  gathered, augmented and copied on the host by a background thread ``config.prefetch_batches`` ahead of
  the step, so the copy overlaps the step instead of stalling it.

Both draw the same permutation and augmentation offsets from the same host generator in the same order,
so the batches are identical whichever way they come, and on every backend.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np

from .. import config
from ..backend import Backend, resolve, take, to_backend
from ..checks import positive_int
from .. import distributed as D
from ..distributed import global_batches


def _draws_offsets(augment) -> bool:
    """Whether ``augment`` is a transform that draws per epoch and applies on any namespace (RandomShift)."""
    return callable(getattr(augment, "draw", None)) and callable(getattr(augment, "apply", None))


def bounds(n: int, batch_size: int, shard: tuple[int, int] | None = None) -> Iterator[tuple[int, int, int, int]]:
    """``(start, stop, lo, hi)`` per batch ``[start, stop)`` of an epoch: ``[lo, hi)`` is the whole batch, or with
    ``shard=(rank, size)`` that process's part of the global batch (:func:`xpcnn.distributed.global_batches`)."""
    if shard is not None:
        yield from global_batches(n, batch_size, *shard)
        return
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        yield start, stop, start, stop


def batches(x: np.ndarray, y: np.ndarray | None, batch_size: int, *, backend: str | Backend | None = None,
            dtype: str = "float32", shuffle: bool = False, rng: np.random.Generator | None = None,
            augment=None, shard: tuple[int, int] | None = None) -> Iterator[tuple[Any, Any]]:
    """Yield ``(x_batch, y_batch)`` on ``backend``, gathered on the host; each batch is moved once.

    Shuffling and augmentation happen on the host with ``rng``, so a seed gives the same batches on
    every backend. ``augment`` is a function ``augment(x_batch, rng)`` (called per batch) or a transform
    with ``draw``/``apply`` such as :class:`xpcnn.datasets.RandomShift` (offsets drawn once per epoch).
    ``shard=(rank, size)`` yields process ``rank``'s slice of each global batch of ``batch_size`` (a
    function ``augment`` then runs on the whole global batch, so every process draws alike).
    """
    positive_int("batches", "batch_size", batch_size)
    if y is not None and len(y) != len(x):
        raise ValueError(f"batches: x has {len(x)} samples but y has {len(y)}")
    target = resolve(backend)
    rng = rng if rng is not None else np.random.default_rng()
    order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
    offsets = augment.draw(rng, len(x)) if _draws_offsets(augment) else None
    for start, stop, lo, hi in bounds(len(x), batch_size, shard):
        if offsets is not None:
            xb = augment.apply(x[order[lo:hi]], offsets[lo:hi])
        elif augment is not None:
            xb = augment(x[order[start:stop]], rng)[lo - start:hi - start]
        else:
            xb = x[order[lo:hi]]
        yb = None if y is None else to_backend(np.ascontiguousarray(y[order[lo:hi]]), target)
        yield to_backend(np.ascontiguousarray(xb), target, dtype=dtype), yb


class DeviceData:
    """A data set copied to a backend's device once; :meth:`batches` gathers each batch there."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None, backend: str | Backend | None, dtype: str):
        self.backend = resolve(backend)
        self.x = to_backend(np.ascontiguousarray(x), self.backend, dtype=dtype)
        self.y = None if y is None else to_backend(np.ascontiguousarray(y), self.backend)
        self.n = len(x)

    def batches(self, batch_size: int, *, shuffle: bool = False, rng: np.random.Generator | None = None,
                augment=None, shard: tuple[int, int] | None = None) -> Iterator[tuple[Any, Any]]:
        """The batches :func:`batches` yields for the same arguments, gathered on the device: per epoch one
        index array and one offset array cross from the host, per batch nothing."""
        positive_int("batches", "batch_size", batch_size)
        if augment is not None and not _draws_offsets(augment):
            raise TypeError(f"DeviceData.batches: augment must draw and apply on the device (such as "
                            f"RandomShift), got {augment!r}")
        rng = rng if rng is not None else np.random.default_rng()
        order = to_backend(rng.permutation(self.n), self.backend) if shuffle else None
        offsets = to_backend(augment.draw(rng, self.n), self.backend) if augment is not None else None
        for _, _, start, stop in bounds(self.n, batch_size, shard):
            if order is None:
                xb = self.x[start:stop, ...]
                yb = None if self.y is None else self.y[start:stop, ...]
            else:
                index = order[start:stop]
                xb = take(self.x, index, 0)
                yb = None if self.y is None else take(self.y, index, 0)
            if offsets is not None:
                xb = augment.apply(xb, offsets[start:stop, ...])
            yield xb, yb


def fits_on_device(x: np.ndarray, y: np.ndarray | None, dtype: str) -> bool:
    """Whether ``x`` (in ``dtype``) and ``y`` fit in ``config.device_data_bytes``."""
    size = x.size * np.dtype(dtype).itemsize + (0 if y is None else np.asarray(y).nbytes)
    return size <= config.get().device_data_bytes


def feed(x: np.ndarray, y: np.ndarray | None, *, backend: Backend, dtype: str, augment=None):
    """What the loop draws batches from: a :class:`DeviceData` when the set fits on the device (and
    ``augment`` can run there), else a :class:`HostFeed` that prefetches host batches."""
    if (augment is None or _draws_offsets(augment)) and fits_on_device(x, y, dtype):
        return DeviceData(x, y, backend, dtype)
    return HostFeed(x, y, backend, dtype)


class HostFeed:
    """Batches gathered on the host and copied by a background thread ahead of the step."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None, backend: Backend, dtype: str):
        self.x, self.y, self.backend, self.dtype = x, y, backend, dtype
        self.n = len(x)

    def batches(self, batch_size: int, *, shuffle: bool = False, rng: np.random.Generator | None = None,
                augment=None, shard: tuple[int, int] | None = None) -> Iterator[tuple[Any, Any]]:
        return prefetched(batches(self.x, self.y, batch_size, backend=self.backend, dtype=self.dtype,
                                  shuffle=shuffle, rng=rng, augment=augment, shard=shard),
                          config.get().prefetch_batches)


_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def _put(ready: queue.Queue, stop: threading.Event, item) -> bool:
    """Put ``item`` in ``ready`` unless the consumer stopped first; whether it went in."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _produce(items: Iterable, ready: queue.Queue, stop: threading.Event) -> None:
    try:
        for item in items:
            if not _put(ready, stop, item):
                return
        _put(ready, stop, _END)
    except BaseException as exc:  # handed to the consumer, raised in its thread
        _put(ready, stop, _Failed(exc))


def prefetched(items: Iterable, depth: int) -> Iterator:
    """Yield ``items`` in order, produced by a background thread up to ``depth`` items ahead (0: inline).

    An error in the producer is raised here, at the item where it happened; a consumer that stops early
    stops the thread before this generator closes.
    """
    if depth <= 0:
        yield from items
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    worker = threading.Thread(target=_produce, args=(items, ready, stop), name="xpcnn-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()


# ---------------------------------------------------------------------------- what a fit draws from
@dataclass(frozen=True)
class ProcessGroup:
    """Who trains together: this process alone (``ProcessGroup()``), or every process of an MPI run
    (:meth:`world`), each taking its shard of every global batch. The trainer adds its figures and takes
    its stop decisions through :meth:`sum` and :meth:`any`, so it never calls MPI itself."""

    rank: int = 0
    size: int = 1
    distributed: bool = False

    @classmethod
    def world(cls) -> "ProcessGroup":
        return cls(D.rank(), D.size(), True)

    @property
    def is_main(self) -> bool:
        """Whether this process prints, shows progress and writes files (rank 0)."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int] | None:
        return (self.rank, self.size) if self.distributed else None

    def sum(self, values: list[float]) -> list[float]:
        """Host numbers added over the processes (as they are, alone)."""
        return D.all_sum(values).tolist() if self.distributed else list(values)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process: a decision every process takes alike."""
        return D.any_process(flag) if self.distributed else bool(flag)


class Batch(NamedTuple):
    """One step's data: ``x`` and ``y`` on the model's backend; ``samples``, the global batch's size (the
    batch's own alone); ``weight``, this process's share of the global batch times the process count (1
    alone, or when the shares are equal): its loss gradient's factor, so that the average of the processes'
    gradients is the global batch's."""

    x: Any
    y: Any
    samples: int
    weight: float = 1.0


class TrainingFeed:
    """The batches of a fit, epoch after epoch: ``iter(feed)`` is one epoch of :class:`Batch` drawn from
    ``data`` (a :class:`DeviceData` or :class:`HostFeed`) with the feed's own generator ``rng``. With
    ``group`` a distributed :class:`ProcessGroup`, each is this process's shard of the global batch, with
    its weight, and :class:`xpcnn.distributed.SyncBatchNorm2D` is told the global batch's size."""

    def __init__(self, data, batch_size: int, *, rng: np.random.Generator, shuffle: bool = True, augment=None,
                 group: ProcessGroup = ProcessGroup()):
        self.data, self.batch_size, self.rng, self.shuffle, self.augment = data, batch_size, rng, shuffle, augment
        self.group = group
        self.sizes = [stop - start for start, stop, _, _ in bounds(data.n, batch_size, group.shard)]

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def samples(self) -> int:
        """The samples of an epoch, over every process."""
        return sum(self.sizes)

    def __iter__(self) -> Iterator[Batch]:
        drawn = self.data.batches(self.batch_size, shuffle=self.shuffle, rng=self.rng, augment=self.augment,
                                  shard=self.group.shard)
        if not self.group.distributed:
            yield from (Batch(xb, yb, samples) for samples, (xb, yb) in zip(self.sizes, drawn))
            return
        try:
            for samples, (xb, yb) in zip(self.sizes, drawn):
                D.set_global_batch(samples)                # SyncBatchNorm2D's counts, known on the host
                yield Batch(xb, yb, samples, int(xb.shape[0]) * self.group.size / samples)
        finally:
            D.set_global_batch(None)
