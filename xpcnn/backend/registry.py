"""Backends by name: what each name needs (and says when it is missing), the :class:`Backend` it resolves to,
the backend in force (scoped like :mod:`xpcnn.config`), and moving arrays to a backend given by name.

``use_backend`` applies to the thread (or asyncio task) that enters it; ``set_backend`` changes the
default for every thread without such a block.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import array_api_compat as _compat

from .convert import backend_of, canonical_device, dtype_name, move, same_device

BACKEND_NAMES = ("numpy", "cupy", "torch", "torch:cuda", "jax", "array_api_strict", "auto")
ENV_VAR = "XPCNN_BACKEND"

_INSTALL_HINT = {
    "cupy": "install CuPy for your CUDA version: pip install 'xpcnn[cuda12]' or 'xpcnn[cuda13]'",
    "torch": "install PyTorch: pip install 'xpcnn[torch]'",
    "torch:cuda": "install a CUDA build of PyTorch (https://pytorch.org) on a machine with an NVIDIA GPU",
    "jax": "install JAX: pip install 'xpcnn[jax]'",
    "array_api_strict": "install array-api-strict: pip install array-api-strict",
}


class BackendUnavailable(RuntimeError):
    """A backend name is valid, but its library is missing or has no usable device."""


@dataclass(frozen=True)
class Backend:
    """An array namespace and the device on which new arrays are created."""

    name: str
    xp: Any
    device: Any
    library_version: str = ""

    def __post_init__(self):
        object.__setattr__(self, "device", canonical_device(self.device))

    def asarray(self, array: Any, dtype: str | None = None) -> Any:
        """Move ``array`` (from any backend, or a NumPy array / Python list) to this backend."""
        return move(array, self, dtype=dtype)

    def __repr__(self) -> str:
        return f"Backend(name={self.name!r}, device={self.device!r})"

    def __deepcopy__(self, memo) -> "Backend":
        return self          # immutable, and its namespace is a module: a copied model shares its backend


def _import(name: str, module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend {name!r} is not installed ({exc}); {_INSTALL_HINT[name]}, "
            f"or choose 'numpy'"
        ) from None


def _make(name: str) -> Backend:
    if name == "numpy":
        return Backend("numpy", _compat.array_namespace(np.empty(0)), "cpu", np.__version__)
    if name == "array_api_strict":
        strict = _import(name, "array_api_strict")
        # the default device from the inspection API: creating an array to ask would put one on the default
        # device while a model on another one (tests' second device) is being set up
        return Backend(name, strict, strict.__array_namespace_info__().default_device(), strict.__version__)
    if name == "torch" or name == "torch:cuda":
        torch = _import(name, "torch")
        xp = importlib.import_module("array_api_compat.torch")
        if name == "torch:cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(
                "backend 'torch:cuda' needs a CUDA GPU, but torch.cuda.is_available() is False "
                f"(torch {torch.__version__}); {_INSTALL_HINT[name]}, or choose 'torch' for the CPU"
            )
        return Backend(name, xp, torch.device("cuda" if name == "torch:cuda" else "cpu"), torch.__version__)
    if name == "cupy":
        cupy = _import(name, "cupy")
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CUDA driver/runtime missing: never show the raw traceback
            raise BackendUnavailable(
                f"backend 'cupy' is installed (CuPy {cupy.__version__}) but no CUDA device can be used: "
                f"{type(exc).__name__}: {exc}. Check the NVIDIA driver and that the cupy-cudaXXx wheel "
                "matches your CUDA version, or choose 'numpy'"
            ) from None
        if count < 1:
            raise BackendUnavailable("backend 'cupy' is installed but no CUDA device was found; choose 'numpy'")
        xp = importlib.import_module("array_api_compat.cupy")
        return Backend(name, xp, cupy.cuda.Device(), cupy.__version__)
    if name == "jax":
        jax = _import(name, "jax")
        return Backend(name, importlib.import_module("jax.numpy"), jax.devices()[0], jax.__version__)
    raise AssertionError(name)


_cache: dict[str, Backend] = {}
_lock = threading.Lock()


def resolve(name: str | Backend | None = None) -> Backend:
    """Return the :class:`Backend` for ``name`` (``None`` means the current one)."""
    if isinstance(name, Backend):
        return name
    if name is None:
        return get_backend()
    if not isinstance(name, str):
        raise TypeError(f"backend: expected a name (str) or a Backend, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {name!r}; valid names are: {', '.join(BACKEND_NAMES)}")
    if key == "auto":
        return _auto()
    with _lock:
        if key not in _cache:
            _cache[key] = _make(key)
        return _cache[key]


def _auto() -> Backend:
    try:
        chosen = resolve("cupy")
        reason = "a CUDA device is usable"
    except BackendUnavailable as exc:
        chosen = resolve("numpy")
        reason = str(exc).split(";")[0]
    import warnings

    warnings.warn(f"xpcnn: backend 'auto' chose {chosen.name!r} ({reason})", stacklevel=3)
    return chosen


# The default (set_backend's, else $XPCNN_BACKEND's on first use) and a use_backend block's, per thread/task.
_default: Backend | None = None
_scoped: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("xpcnn_backend", default=None)


def get_backend() -> Backend:
    """The backend new models and data use here: the innermost ``use_backend`` block's, else the default
    (``set_backend()``'s, else $XPCNN_BACKEND's, else NumPy)."""
    global _default
    scoped = _scoped.get()
    if scoped is not None:
        return scoped
    if _default is None:
        _default = resolve(os.environ.get(ENV_VAR, "numpy") or "numpy")
    return _default


def set_backend(name: str | Backend) -> Backend:
    """Select the default backend (every thread without a ``use_backend`` block) by name (see
    ``BACKEND_NAMES``) and return it."""
    global _default
    _default = resolve(name)
    return _default


@contextlib.contextmanager
def use_backend(name: str | Backend) -> Iterator[Backend]:
    """``with use_backend("torch"): ...`` selects a backend for the block, in this thread (or task) only."""
    token = _scoped.set(resolve(name))
    try:
        yield _scoped.get()
    finally:
        _scoped.reset(token)


def to_backend(array: Any, backend: str | Backend | None = None, dtype: str | None = None) -> Any:
    """Move ``array`` to ``backend`` (a name, a Backend, or ``None``: the current one), DLPack between GPU
    libraries, the host otherwise. ``dtype`` is a name such as ``"float32"``; ``None`` keeps the array's."""
    return move(array, resolve(backend), dtype=dtype)


def backend_for(array: Any) -> Backend:
    """The :class:`Backend` an array lives on: its library's, on the array's own device."""
    named = resolve(backend_of(array))
    device = _compat.device(array)
    return named if same_device(device, named.device) else Backend(named.name, named.xp, device, named.library_version)


def like(value: Any, reference: Any) -> Any:
    """``value`` (a host array, or any backend's) on ``reference``'s library and device, in its dtype."""
    return move(value, backend_for(reference), dtype=dtype_name(reference))
