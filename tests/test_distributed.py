"""Data-parallel training over MPI: 2 processes started by ``mpiexec`` (MPICH from the package index) train to
the same weights as one process at the same global batch. Skipped with the reason where mpi4py or mpiexec is
missing (``pip install "xpcnn[mpi]"``)."""
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import xpcnn
from xpcnn import distributed as D

HERE = pathlib.Path(__file__).resolve().parent
CASES = HERE / "distributed_cases.py"


def _mpiexec() -> str:
    pytest.importorskip("mpi4py", reason='mpi4py is not installed: pip install "xpcnn[mpi]"')
    beside = pathlib.Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip('no mpiexec: pip install "xpcnn[mpi]" installs MPICH with it')
    return found


def mpirun(*args, n=2, timeout=240, cwd=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([_mpiexec(), "-n", str(n), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)


def _case(case, tmp_path):
    out = tmp_path / "out.npz"
    result = mpirun(sys.executable, str(CASES), case, str(out))
    assert result.returncode == 0, result.stderr
    with np.load(out) as saved:
        return {key: saved[key] for key in saved.files}


@pytest.mark.parametrize("case", ["lenet-sgd-float32-16", "lenet-adam-float32-16", "lenet-sgd-float64-16",
                                  "lenet-adam-float64-16", "syncbn-sgd-float32-15", "syncbn-adam-float32-15",
                                  "syncbn-sgd-float64-15", "syncbn-adam-float64-15"])
def test_two_processes_train_as_one_at_the_same_global_batch(case, tmp_path):
    """10 steps; the SyncBatchNorm2D model's global batch of 15 splits 8 + 7 (each process's loss gradient is
    weighted by its share); its single-process twin has BatchNorm2D."""
    sys.path.insert(0, str(HERE))
    import distributed_cases
    together = _case(case, tmp_path)
    alone = distributed_cases.run(case, distributed=False)
    assert sorted(together) == sorted(alone)
    tolerance = 1e-5 if "float32" in case else 1e-10
    for key in alone:
        np.testing.assert_allclose(together[key], alone[key], rtol=tolerance, atol=tolerance, err_msg=key)


def test_small_buckets_clipping_and_a_validation_split_train_as_one_process(tmp_path):
    sys.path.insert(0, str(HERE))
    import distributed_cases
    together = _case("buckets", tmp_path)
    alone = distributed_cases.buckets(distributed=False)
    for key in alone:
        np.testing.assert_allclose(together[key], alone[key], rtol=1e-10, atol=1e-10, err_msg=key)


def test_broadcast_parameters_makes_every_rank_hold_rank_0s_model_and_optimizer(tmp_path):
    saved = _case("broadcast", tmp_path)
    assert bool(saved["same"]) and int(saved["momentum_entries"]) > 0
    from xpcnn.zoo import lenet
    rank0 = lenet(image_size=12, width=4, seed=0)
    changed = [k for k, v in rank0.state_dict().items() if not np.array_equal(saved[k], v)]
    assert changed, "rank 0 took a training step, so its weights moved from the seed's"


def test_models_that_differ_across_ranks_fail_on_every_rank_at_broadcast(tmp_path):
    started = time.perf_counter()
    result = mpirun(sys.executable, str(CASES), "mismatch", str(tmp_path / "out.npz"), timeout=120)
    assert result.returncode != 0
    assert result.stderr.count("broadcast_parameters: the model on rank(s) 1 differs from rank 0's") == 2
    assert time.perf_counter() - started < 120


@pytest.mark.parametrize("case,message", [("fault", "ValueError: fit: labels must lie in [0, 10)"),
                                          ("nan", "ValueError: fit: x contains NaN or infinity (first in sample 5)")])
def test_an_error_on_one_rank_stops_every_rank_with_the_error_shown(case, message, tmp_path):
    started = time.perf_counter()
    result = mpirun(sys.executable, str(CASES), case, str(tmp_path / "out.npz"), timeout=120)
    assert result.returncode != 0
    assert f"fit (rank 1 of 2): error: {message}" in result.stderr
    assert time.perf_counter() - started < 120


def test_ranks_that_disagree_fail_alike_and_one_rank_stopping_stops_all(tmp_path):
    """epochs, batch size or data length differing on rank 1: the same one-line error on both ranks (was: a
    hang, or an MPI "Message truncated" abort); EarlyStopping on rank 1 only: both stop after epoch 2 of 4."""
    started = time.perf_counter()
    saved = _case("disagree", tmp_path)
    assert time.perf_counter() - started < 120
    expected = ["fit: the processes disagree on epochs: rank 0 has 1, rank 1 has 2",
                "fit: the processes disagree on batch_size: rank 0 has 8, rank 1 has 9",
                "fit: the processes disagree on len(x): rank 0 has 32, rank 1 has 28"]
    assert list(saved["messages"]) == expected * 2                  # rank 0's three, then rank 1's
    assert list(saved["epochs"]) == [2, 2]


def test_sync_batch_norm_makes_one_allreduce_per_pass_and_no_host_read(tmp_path):
    """A step of a model with one SyncBatchNorm2D: 3 Allreduce calls (the forward's statistics, the backward's
    sums, the gradient bucket; were 4) and no device-to-host read when the global batch is known on the host
    (was one per layer and step); without it, one read; both equal BatchNorm2D on the whole batch."""
    pytest.importorskip("torch")
    sys.path.insert(0, str(HERE))
    import distributed_cases
    saved = _case("syncbn-step", tmp_path)
    assert list(saved["calls"]) == [3, 3]
    assert list(saved["reads"]) == [0, 1]
    model = distributed_cases._model("syncbn", "float64", distributed=False)
    x, y = distributed_cases._data(15)
    model.fit(x, y, optimizer=xpcnn.optim.SGD(model.parameters(), lr=0.1), batch_size=15, shuffle=False, verbose=0)
    for key, value in model.state_dict().items():
        for said in ("said", "unsaid"):
            np.testing.assert_allclose(saved[f"{said}.{key}"], value, rtol=1e-12, atol=1e-12, err_msg=key)


def test_rank_0_writes_the_files_and_every_rank_resumes_from_them(tmp_path):
    saved = _case("checkpoint", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz", "metrics.csv", "out.npz"]
    assert xpcnn.load_checkpoint(tmp_path / "ckpt.npz").epoch == 2
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 3          # a header and 2 epochs
    for key in [k for k in saved if k.startswith("straight.")]:
        np.testing.assert_array_equal(saved[key.replace("straight.", "resumed.")], saved[key], err_msg=key)


def test_distributed_training_from_the_command_line_matches_one_process(tmp_path):
    """`mpiexec -n 2 xpcnn train --distributed` on the bundled sample: within 1 % of the single-process run of
    the same global batch (the 10-step tests above are the exact evidence)."""
    args = ["-m", "xpcnn", "train", "--epochs", "2", "--no-progress", "--seed", "0"]
    result = mpirun(sys.executable, *args, "--distributed", "--out", str(tmp_path / "two"), timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("test accuracy") == 1                 # rank 0 alone prints
    assert "2 processes" in result.stdout and "1 thread" in result.stdout
    single = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                            timeout=300)
    assert single.returncode == 0, single.stderr
    two = float(result.stdout.split("test accuracy")[1].split()[0])
    one = float(single.stdout.split("test accuracy")[1].split()[0])
    assert abs(two - one) <= 0.01 and one > 0.9
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


# ---------------------------------------------------------------------------- without mpiexec
def test_local_slices_cover_each_global_batch_once():
    for total in (15, 16, 3):
        for size in (1, 2, 4):
            pieces = [D.local_slice(10, 10 + total, r, size) for r in range(size)]
            assert pieces[0][0] == 10 and pieces[-1][1] == 10 + total
            assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
            assert max(hi - lo for lo, hi in pieces) - min(hi - lo for lo, hi in pieces) <= 1


def test_sharded_indices_draw_one_permutation_everywhere():
    rng = [np.random.default_rng(7) for _ in range(3)]
    parts = [list(D.sharded_indices(20, 8, rng[r], rank_=r, size_=3)) for r in range(3)]
    whole = np.concatenate([np.concatenate([parts[r][b][0] for r in range(3)]) for b in range(3)])
    np.testing.assert_array_equal(whole, np.random.default_rng(7).permutation(20))
    assert [count for _, count in parts[0]] == [8, 8, 4]


def test_the_module_imports_without_mpi_and_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setattr(D, "_communicator", None)
    with pytest.raises(ImportError, match=r'pip install "xpcnn\[mpi\]"'):
        D.rank()


def test_distributed_optimizer_refuses_bad_arguments():
    model = xpcnn.zoo.mlp(seed=0)
    with pytest.raises(TypeError, match="DistributedOptimizer: expected an xpcnn optimizer"):
        D.DistributedOptimizer(model.parameters())
    pytest.importorskip("mpi4py")
    with pytest.raises(ValueError, match="bucket_bytes must be a positive int"):
        D.DistributedOptimizer(optim_sgd(model), bucket_bytes=0)
    with pytest.raises(ValueError, match="cuda_aware must be None .detect., True or False, got 'yes'"):
        D.DistributedOptimizer(optim_sgd(model), cuda_aware="yes")
    assert not D.DistributedOptimizer(optim_sgd(model), cuda_aware=False).transport.device_direct


class _Info:
    def __init__(self, kinds):
        self.kinds = kinds

    def Get(self, key):
        return self.kinds if key == "mpi_memory_alloc_kinds" else None

    def Free(self):
        pass


class _World:
    """A stand-in communicator: its info lists ``kinds``; Allreduce and allgather are recorded or faked."""

    def __init__(self, kinds="mpi,system", others=()):
        self.kinds, self.others, self.calls = kinds, list(others), []

    def Get_info(self):
        return _Info(self.kinds)

    def Get_size(self):
        return 1 + len(self.others)

    def Get_rank(self):
        return 0

    def Allreduce(self, send, receive, op=None):
        self.calls.append("Allreduce")

    def allgather(self, mine):
        return [mine, *self.others]


@pytest.mark.parametrize("kinds,device", [("mpi,system", False), ("", False), ("cuda:host", False),
                                          ("mpi,system,cuda:host,cuda:managed", False), ("rocm:device", False),
                                          ("cuda:device", True), ("mpi, system, CUDA:device", True),
                                          ("cuda", True), ("system,cuda:host:device", True)])
def test_cuda_device_memory_is_read_from_the_memory_kinds_list(kinds, device):
    assert D.lists_cuda_device_memory(kinds) is device


def test_cuda_awareness_is_detected_or_set_by_the_environment(monkeypatch):
    monkeypatch.delenv("XPCNN_CUDA_AWARE_MPI", raising=False)
    monkeypatch.setattr(D, "_query_cuda_support", lambda: False)
    assert not D.cuda_aware(_World("mpi,system,cuda:host"))          # matched "cuda" before
    assert D.cuda_aware(_World("mpi,system,cuda:device"))
    monkeypatch.setattr(D, "_query_cuda_support", lambda: True)      # Open MPI 5: no memory kinds, the query
    assert D.cuda_aware(_World("mpi,system"))
    monkeypatch.setenv("XPCNN_CUDA_AWARE_MPI", "0")
    assert not D.cuda_aware(_World("cuda:device"))
    monkeypatch.setenv("XPCNN_CUDA_AWARE_MPI", "1")
    assert D.cuda_aware(_World("mpi,system"))
    monkeypatch.setenv("XPCNN_CUDA_AWARE_MPI", "yes")
    with pytest.raises(ValueError, match="XPCNN_CUDA_AWARE_MPI must be 0 .* or 1 .*, got 'yes'"):
        D.cuda_aware(_World())


class _GpuBucket:
    """A stand-in for a CUDA array: on a cuda device, with a __cuda_array_interface__."""
    shape = (4,)
    dtype = np.dtype("float32")
    device = type("Device", (), {"type": "cuda"})()
    __cuda_array_interface__ = {"shape": (4,), "typestr": "<f4", "data": (0, False), "version": 3}


def test_a_cuda_aware_transport_waits_for_the_stream_before_mpi_reads(monkeypatch):
    pytest.importorskip("mpi4py")
    world = _World()
    monkeypatch.setattr(D, "synchronize_array", lambda array: world.calls.append("synchronize"))
    transport = D.Transport(comm=world, cuda_aware_mpi=True)
    bucket = _GpuBucket()
    assert transport.allreduce_sum(bucket) is bucket
    assert world.calls == ["synchronize", "Allreduce"]
    assert not D.Transport(comm=world, cuda_aware_mpi=False).device_direct


def test_agree_names_the_first_setting_that_differs(monkeypatch):
    monkeypatch.setattr(D, "_communicator", _World(others=[[3, (1, 12, 12), "float32"]]))
    D.agree("fit", {"epochs": 3, "the sample shape": (1, 12, 12), "x.dtype": "float32"})
    monkeypatch.setattr(D, "_communicator", _World(others=[[3, (1, 14, 14), "float64"]]))
    with pytest.raises(D.Disagreement, match=r"^fit: the processes disagree on the sample shape: rank 0 has "
                                             r"\(1, 12, 12\), rank 1 has \(1, 14, 14\)$"):
        D.agree("fit", {"epochs": 3, "the sample shape": (1, 12, 12), "x.dtype": "float32"})


def optim_sgd(model):
    return xpcnn.optim.SGD(model.parameters(), lr=0.1)


def test_a_distributed_step_averages_the_gradients_then_runs_the_wrapped_step_which_clips(monkeypatch):
    """Two processes (a stand-in world; the other one's gradients are ones): step() = allreduce every bucket,
    divide by 2, then the wrapped optimizer's step, which clips the averaged gradients to its clip_grad_norm."""
    pytest.importorskip("mpi4py")
    monkeypatch.setattr(D, "_communicator", _World(others=[None]))
    events = []

    class Transport:
        def allreduce_sum(self, array, slot=None):
            events.append(("allreduce", slot))
            return array + 1.0                        # + the other process's ones

    model, twin = xpcnn.zoo.mlp(seed=0), xpcnn.zoo.mlp(seed=0)
    inner, by_hand = optim_sgd(model), optim_sgd(twin)
    inner.clip_grad_norm = 0.05
    wrapped = D.DistributedOptimizer(inner, bucket_bytes=2048, cuda_aware=False)
    wrapped.transport = Transport()
    step = inner.step
    monkeypatch.setattr(inner, "step", lambda: events.append(("step", None)) or step())
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    for m in (model, twin):
        m.zero_grad()
        m.backward(m(x), need_dx=False)               # any gradient will do: d(sum of logits²/2)
    for p in twin.parameters():
        p.grad = (p.grad + 1.0) / 2
    xpcnn.optim.clip_grad_norm(twin.parameters(), 0.05)
    by_hand.step()
    wrapped.step()
    buckets = len(wrapped.buckets())
    assert buckets > 1 and events == [("allreduce", number) for number in range(buckets)] + [("step", None)]
    for key, value in twin.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[key], value, rtol=1e-6, atol=1e-7, err_msg=key)


def test_the_gpu_form_of_the_gradient_allreduce_copies_nothing_from_the_host(monkeypatch):
    """A bucket of more than 8 gradients is joined by slice assignment on launch-bound libraries: CuPy's
    concatenate would copy a table of their pointers host-to-device every step (priced by CupyCosts)."""
    pytest.importorskip("mpi4py")
    pytest.importorskip("torch")
    from xpcnn.testing import CupyCosts
    monkeypatch.setattr(D, "_communicator", _World(others=[None]))

    class Transport:
        def allreduce_sum(self, array, slot=None):
            return array * 2.0                        # the other process's gradients equal this one's

    model = xpcnn.Sequential([xpcnn.layers.Flatten()] + [xpcnn.layers.Dense(4, 4) for _ in range(6)], seed=0,
                             backend="torch")
    wrapped = D.DistributedOptimizer(optim_sgd(model), cuda_aware=False)
    wrapped.transport = Transport()
    x = xpcnn.to_backend(np.ones((2, 1, 2, 2), dtype=np.float32), "torch")
    model.zero_grad()
    model.backward(model(x), need_dx=False)
    before = [xpcnn.to_numpy(p.grad).copy() for p in model.parameters()]
    assert len(wrapped.buckets()) == 1 and len(before) == 12
    with CupyCosts() as costs, xpcnn.config.using(few_launches="on"):
        wrapped.allreduce_gradients()
    assert costs.copies == 0 and costs.by_op["cat"] == 0
    for p, grad in zip(model.parameters(), before):        # the mean of two equal gradients is the gradient
        np.testing.assert_allclose(xpcnn.to_numpy(p.grad), grad, rtol=1e-6)
