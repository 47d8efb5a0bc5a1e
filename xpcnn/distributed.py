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
  ``fit`` weights each process's loss gradient by its share, so the average is the global batch's);
- :class:`SyncBatchNorm2D`: batch normalisation whose batch statistics (and the sums of its backward
  pass) are summed over every process, so a model with batch norm trains as on one process.

Transport: arrays are staged through one host buffer per bucket (pinned for GPU arrays) and reduced there.
Where the MPI library reports CUDA memory among its ``mpi_memory_alloc_kinds`` (MPI 4.1's way of saying
it is CUDA-aware), GPU buffers are handed to MPI directly instead. An NCCL communicator would slot in as
another :class:`Transport` with the same ``allreduce_sum``; none is claimed here: no GPU has run this code.

mpi4py is imported on first use, so ``import xpcnn.distributed`` works without MPI; using it without
mpi4py says what to install: ``pip install "xpcnn[mpi]"``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from typing import Any, Iterable, Iterator

import array_api_compat
import numpy as np

from .backend import copy_to_host, dtype_name, like, on_gpu, staging_buffer, to_numpy
from .layers import BatchNorm2D, register
from .optim import Optimizer

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


def cuda_aware() -> bool:
    """Whether the MPI library takes GPU buffers (it lists CUDA memory in ``mpi_memory_alloc_kinds``)."""
    info = communicator().Get_info()
    try:
        kinds = info.Get("mpi_memory_alloc_kinds") or ""
    finally:
        info.Free()
    return "cuda" in kinds.lower()


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

    def __init__(self, comm=None):
        self.comm = comm if comm is not None else communicator()
        self.mpi = _mpi()
        self.device_direct = cuda_aware()
        self._buffers: dict[tuple, np.ndarray] = {}
        self.seconds = 0.0               # time spent in Allreduce (for benchmarks)
        self.calls = 0

    def allreduce_sum(self, array, slot: Any = None) -> Any:
        """The element-wise sum of the 1-D ``array`` over every process, on ``array``'s library and device.
        ``slot`` names a reusable staging buffer (one per gradient bucket)."""
        started = time.perf_counter()
        self.calls += 1
        if self.device_direct and on_gpu(array) and hasattr(array, "__cuda_array_interface__"):
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


def _agree(what: str, items: list[tuple[str, tuple, str]], comm) -> None:
    """Raise the same ValueError on every process unless every process has the same ``items``."""
    mine = _signature(items)
    everyone = np.empty((comm.Get_size(), mine.size), dtype=np.uint8)
    comm.Allgather(mine, everyone)
    differ = [r for r in range(comm.Get_size()) if not np.array_equal(everyone[r], everyone[0])]
    if differ:
        raise ValueError(f"broadcast_parameters: the {what} on rank(s) {', '.join(map(str, differ))} differs from "
                         f"rank 0's (names, shapes or dtypes); every process must build the same model")


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
    number of processes, and runs the wrapped optimizer's step. Everything else (``zero_grad``,
    ``state_dict``, ``lr``, ``param_groups``, ...) is the wrapped optimizer's.
    """

    def __init__(self, optimizer: Optimizer, bucket_bytes: int = 25 * 2**20):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"DistributedOptimizer: expected an xpcnn optimizer, got {type(optimizer).__name__}")
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, int) or bucket_bytes < 1:
            raise ValueError(f"DistributedOptimizer: bucket_bytes must be a positive int, got {bucket_bytes!r}")
        self.optimizer, self.bucket_bytes = optimizer, bucket_bytes
        self.transport = transport()

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
            flat = [xp.reshape(p.grad, (-1,)) if p.grad is not None else
                    xp.zeros((int(np.prod(p.shape)),), dtype=p.data.dtype, device=array_api_compat.device(p.data))
                    for p in members]
            summed = self.transport.allreduce_sum(flat[0] if len(flat) == 1 else xp.concat(flat), slot=number)
            start = 0
            for p in members:
                stop = start + int(np.prod(p.shape))
                p.grad = xp.reshape(summed[start:stop], p.shape) / count
                start = stop

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
@register
class SyncBatchNorm2D(BatchNorm2D):
    """BatchNorm2D whose batch statistics are those of the global batch: in training the per-channel sums
    (and the count) and then the squared deviations are summed over every process, and the backward pass
    sums its two per-channel sums likewise; evaluation, the running statistics and the state-dict keys are
    BatchNorm2D's (``torch.nn.SyncBatchNorm``'s names). On one process it is BatchNorm2D."""

    def __init__(self, num_features: int | None = None, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True):
        super().__init__(num_features, eps, momentum, affine)
        self.reduce = allreduce_sum


# ---------------------------------------------------------------------------- faults
@contextlib.contextmanager
def abort_on_error(where: str = "xpcnn"):
    """Inside the block, an exception on any one process is printed with its rank and ends every process
    (``COMM_WORLD.Abort``) instead of leaving the others waiting in a collective forever."""
    try:
        yield
    except BaseException as exc:
        if size() == 1 or isinstance(exc, (SystemExit,)):
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
