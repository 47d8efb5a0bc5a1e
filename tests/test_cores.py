"""xpcnn.cores: the cores other processes use, and BLAS threads fitted to the rest."""
import subprocess
import sys
import time

import pytest

from xpcnn import cores
from xpcnn.callbacks import ShareCores


class FakeMachine:
    """A /proc/stat file, a clock and this process's CPU time, all moved by the test."""

    def __init__(self, tmp_path, monkeypatch):
        self.path = tmp_path / "stat"
        self.busy_ticks, self.idle_ticks, self.now, self.own = 0, 0, 0.0, 0.0
        self.write()
        monkeypatch.setattr(cores, "PROC_STAT", str(self.path))
        monkeypatch.setattr(cores.time, "monotonic", lambda: self.now)
        monkeypatch.setattr(cores, "_own_seconds", lambda: self.own)
        monkeypatch.setattr(cores.os, "sysconf", lambda name: 100)
        self.threads = []
        monkeypatch.setattr(cores, "set_threads", lambda n: self.threads.append(n) or n)

    def write(self):
        # user nice system idle iowait irq softirq steal
        self.path.write_text(f"cpu  {self.busy_ticks} 0 0 {self.idle_ticks} 0 0 0 0\ncpu0 0 0 0 0\n")

    def advance(self, seconds, cores_busy, own_cores, total_cores=2):
        self.now += seconds
        self.own += own_cores * seconds
        busy = int(round(100 * seconds * cores_busy))
        self.busy_ticks += busy
        self.idle_ticks += int(round(100 * seconds * total_cores)) - busy
        self.write()


def test_other_processes_load_is_the_machine_busy_time_less_our_own(tmp_path, monkeypatch):
    machine = FakeMachine(tmp_path, monkeypatch)
    share = cores.CoreShare(cores=2, most=2)
    machine.advance(2.0, cores_busy=2.0, own_cores=1.0)          # we use one core, something else the other
    assert share.others() == pytest.approx(1.0)
    machine.advance(1.0, cores_busy=1.0, own_cores=1.0)          # alone: the next window sees nobody else
    assert share.others() == pytest.approx(0.0)


def test_adapt_takes_the_threads_down_beside_a_busy_process_and_back_up_when_it_stops(tmp_path, monkeypatch):
    machine = FakeMachine(tmp_path, monkeypatch)
    share = cores.CoreShare(cores=2, most=2)
    machine.advance(1.0, cores_busy=2.0, own_cores=1.3)          # 2 threads, one of them often waiting
    assert share.adapt() == 1
    machine.advance(1.0, cores_busy=2.0, own_cores=1.0)
    assert share.adapt() == 1
    machine.advance(1.0, cores_busy=1.0, own_cores=1.0)          # the other process has stopped
    assert share.adapt() == 2
    assert machine.threads == [1, 2]                             # set only when the count changes


def test_without_proc_stat_nothing_is_measured_or_changed(tmp_path, monkeypatch):
    machine = FakeMachine(tmp_path, monkeypatch)
    monkeypatch.setattr(cores, "PROC_STAT", str(tmp_path / "missing"))
    share = cores.CoreShare(cores=2, most=2)
    machine.advance(1.0, cores_busy=2.0, own_cores=0.0)
    assert share.adapt() is None and machine.threads == []


def test_the_callback_says_when_it_changes_the_threads(tmp_path, monkeypatch):
    machine = FakeMachine(tmp_path, monkeypatch)
    said = []
    trainer = type("T", (), {"say": staticmethod(said.append)})()
    callback = ShareCores(cores.CoreShare(cores=2, most=2))
    machine.advance(1.0, cores_busy=1.0, own_cores=1.0)
    callback.on_train_begin(trainer)                              # alone from the start: nothing to say
    assert said == []
    machine.advance(1.0, cores_busy=2.0, own_cores=1.0)
    callback.on_epoch_end(trainer, 1, {})
    assert said == ["cores: 1 of 2 busy with other programs; training with 1 BLAS thread"]


def test_a_real_busy_process_is_seen():
    if cores._busy_seconds() is None:
        pytest.skip("no /proc/stat on this platform")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        share = cores.CoreShare()
        time.sleep(1.0)
        others = share.others()
    finally:
        busy.kill()
        busy.wait()
    assert others >= 0.5, f"a process spinning on a core for 1 s was measured as {others:.2f} cores"


def test_set_threads_limits_blas_and_refuses_nonsense():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits():          # restores the counts afterwards
        assert cores.set_threads(1) == 1
        assert cores.blas_threads() == 1
        assert cores.CoreShare(cores=2).most == 1     # a limit already in force is the ceiling
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="set_threads: count must be an integer >= 1"):
            cores.set_threads(bad)


CPUINFO = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 fma {extra}\n\n"
           "processor\t: 1\nflags\t\t: fpu avx512f\n")


@pytest.mark.parametrize("extra, has", [("avx512f avx512bw", True), ("", False)])
def test_cpu_flags_are_read_from_the_first_processor(tmp_path, extra, has):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(extra=extra))
    flags = cores.cpu_flags(str(path))
    assert {"avx2", "fma"} <= flags and ("avx512f" in flags) == has
    assert cores.cpu_flags(str(tmp_path / "missing")) == set()


@pytest.mark.parametrize("pinned, kernels, flags, hint", [
    ("Haswell", "Haswell", {"avx2", "avx512f"}, True),      # AVX2 kernels held on an AVX-512 CPU
    ("", "Haswell", {"avx2", "avx512f"}, False),            # OpenBLAS's own choice: not second-guessed
    ("SkylakeX", "SkylakeX", {"avx512f"}, False),           # pinned to AVX-512 kernels already
    ("Haswell", "Haswell", {"avx2"}, False),                # a CPU without AVX-512
    ("Haswell", None, {"avx512f"}, False),                  # no OpenBLAS loaded
])
def test_blas_kernels_note_only_when_the_environment_holds_kernels_back(pinned, kernels, flags, hint):
    note = cores.blas_kernels_note(kernels, environ={"OPENBLAS_CORETYPE": pinned} if pinned else {}, flags=flags)
    assert (note is not None) == hint
    if hint:
        assert f"OPENBLAS_CORETYPE={pinned}" in note and kernels in note


def test_blas_kernels_names_what_this_process_runs():
    import os
    kernels = cores.blas_kernels()
    assert kernels is None or isinstance(kernels, str) and kernels
    pinned = os.environ.get("OPENBLAS_CORETYPE")
    if kernels and pinned:          # OpenBLAS reports the core type it was told to use
        assert kernels.lower() == pinned.lower() or pinned not in ("Haswell", "SkylakeX")
