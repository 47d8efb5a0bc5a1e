import os
import subprocess
import sys

import numpy as np
import pytest

import xpcnn
from xpcnn.backend import BACKEND_NAMES, BackendUnavailable, backend_of, describe, resolve


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown backend 'numpi'; valid names are: numpy, cupy, torch"):
        xpcnn.set_backend("numpi")


def test_default_is_numpy_and_use_backend_restores():
    assert xpcnn.get_backend().name in BACKEND_NAMES
    before = xpcnn.get_backend()
    with xpcnn.use_backend("array_api_strict") as chosen:
        assert chosen.name == "array_api_strict"
        assert xpcnn.get_backend() is chosen
    assert xpcnn.get_backend() is before


def test_environment_variable_selects_the_backend():
    code = "import xpcnn; print(xpcnn.get_backend().name)"
    env = dict(os.environ, XPCNN_BACKEND="array_api_strict")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "array_api_strict"


def test_round_trip_between_backends(backend):
    host = np.arange(24.0).reshape(2, 3, 4)[:, ::2, ::-1]           # a non-contiguous view
    moved = xpcnn.to_backend(host, backend, dtype="float32")
    assert backend_of(moved) == backend.name
    assert str(moved.dtype).endswith("float32")
    np.testing.assert_array_equal(xpcnn.to_numpy(moved), host.astype(np.float32))
    again = xpcnn.to_backend(moved, "numpy")
    assert isinstance(again, np.ndarray)


def test_missing_library_says_what_to_install(monkeypatch):
    import importlib

    real_import = importlib.import_module

    def fake_import(name, *args):
        if name == "cupy":
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    monkeypatch.setattr("xpcnn.backend._cache", {})
    with pytest.raises(BackendUnavailable, match=r"'cupy' is not installed .*pip install 'xpcnn\[cuda12\]'"):
        resolve("cupy")


def test_auto_says_which_backend_it_chose():
    with pytest.warns(UserWarning, match=r"backend 'auto' chose '(cupy|numpy)'"):
        chosen = resolve("auto")
    assert chosen.name in ("cupy", "numpy")


def test_describe_lists_every_backend():
    rows = describe()
    assert [row["name"] for row in rows] == list(BACKEND_NAMES[:-1])
    numpy_row = rows[0]
    assert numpy_row["usable"] == "yes" and numpy_row["version"] == np.__version__


def test_a_cuda_device_without_an_index_gets_the_current_one(monkeypatch):
    """torch:cuda's device is stored as tensors report it (cuda:0), so the model accepts its own data."""
    torch = pytest.importorskip("torch")
    from xpcnn.backend import canonical_device, same_device
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert canonical_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert canonical_device(torch.device("cuda", 0)) == torch.device("cuda", 0)
    assert same_device(torch.device("cuda"), torch.device("cuda", 1))
    assert not same_device(torch.device("cuda"), torch.device("cuda", 0))
    assert same_device(torch.device("cpu", 0), torch.device("cpu"))


def test_a_torch_backend_on_an_indexed_device_trains_evaluates_checkpoints_and_resumes(tmp_path):
    """The CPU stand-in for torch:cuda (device "cuda" while tensors report "cuda:0"): a backend made on
    torch.device("cpu", 0), while tensors report "cpu"."""
    torch = pytest.importorskip("torch")
    import importlib
    from xpcnn import layers as L, optim
    indexed = xpcnn.Backend("torch", importlib.import_module("array_api_compat.torch"), torch.device("cpu", 0))
    model = xpcnn.Sequential([L.Conv2D(1, 2, 3), L.ReLU(), L.Flatten(), L.Dropout(0.2), L.Dense(3)],
                             backend=indexed, seed=0, input_shape=(1, 5, 5))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 1, 5, 5)).astype(np.float32), rng.integers(0, 3, 8)
    optimizer = optim.Adam(model.parameters())
    model.fit(x, y, optimizer=optimizer, epochs=1, batch_size=4, verbose=0)
    model.fit(xpcnn.to_backend(x, model.backend), xpcnn.to_backend(y, model.backend), optimizer=optimizer,
              epochs=1, batch_size=4, verbose=0)                         # data already on the device
    assert 0.0 <= model.evaluate(x, y)["accuracy"] <= 1.0
    model.save(tmp_path / "c.npz", optimizer=optimizer, epoch=1)
    checkpoint = xpcnn.load_checkpoint(tmp_path / "c.npz", indexed)
    checkpoint.model.fit(x, y, optimizer=checkpoint.optimizer, epochs=2, resume=checkpoint, verbose=0)
    np.testing.assert_array_equal(xpcnn.to_numpy(xpcnn.load(tmp_path / "c.npz", backend=indexed).predict(x)),
                                  xpcnn.to_numpy(model.predict(x)))


def test_cupy_dropout_masks_come_from_philox_keyed_per_draw_and_resume_exactly(monkeypatch):
    """CuPy cannot run here: a stand-in module records what the CuPy branch calls. Each draw keys a cuRAND
    Philox4x3210 Generator with the stream's (seed, draw) key (the legacy RandomState, reseeded per mask,
    reran cuRAND's set-up each time: the stand-in has none), so a stream resumed at draw 1 draws what the
    uninterrupted one drew."""
    import contextlib
    import types
    import xpcnn.backend as backend
    keys = []

    class Philox4x3210:
        def __init__(self, seed):
            keys.append(seed)
            self.seed = seed

    class Generator:
        def __init__(self, bit_generator):
            self.rng = np.random.Generator(np.random.Philox(key=bit_generator.seed))

        def random(self, shape, dtype):
            return self.rng.random(shape, dtype=dtype)

    fake = types.SimpleNamespace(float32=np.float32, random=types.SimpleNamespace(
        Generator=Generator, Philox4x3210=Philox4x3210))
    reference = types.SimpleNamespace(device=contextlib.nullcontext(), dtype=np.float32)
    monkeypatch.setattr(backend, "backend_of", lambda array: "cupy")
    monkeypatch.setattr(backend._compat, "device", lambda array: "gpu0")
    real_import = backend.importlib.import_module
    monkeypatch.setattr(backend.importlib, "import_module", lambda name: fake if name == "cupy" else real_import(name))
    stream = backend.RandomStream(5)
    first, second = (stream.keep_mask((4, 6), 0.5, reference) for _ in range(2))
    assert keys == [backend._mix(5, 0), backend._mix(5, 1)] and first.dtype == np.float32
    resumed = backend.RandomStream(5)
    resumed.set_state(stream.state() | {"draws": 1})
    np.testing.assert_array_equal(resumed.keep_mask((4, 6), 0.5, reference), second)
    assert not np.array_equal(first, second)
