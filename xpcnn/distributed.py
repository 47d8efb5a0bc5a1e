"""Data-parallel training over MPI, through mpi4py: every process holds the whole model, takes its own
slice of each global batch, and the gradients are averaged before each optimizer step, so N processes at
a global batch B train as one process at batch B.

    mpiexec -n 4 xpcnn train --distributed            # or, in a script run under mpiexec:
    model.fit(x, y, optimizer=..., batch_size=256, distributed=True)

The pieces, usable on their own in a hand-written loop:

- :func:`rank`, :func:`size`, :func:`is_main`; :func:`broadcast_parameters` (rank 0's weights, buffers and
  optimizer state to every process, after checking that every process built the same model);
- :class:`DistributedOptimizer`: wraps an optimizer; ``step()`` averages every gradient across processes
  with in-place ``Allreduce`` on buckets of about ``bucket_bytes`` (mpi4py's buffer methods, no pickle),
  then runs the wrapped optimizer's step;
- :func:`sharded_indices`: every process draws the same seeded permutation and takes its slice of each
  global batch (:func:`local_slice`: sizes differ by at most one when the batch does not divide evenly;
  fit's sharded feed gives each process's batch its share as a weight on the loss gradient, so the average
  is the global batch's);
- :class:`SyncBatchNorm2D`: batch normalisation whose batch statistics (and the sums of its backward
  pass) are the global batch's, one Allreduce per layer and pass, so a model with batch norm trains as
  on one process;
- :func:`agree` and :func:`any_process`: settings every process must share (``fit`` checks its epochs,
  batch size and data with one exchange) and decisions every process takes alike (stopping).

Transport: arrays are staged through one host buffer per bucket (pinned for GPU arrays) and reduced there.
Where the MPI library is CUDA-aware (:func:`cuda_aware`: ``XPCNN_CUDA_AWARE_MPI``, CUDA device memory
among its ``mpi_memory_alloc_kinds``, or MPIX_Query_cuda_support), GPU buffers are handed to MPI directly
instead, once their stream has finished. An NCCL communicator would slot in as another
:class:`Transport` with the same ``allreduce_sum``; none is claimed here: no GPU has run this code.

mpi4py is imported on first use, so ``import xpcnn.distributed`` works without MPI; using it without
mpi4py says what to install: ``pip install "xpcnn[mpi]"``.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import sys
import time
from typing import Any, Iterable, Iterator

import array_api_compat
import numpy as np

from .backend import copy_to_host, dtype_name, like, on_gpu, staging_buffer, synchronize_array, to_numpy
from .layers import BatchNorm2D, register
from .optim import Optimizer
from .optim.flat import join

_INSTALL = 'pip install "xpcnn[mpi]" (mpi4py and the MPICH library)'
_communicator = None


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError(f"xpcnn.distributed needs mpi4py and an MPI library: {_INSTALL}") from None
    return MPI


def communicator():
    """The communicator every function here uses: ``MPI.COMM_WORLD`` unless :func:`use_communicator` chose one."""
    return _communicator if _communicator is not None else _mpi().COMM_WORLD


def use_communicator(comm) -> None:
    """Use ``comm`` (an mpi4py communicator, such as a split of COMM_WORLD) instead of COMM_WORLD."""
    global _communicator
    _communicator = comm


def rank() -> int:
    """This process's number, 0 to size() - 1."""
    return communicator().Get_rank()


def size() -> int:
    """The number of processes."""
    return communicator().Get_size()


def is_main() -> bool:
    """Whether this is rank 0: the process that prints, shows progress and writes files."""
    return rank() == 0


CUDA_AWARE_VARIABLE = "XPCNN_CUDA_AWARE_MPI"


def lists_cuda_device_memory(kinds: str) -> bool:
    """Whether an ``mpi_memory_alloc_kinds`` value (MPI 4.1: comma-separated kinds, each ``kind[:restrictor...]``)
    includes CUDA device memory: ``cuda:device``, or ``cuda`` with no restrictor (all CUDA memory);
    ``cuda:host`` or ``cuda:managed`` alone do not, and neither does ``mpi,system``."""
    for entry in kinds.split(","):
        kind, *restrictors = [part.strip().lower() for part in entry.split(":")]
        if kind == "cuda" and (not restrictors or "device" in restrictors):
            return True
    return False


def _query_cuda_support() -> bool:
    """MPIX_Query_cuda_support() (Open MPI's extension, also in MPICH) where ctypes finds it among the process's
    global symbols; False where it is absent or hidden (MPICH's pip build keeps its symbols local)."""
    try:
        import ctypes
        query = getattr(ctypes.CDLL(None), "MPIX_Query_cuda_support", None)
        if query is None:
            return False
        query.restype = ctypes.c_int
        return query() == 1
    except (OSError, AttributeError, TypeError):
        return False


def cuda_aware(comm=None) -> bool:
    """Whether the MPI library takes GPU buffers. ``XPCNN_CUDA_AWARE_MPI=1`` or ``0`` decides when set;
    otherwise yes when the library lists CUDA device memory among its ``mpi_memory_alloc_kinds``
    (:func:`lists_cuda_device_memory`) or answers MPIX_Query_cuda_support() with 1 (Open MPI 5)."""
    forced = os.environ.get(CUDA_AWARE_VARIABLE, "").strip()
    if forced:
        if forced not in ("0", "1"):
            raise ValueError(f"{CUDA_AWARE_VARIABLE} must be 0 (stage GPU buffers through the host) or 1 (hand "
                             f"them to MPI), got {forced!r}")
        return forced == "1"
    info = (comm if comm is not None else communicator()).Get_info()
    try:
        kinds = info.Get("mpi_memory_alloc_kinds") or ""
    finally:
        info.Free()
    return lists_cuda_device_memory(kinds) or _query_cuda_support()


def local_threads() -> int:
    """This process's share of the machine's cores: the cores divided by the processes on this machine."""
    mpi = _mpi()
    node = communicator().Split_type(mpi.COMM_TYPE_SHARED)
    try:
        local = node.Get_size()
    finally:
        node.Free()
    return max(1, (os.cpu_count() or 1) // local)


def limit_threads(count: int | None = None) -> int:
    """Limit the BLAS/OpenMP (and PyTorch) threads of this process to ``count`` (default
    :func:`local_threads`), so processes sharing a machine do not oversubscribe its cores; returns it.
    Uses threadpoolctl where installed (``xpcnn[mpi]`` installs it)."""
    count = local_threads() if count is None else int(count)
    if count < 1:
        raise ValueError(f"limit_threads: count must be >= 1, got {count}")
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(count)
    except ImportError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)
    return count


# ---------------------------------------------------------------------------- reductions
class Transport:
    """Sums arrays over every process, in place where it can; host staging with reusable buffers, or the
    device buffer itself when the MPI library is CUDA-aware."""

    def __init__(self, comm=None, cuda_aware_mpi: bool | None = None):
        self.comm = comm if comm is not None else communicator()
        self.mpi = _mpi()
        self.device_direct = cuda_aware(self.comm) if cuda_aware_mpi is None else bool(cuda_aware_mpi)
        self._buffers: dict[tuple, np.ndarray] = {}
        self.seconds = 0.0               # time spent in Allreduce (for benchmarks)
        self.calls = 0

    def allreduce_sum(self, array, slot: Any = None) -> Any:
        """The element-wise sum of the 1-D ``array`` over every process, on ``array``'s library and device.
        ``slot`` names a reusable staging buffer (one per gradient bucket)."""
        started = time.perf_counter()
        self.calls += 1
        if self.device_direct and on_gpu(array) and hasattr(array, "__cuda_array_interface__"):
            synchronize_array(array)     # MPI reads the memory now, not after the kernels queued to write it
            self.comm.Allreduce(self.mpi.IN_PLACE, array, op=self.mpi.SUM)   # a bucket is one contiguous array
            self.seconds += time.perf_counter() - started
            return array
        n = int(array.shape[0])
        key = (slot, str(array.dtype))
        buffer = self._buffers.get(key) if slot is not None else None
        if buffer is None or buffer.shape[0] < n:
            buffer = staging_buffer(n, array)
            if slot is not None:
                self._buffers[key] = buffer
        host = copy_to_host(array, buffer)
        self.comm.Allreduce(self.mpi.IN_PLACE, host, op=self.mpi.SUM)
        result = like(host, array)
        self.seconds += time.perf_counter() - started
        return result


_transport: Transport | None = None


def transport() -> Transport:
    global _transport
    if _transport is None or _transport.comm is not communicator():
        _transport = Transport()
    return _transport


def allreduce_sum(array) -> Any:
    """The sum over every process of the 1-D ``array`` (any backend's), on its library and device."""
    return transport().allreduce_sum(array)


# ---------------------------------------------------------------------------- parameters
def _signature(items: list[tuple[str, tuple, str]]) -> np.ndarray:
    text = json.dumps([[name, list(shape), dtype] for name, shape, dtype in items])
    return np.frombuffer(hashlib.sha256(text.encode()).digest(), dtype=np.uint8).copy()


class Disagreement(ValueError):
    """The processes were given different things (models, epochs, data sizes): raised alike on every
    process, from what all of them exchanged, so none is left waiting and none needs aborting."""


def _agree(what: str, items: list[tuple[str, tuple, str]], comm) -> None:
    """Raise the same Disagreement on every process unless every process has the same ``items``."""
    mine = _signature(items)
    everyone = np.empty((comm.Get_size(), mine.size), dtype=np.uint8)
    comm.Allgather(mine, everyone)
    differ = [r for r in range(comm.Get_size()) if not np.array_equal(everyone[r], everyone[0])]
    if differ:
        raise Disagreement(f"broadcast_parameters: the {what} on rank(s) {', '.join(map(str, differ))} differs from "
                         f"rank 0's (names, shapes or dtypes); every process must build the same model")


def agree(where: str, settings: dict[str, Any]) -> None:
    """Check that every process holds the same ``settings`` (small values: numbers, flags, shapes, names),
    with one ``allgather``; raise the same one-line :class:`Disagreement` on every process naming the first
    setting that differs, e.g. ``fit: the processes disagree on epochs: rank 0 has 3, rank 1 has 4``."""
    everyone = communicator().allgather(list(settings.values()))
    for position, name in enumerate(settings):
        values = [row[position] for row in everyone]
        if any(value != values[0] for value in values):
            ranks = [0] + [r for r, value in enumerate(values) if value != values[0]]
            held = ", ".join(f"rank {r} has {values[r]!r}" for r in ranks)
            raise Disagreement(f"{where}: the processes disagree on {name}: {held}")


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (one Allreduce of one number): a decision such as stopping
    training that every process must take alike."""
    value = np.array([1 if flag else 0], dtype=np.int32)
    communicator().Allreduce(_mpi().IN_PLACE, value, op=_mpi().MAX)
    return bool(value[0])


def broadcast_parameters(model, root: int = 0, optimizer: Optimizer | None = None) -> None:
    """Give every process ``root``'s parameters and buffers (and, with ``optimizer``, its state and step
    count, for a resumed run). First checks that every process holds a model (and optimizer state) of the
    same names, shapes and dtypes: a mismatch is the same ValueError on every process, never a hang."""
    comm = communicator()
    slots = [(key, p, "data") for key, p in model.named_parameters()] + list(model.buffer_slots())
    _agree("model", [(key, tuple(getattr(owner, name).shape), str(getattr(owner, name).dtype))
                     for key, owner, name in slots], comm)
    for _, owner, name in slots:
        value = getattr(owner, name)
        host = np.array(to_numpy(value), copy=True, order="C")     # (keeps a 0-d buffer 0-d)
        comm.Bcast(host, root=root)
        setattr(owner, name, like(host, value))
    if optimizer is not None:
        saved = optimizer.state_dict()
        state = saved["state"]
        _agree("optimizer state", [(key, tuple(np.shape(v)), str(np.asarray(v).dtype)) for key, v in sorted(state.items())],
               comm)
        for key in sorted(state):
            state[key] = np.array(state[key], copy=True, order="C")
            comm.Bcast(state[key], root=root)
        step = np.array([saved["step"]], dtype=np.int64)
        comm.Bcast(step, root=root)
        saved["step"] = int(step[0])
        optimizer.load_state_dict(saved)


class DistributedOptimizer:
    """``optimizer`` with its gradients averaged over every process before each step.

    ``step()`` gathers the gradients of the trainable parameters (a parameter without a gradient on a
    process counts as zeros there, so every process reduces the same buckets) into buckets of about
    ``bucket_bytes``, sums each bucket over the processes with one in-place ``Allreduce``, divides by the
    number of processes, and runs the wrapped optimizer's step (which clips the averaged gradients when the
    wrapped optimizer has ``clip_grad_norm``, so every process clips alike). Everything else (``zero_grad``,
    ``state_dict``, ``lr``, ``param_groups``, ...) is the wrapped optimizer's. ``cuda_aware=True``/``False``
    hands GPU buckets to MPI directly / stages them through the host, whatever :func:`cuda_aware` detects.
    """

    def __init__(self, optimizer: Optimizer, bucket_bytes: int = 25 * 2**20, cuda_aware: bool | None = None):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"DistributedOptimizer: expected an xpcnn optimizer, got {type(optimizer).__name__}")
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, int) or bucket_bytes < 1:
            raise ValueError(f"DistributedOptimizer: bucket_bytes must be a positive int, got {bucket_bytes!r}")
        if cuda_aware not in (None, True, False):
            raise ValueError(f"DistributedOptimizer: cuda_aware must be None (detect), True or False, "
                             f"got {cuda_aware!r}")
        self.optimizer, self.bucket_bytes = optimizer, bucket_bytes
        self.transport = transport() if cuda_aware is None else Transport(cuda_aware_mpi=cuda_aware)

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def buckets(self) -> list[list[int]]:
        """The indices of the trainable parameters, in order, grouped into buckets of about ``bucket_bytes``
        (a parameter larger than that is a bucket of its own)."""
        groups: list[list[int]] = []
        filled = self.bucket_bytes
        for index, p in enumerate(self.optimizer.params):
            if not p.requires_grad:
                continue
            nbytes = int(np.prod(p.shape)) * np.dtype(dtype_name(p.data)).itemsize
            if filled + nbytes > self.bucket_bytes and filled > 0:
                groups.append([])
                filled = 0
            groups[-1].append(index)
            filled += nbytes
        return groups

    def allreduce_gradients(self) -> None:
        """Average every trainable parameter's gradient over the processes (see the class description)."""
        count = size()
        params = self.optimizer.params
        for number, bucket in enumerate(self.buckets()):
            members = [params[i] for i in bucket]
            xp = array_api_compat.array_namespace(members[0].data)
            grads = [p.grad if p.grad is not None else xp.zeros_like(p.data) for p in members]
            ends = list(itertools.accumulate(int(np.prod(p.shape)) for p in members))
            bounds = list(zip([0] + ends[:-1], ends))
            # joined as the optimizer joins them (slice assignment on GPUs: no pointer table crosses)
            joined = join(xp, grads, members[0].data.dtype, bounds)
            mean = self.transport.allreduce_sum(joined, slot=number) * (1.0 / count)
            for p, (start, stop) in zip(members, bounds):
                p.grad = xp.reshape(mean[start:stop], p.shape)

    def step(self) -> None:
        self.allreduce_gradients()
        self.optimizer.step()


# ---------------------------------------------------------------------------- data
def local_slice(start: int, stop: int, rank_: int | None = None, size_: int | None = None) -> tuple[int, int]:
    """This process's part ``[lo, hi)`` of the global batch ``[start, stop)``: consecutive pieces whose sizes
    differ by at most one (the first ``(stop - start) % size`` processes take one more)."""
    rank_ = rank() if rank_ is None else rank_
    size_ = size() if size_ is None else size_
    base, extra = divmod(stop - start, size_)
    lo = start + rank_ * base + min(rank_, extra)
    return lo, lo + base + (1 if rank_ < extra else 0)


def global_batches(n: int, batch_size: int, rank_: int | None = None,
                   size_: int | None = None) -> Iterator[tuple[int, int, int, int]]:
    """``(start, stop, lo, hi)`` for each global batch ``[start, stop)`` of an epoch of ``n`` samples, ``[lo, hi)``
    this process's part (:func:`local_slice`). A global batch smaller than the number of processes is
    skipped by every process, so that each one computes on at least one sample."""
    size_ = size() if size_ is None else size_
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if stop - start >= size_:
            yield (start, stop) + local_slice(start, stop, rank_, size_)


def sharded_indices(n: int, batch_size: int, rng: np.random.Generator, shuffle: bool = True,
                    rank_: int | None = None, size_: int | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """For a hand-written loop: ``(this process's sample indices, global batch size)`` per global batch
    (:func:`global_batches`). Every process must pass a generator in the same state (the same seed), so all
    draw one permutation."""
    order = rng.permutation(n) if shuffle else np.arange(n)
    for start, stop, lo, hi in global_batches(n, batch_size, rank_, size_):
        yield order[lo:hi], stop - start


# ---------------------------------------------------------------------------- layers
_global_batch: int | None = None


def set_global_batch(samples: int | None) -> None:
    """Tell :class:`SyncBatchNorm2D` the size of the global batch the next training forward passes belong
    to (fit's sharded feed does it every step; a loop of its own passes the size :func:`sharded_indices` yields), so
    every process's count is known on the host; ``None`` forgets it. Without it the layers read the counts
    exchanged with the statistics (one device-to-host read per layer and step)."""
    global _global_batch
    _global_batch = samples


def _batch_shares(local: int) -> list[int] | None:
    """Every process's batch size in the global batch set by :func:`set_global_batch`, or None when none is set
    or this process's share is not ``local`` (a forward outside that batch)."""
    if _global_batch is None:
        return None
    count = size()
    shares = [hi - lo for lo, hi in (local_slice(0, _global_batch, r, count) for r in range(count))]
    return shares if shares[rank()] == local else None


class _GlobalStatistics:
    """SyncBatchNorm2D's ``reduce`` (see :func:`xpcnn.functional.batch_norm2d_forward`): called with a 1-D
    array, its sum over every process (the backward pass's two sums, in one buffer); :meth:`moments`, the
    global batch's mean and variance from every process's own, in one Allreduce."""

    def __init__(self):
        self._weights: dict[tuple, Any] = {}

    def __call__(self, array):
        return array if size() == 1 else allreduce_sum(array)

    def moments(self, mean, var, shape: tuple) -> tuple[Any, Any, int]:
        """``(mean, var, count)`` of the global batch per channel, from this process's ``mean`` and biased
        ``var`` (C,) of its input of ``shape`` (N, C, H, W). One Allreduce gathers every process's pair (each
        fills its own row of zeros; adding zeros is exact), then, with w_r = count_r / count,
        mean = Σ w_r mean_r and var = Σ w_r (var_r + (mean_r - mean)²) (the law of total variance: a sum of
        non-negative terms, as accurate as one process's two-pass variance). The counts come from the
        batch sizes on the host (:func:`set_global_batch`), else from the exchanged row's last entry."""
        per_sample, processes = int(shape[2]) * int(shape[3]), size()
        if processes == 1:
            return mean, var, int(shape[0]) * per_sample
        xp, device, me = array_api_compat.array_namespace(mean), array_api_compat.device(mean), rank()
        channels = int(mean.shape[0])
        width = 2 * channels + 1
        row = [xp.zeros((me * width,), dtype=mean.dtype, device=device), mean, var,
               xp.full((1,), float(shape[0]), dtype=mean.dtype, device=device),
               xp.zeros(((processes - 1 - me) * width,), dtype=mean.dtype, device=device)]
        rows = xp.reshape(allreduce_sum(xp.concat(row)), (processes, width))
        shares = _batch_shares(int(shape[0]))
        if shares is None:
            shares = [int(round(v)) for v in to_numpy(rows[:, -1]).tolist()]
        key = (tuple(shares), str(mean.dtype), str(device))
        if key not in self._weights:            # a few batch-size patterns an epoch: one small copy each, once
            self._weights[key] = like(np.asarray(shares, dtype=np.float64)[:, None] / sum(shares), mean)
        weights = self._weights[key]
        means, variances = rows[:, :channels], rows[:, channels:2 * channels]
        total_mean = xp.sum(weights * means, axis=0)
        spread = means - total_mean
        return total_mean, xp.sum(weights * (variances + spread * spread), axis=0), sum(shares) * per_sample


@register
class SyncBatchNorm2D(BatchNorm2D):
    """BatchNorm2D whose batch statistics are those of the global batch: in training each process's
    per-channel mean and variance are combined over every process in one Allreduce per layer (the counts
    known on the host, :func:`set_global_batch`), and the backward pass sums its two per-channel sums
    over the processes in one more; evaluation, the running statistics and the state-dict keys are
    BatchNorm2D's (``torch.nn.SyncBatchNorm``'s names). On one process it is BatchNorm2D."""

    def __init__(self, num_features: int | None = None, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True):
        super().__init__(num_features, eps, momentum, affine)
        self.reduce = _GlobalStatistics()


# ---------------------------------------------------------------------------- faults
@contextlib.contextmanager
def abort_on_error(where: str = "xpcnn"):
    """Inside the block, an exception on any one process is printed with its rank and ends every process
    (``COMM_WORLD.Abort``) instead of leaving the others waiting in a collective forever."""
    try:
        yield
    except BaseException as exc:
        if size() == 1 or isinstance(exc, (SystemExit, Disagreement)):     # raised alike everywhere: no abort
            raise
        message = " ".join(str(exc).split())
        print(f"{where} (rank {rank()} of {size()}): error: {type(exc).__name__}: {message}", file=sys.stderr,
              flush=True)
        sys.stdout.flush()
        communicator().Abort(1)


def seed_everywhere(seed: int | None) -> int:
    """``seed``, or one drawn by rank 0 and sent to every process (so that a run without a seed still shuffles
    alike everywhere)."""
    value = np.array([np.random.SeedSequence(seed).generate_state(1, np.uint64)[0] if seed is None else seed],
                     dtype=np.uint64)
    communicator().Bcast(value, root=0)
    return int(value[0])


def all_sum(values: Iterable[float]) -> np.ndarray:
    """Host numbers summed over every process (float64)."""
    host = np.ascontiguousarray(np.asarray(list(values), dtype=np.float64))
    communicator().Allreduce(_mpi().IN_PLACE, host, op=_mpi().SUM)
    return host
