"""xpcnn: convolutional networks with hand-written backpropagation on any Array API backend.

The package is a house whose imports point down: backend/config/checks at the bottom, then data sets,
functional math, layers, optimizers and checkpoint files, the training loop, the model, and the
zoo, teaching and command line at the top (docs/architecture.md; tests/test_architecture.py keeps it so).
"""
from .backend import (
    BACKEND_NAMES, Backend, BackendUnavailable, get_backend, set_backend, to_backend, to_numpy, use_backend,
)
from . import config, functional, init, layers, optim
from .gradcheck import GradcheckError, gradcheck
from .layers import Parameter
from .checkpoint import Checkpoint, CheckpointError
from .model import Sequential
from .serialization import load, load_checkpoint
from ._version import __version__

#: Submodules imported on first use (``xpcnn.zoo.resnet20()`` after ``import xpcnn``), so that
#: ``import xpcnn`` stays quick and does not load matplotlib, onnx or MPI.
_LAZY = ("backend", "callbacks", "checkpoint", "checks", "datasets", "distributed", "export", "model",
         "plots", "reference", "teach", "testing", "train", "zoo")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "BACKEND_NAMES", "Backend", "BackendUnavailable", "get_backend", "set_backend", "use_backend",
    "to_backend", "to_numpy", "config", "functional", "init", "layers", "optim", "gradcheck", "GradcheckError",
    "Parameter", "Sequential", "load", "load_checkpoint", "Checkpoint", "CheckpointError", "__version__",
]
