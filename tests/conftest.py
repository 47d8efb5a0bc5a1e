"""The backend matrix: every test taking ``backend`` (or ``xp``) runs once per backend.

Select some with ``pytest --backend numpy --backend torch`` or ``XPCNN_TEST_BACKENDS=numpy,torch``.
A backend that is not installed, or has no device, is reported as a skip with the reason.
"""
import os
import shutil
import tempfile

import pytest

from xpcnn.backend import BackendUnavailable, resolve

MATRIX = ("numpy", "array_api_strict", "torch", "torch:cuda", "cupy", "jax")


def pytest_addoption(parser):
    parser.addoption("--backend", action="append", default=None, choices=MATRIX,
                     help="run the backend matrix on this backend only (repeatable)")


def _selected(config):
    chosen = config.getoption("--backend")
    if not chosen and os.environ.get("XPCNN_TEST_BACKENDS"):
        chosen = [name.strip() for name in os.environ["XPCNN_TEST_BACKENDS"].split(",") if name.strip()]
    return tuple(chosen) if chosen else MATRIX


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames or "xp" in metafunc.fixturenames:
        metafunc.parametrize("backend_name", _selected(metafunc.config), scope="session")


@pytest.fixture(scope="session")
def backend(backend_name):
    try:
        return resolve(backend_name)
    except BackendUnavailable as exc:
        pytest.skip(f"backend {backend_name}: {exc}")


@pytest.fixture
def xp(backend):
    return backend.xp


@pytest.fixture
def compiles_once(backend):
    """The backend, for numerical-gradient and autograd checks that are skipped on JAX: it compiles every
    new shape (seconds each), and the checks against the reference cover it."""
    if backend.name == "jax":
        pytest.skip("checked against the reference on JAX; gradcheck and autograd run on the other backends")
    return backend


@pytest.fixture(autouse=True)
def _run_in_a_temporary_folder(tmp_path, monkeypatch):
    """Each test runs in its own temporary folder, so a relative path (a CLI's runs/, a README example's
    file) never lands in the repository; tests reach the repository through __file__."""
    monkeypatch.chdir(tmp_path)


def pytest_unconfigure(config):
    home = getattr(config, "_xpcnn_hypothesis_home", None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


def pytest_configure(config):
    # Hypothesis keeps no example database, and its other caches go to a temporary folder instead of
    # .hypothesis/ in the working tree.
    try:
        from hypothesis import settings
        from hypothesis.configuration import set_hypothesis_home_dir
    except ImportError:
        pass
    else:
        settings.register_profile("xpcnn", database=None)
        settings.load_profile("xpcnn")
        config._xpcnn_hypothesis_home = tempfile.mkdtemp(prefix="xpcnn-hypothesis-")
        set_hypothesis_home_dir(config._xpcnn_hypothesis_home)
    # TF32 would make float32 GPU matmuls differ from NumPy by ~1e-3.
    os.environ.setdefault("CUPY_TF32", "0")
    try:
        import torch
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    except ImportError:
        pass


def _torch_twin(model):
    """The same architecture built with torch.nn, float64, with the xpcnn weights loaded by key."""
    torch = pytest.importorskip("torch")
    from xpcnn.testing import torch_twin
    return torch_twin(model, torch, "cpu", torch.float64)


@pytest.fixture
def torch_twin():
    pytest.importorskip("torch")       # skip before the test body imports torch itself
    return _torch_twin


@pytest.fixture
def nested_model():
    """A builder of blocks inside blocks for a (2, 6, 6) input: a nested Sequential, an identity Residual, a
    Residual with a conv shortcut, BatchNorm1D and composed activations, in float64."""
    from xpcnn import Sequential, layers as L

    def build(backend="numpy", seed=3):
        return Sequential([
            L.Conv2D(2, 4, 3, padding=1, activation="relu"),
            Sequential([L.Conv2D(4, 4, 3, padding=1), L.BatchNorm2D(4), L.ReLU()]),
            L.Residual(Sequential([L.Conv2D(4, 4, 3, padding=1), L.BatchNorm2D(4), L.Tanh()])),
            L.Residual(Sequential([L.Conv2D(4, 6, 3, stride=2, padding=1), L.BatchNorm2D(6)]),
                       shortcut=L.Conv2D(4, 6, 1, stride=2, bias=False)),
            L.Flatten(), L.Dense(6 * 3 * 3, 8, activation="leaky_relu"), L.BatchNorm1D(8), L.Dense(8, 10),
        ], backend=backend, seed=seed, dtype="float64")
    return build
