import importlib

import numpy as np
import pytest

import xpcnn
from xpcnn.backend import backend_of


def test_round_trip_between_backends(backend):
    host = np.arange(24.0).reshape(2, 3, 4)[:, ::2, ::-1]           # a non-contiguous view
    moved = xpcnn.to_backend(host, backend, dtype="float32")
    assert backend_of(moved) == backend.name
    assert str(moved.dtype).endswith("float32")
    np.testing.assert_array_equal(xpcnn.to_numpy(moved), host.astype(np.float32))
    again = xpcnn.to_backend(moved, "numpy")
    assert isinstance(again, np.ndarray)


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
