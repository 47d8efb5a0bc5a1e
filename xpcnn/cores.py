"""Sharing the CPU with other programs: BLAS threads sized to the cores nobody else is using.

A BLAS library starts one thread per core and its threads wait for each other at every matrix
product. When another program keeps a core busy, the thread on that core runs only part of the
time and every product waits for it: on a 2-core machine beside one busy process, LeNet trains at
half the speed with 2 threads that it reaches with 1 (``benchmarks/quickstart.py`` measures it).
:class:`CoreShare` measures how many cores other processes used over a window (Linux's
``/proc/stat`` minus this process's own CPU time) and sets the thread count to the cores left.

    share = CoreShare()            # starts a window
    ...                            # any work: loading data, an epoch
    threads = share.adapt()        # cores other processes used over the window -> BLAS threads
"""
from __future__ import annotations

import os
import sys
import time

#: /proc/stat's first line: "cpu user nice system idle iowait irq softirq steal ...", in clock ticks.
PROC_STAT = "/proc/stat"


#: Linux's description of the processors: "flags" lines list each one's instruction sets.
PROC_CPUINFO = "/proc/cpuinfo"

#: OpenBLAS core types whose single-precision kernels use AVX-512 (the others stop at AVX2 or below).
AVX512_CORETYPES = ("SkylakeX", "Cooperlake", "SapphireRapids")


def cpu_flags(cpuinfo: str = PROC_CPUINFO) -> set[str]:
    """The instruction-set flags of this machine's first processor (Linux), or an empty set."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as info:
            block = info.read(1 << 16).split("\n\n", 1)[0]
    except OSError:
        return set()
    for line in block.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def blas_kernels_note(kernels: str | None, environ=None, flags: set[str] | None = None) -> str | None:
    """A hint when ``$OPENBLAS_CORETYPE`` holds OpenBLAS to kernels below what the CPU has, else None.

    OpenBLAS picks its kernels by the CPU it finds; the variable overrides that. On the 2-core AVX-512
    machine of docs/performance.md, whose environment set ``OPENBLAS_CORETYPE=Haswell`` (AVX2), NumPy's
    float32 products ran 1.2-1.9x faster with the variable unset (OpenBLAS then takes SkylakeX)."""
    environ = os.environ if environ is None else environ
    pinned = environ.get("OPENBLAS_CORETYPE")
    if not pinned or kernels is None or kernels in AVX512_CORETYPES:
        return None
    if "avx512f" not in (cpu_flags() if flags is None else flags):       # /proc/cpuinfo read only here
        return None
    return (f"OPENBLAS_CORETYPE={pinned} holds OpenBLAS to its {kernels} kernels on a CPU with AVX-512; "
            "unset it to let OpenBLAS choose (faster matrix products, docs/performance.md)")


def blas_kernels() -> str | None:
    """The kernels this process's OpenBLAS runs ("Haswell", "SkylakeX", ...; threadpoolctl), or None."""
    from threadpoolctl import threadpool_info

    names = [pool.get("architecture") for pool in threadpool_info() if pool.get("internal_api") == "openblas"]
    return next((name for name in names if name), None)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (every process), or None off Linux."""
    try:
        with open(PROC_STAT, encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    ticks = [int(value) for value in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)          # idle + iowait
    busy = sum(ticks[:8]) - idle                                    # guest time is already in user
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


def blas_threads() -> int | None:
    """The threads this process's BLAS libraries use now (the most of any), or None when none is found."""
    from threadpoolctl import threadpool_info

    counts = [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return max(counts) if counts else None


_threads_in_force: list = []


def threads_in_force() -> int:
    """The BLAS threads as xpcnn last saw them: read once (threadpoolctl, a fraction of a millisecond), then
    kept and updated by :func:`set_threads`, so that an op may ask on every call (1 when none is found)."""
    if not _threads_in_force:
        _threads_in_force.append(blas_threads() or 1)
    return _threads_in_force[0]


def set_threads(count: int) -> int:
    """Limit this process's BLAS/OpenMP threads (threadpoolctl) and PyTorch's, if loaded, to ``count``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"set_threads: count must be an integer >= 1, got {count!r}")
    from threadpoolctl import threadpool_limits

    threadpool_limits(count)
    _threads_in_force[:] = [count]
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)
    return count


class CoreShare:
    """Measures the cores other processes use, window by window, and fits this process's threads to the rest.

    ``cores``: the cores to share (default: :func:`usable_cores`); ``most``: the most threads to use
    (default: the BLAS threads at construction, so a limit the user set, e.g. ``OPENBLAS_NUM_THREADS=1``,
    is kept). Off Linux (no ``/proc/stat``) nothing is measured and :meth:`adapt` leaves the threads as
    they are.
    """

    def __init__(self, cores: int | None = None, most: int | None = None):
        self.cores = usable_cores() if cores is None else int(cores)
        self.most = min(self.cores, (blas_threads() or self.cores) if most is None else int(most))
        self.threads: int | None = None
        self._start = self._sample()

    @staticmethod
    def _sample():
        busy = _busy_seconds()
        return None if busy is None else (time.monotonic(), busy, _own_seconds())

    def others(self) -> float | None:
        """Cores kept busy by other processes since the window began (starts the next window), or None."""
        now = self._sample()
        start, self._start = self._start, now
        if now is None or start is None or now[0] - start[0] <= 0:
            return None
        wall = now[0] - start[0]
        elsewhere = (now[1] - start[1]) - (now[2] - start[2])
        return max(0.0, elsewhere / wall)

    def adapt(self) -> int | None:
        """Set the threads to the cores the last window left free (at least 1); returns the count set, or
        None when nothing could be measured. A core counts as taken when another process used over
        half of it."""
        others = self.others()
        if others is None:
            return None
        threads = max(1, min(self.most, self.cores - int(others + 0.5)))
        if threads != self.threads:
            self.threads = set_threads(threads)
        return threads
