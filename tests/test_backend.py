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
