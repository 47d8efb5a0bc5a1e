"""xpcnn: convolutional networks with hand-written backpropagation on any Array API backend."""
from .backend import (
    BACKEND_NAMES, Backend, BackendUnavailable, get_backend, set_backend, to_backend, to_numpy, use_backend,
)
from . import config, functional, init, layers, optim
from .gradcheck import GradcheckError, gradcheck
from .layers import Parameter
from .checkpoint import Checkpoint, CheckpointError
from .model import Sequential, load, load_checkpoint

__version__ = "0.1.0"

__all__ = [
    "BACKEND_NAMES", "Backend", "BackendUnavailable", "get_backend", "set_backend", "use_backend",
    "to_backend", "to_numpy", "config", "functional", "init", "layers", "optim", "gradcheck", "GradcheckError",
    "Parameter", "Sequential", "load", "load_checkpoint", "Checkpoint", "CheckpointError", "__version__",
]
