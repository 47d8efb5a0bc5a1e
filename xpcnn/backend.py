"""Backend selection: the only module in xpcnn that names a concrete array library.

A backend is an Array API namespace (``xp``) plus the device new arrays go to.
Everything above this module receives arrays and asks them for their namespace;
only model construction, data loading and conversion come here.

    >>> import xpcnn
    >>> xpcnn.set_backend("torch")            # or XPCNN_BACKEND=torch
    >>> with xpcnn.use_backend("numpy"):
    ...     ...
"""
from __future__ import annotations

import contextlib
import importlib
import os
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import array_api_compat as _compat

from . import config

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
        return to_backend(array, self, dtype=dtype)

    def __repr__(self) -> str:
        return f"Backend(name={self.name!r}, device={self.device!r})"

    def __deepcopy__(self, memo) -> "Backend":
        return self          # immutable, and its namespace is a module: a copied model shares its backend


def canonical_device(device: Any) -> Any:
    """``device`` in the form arrays report it, so that stored and reported devices compare equal: a CUDA
    ``torch.device`` gets its explicit index (``cuda`` -> ``cuda:0``, the current device, as tensors say),
    a CPU one none (tensors on ``cpu:0`` report ``cpu``); other libraries' devices are returned as they are."""
    if type(device).__module__ == "torch" and type(device).__name__ == "device":
        torch = importlib.import_module("torch")
        if device.type == "cuda" and device.index is None:
            return torch.device("cuda", torch.cuda.current_device())
        if device.type == "cpu" and device.index is not None:
            return torch.device("cpu")
    return device


def same_device(a: Any, b: Any) -> bool:
    """Whether two devices (any form: ``cuda`` and ``cuda:0`` on device 0, ``cpu`` and ``cpu:0``) are one."""
    return canonical_device(a) == canonical_device(b)


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


_current: Backend | None = None


def get_backend() -> Backend:
    """The backend new models and data use: set_backend(), else $XPCNN_BACKEND, else NumPy."""
    global _current
    if _current is None:
        _current = resolve(os.environ.get(ENV_VAR, "numpy") or "numpy")
    return _current


def set_backend(name: str | Backend) -> Backend:
    """Select the default backend by name (see ``BACKEND_NAMES``) and return it."""
    global _current
    _current = resolve(name)
    return _current


@contextlib.contextmanager
def use_backend(name: str | Backend) -> Iterator[Backend]:
    """Temporarily select a backend: ``with use_backend("torch"): ...``."""
    global _current
    previous = _current
    _current = resolve(name)
    try:
        yield _current
    finally:
        _current = previous


def synchronize(backend: str | Backend | None = None) -> None:
    """Wait until the backend's queued GPU work is done (a no-op on CPU backends); for timing."""
    target = resolve(backend)
    if target.name == "cupy":
        importlib.import_module("cupy").cuda.get_current_stream().synchronize()
    elif target.name == "torch:cuda":
        importlib.import_module("torch").cuda.synchronize()


def synchronize_array(array: Any) -> None:
    """Wait until the work queued on the current stream of ``array``'s GPU is done, so that another library
    (MPI, handed the device pointer) reads what the kernels wrote; a no-op for arrays in host memory."""
    if _compat.is_cupy_array(array):
        with array.device:
            importlib.import_module("cupy").cuda.get_current_stream().synchronize()
    elif _compat.is_torch_array(array) and array.device.type == "cuda":
        importlib.import_module("torch").cuda.current_stream(array.device).synchronize()
    elif _compat.is_jax_array(array):
        array.block_until_ready()


def backend_of(array: Any) -> str:
    """The backend name an array belongs to (``'numpy'``, ``'torch'``, ...)."""
    if _compat.is_numpy_array(array):
        return "numpy"
    if _compat.is_cupy_array(array):
        return "cupy"
    if _compat.is_torch_array(array):
        return "torch:cuda" if array.device.type == "cuda" else "torch"
    if _compat.is_jax_array(array):
        return "jax"
    if type(array).__module__.startswith("array_api_strict"):
        return "array_api_strict"
    raise TypeError(f"expected an array, got {type(array).__name__}")


def backend_for(array: Any) -> Backend:
    """The :class:`Backend` an array lives on: its library's, on the array's own device."""
    named = resolve(backend_of(array))
    device = _compat.device(array)
    return named if same_device(device, named.device) else Backend(named.name, named.xp, device, named.library_version)


def dtype_name(array: Any) -> str:
    """The dtype of any backend's array as a plain name: ``"float32"``, ``"int64"``, ..."""
    return str(array.dtype).rsplit(".", 1)[-1]


def to_numpy(array: Any) -> np.ndarray:
    """Copy any backend's array to a host NumPy array (a NumPy array is returned as is)."""
    if isinstance(array, np.ndarray):
        return array
    if _compat.is_cupy_array(array):
        return array.get()
    if _compat.is_torch_array(array):
        return array.detach().cpu().numpy()
    if np.isscalar(array) or isinstance(array, (list, tuple)):
        return np.asarray(array)
    try:
        return np.from_dlpack(array)
    except (TypeError, RuntimeError, BufferError, AttributeError):
        return np.asarray(array)


def to_backend(array: Any, backend: str | Backend | None = None, dtype: str | None = None) -> Any:
    """Move ``array`` to ``backend`` (DLPack between GPU libraries, the host otherwise).

    ``dtype`` is a name such as ``"float32"``; ``None`` keeps the array's dtype.
    """
    target = resolve(backend)
    xp = target.xp
    source = backend_of(array) if _is_array(array) else None
    if source == target.name:
        # the same library may still hold the array on another device (a second GPU, a strict Device)
        moved = array if same_device(_compat.device(array), target.device) else _compat.to_device(array, target.device)
    elif source in ("cupy", "torch:cuda") and target.name in ("cupy", "torch:cuda"):
        moved = xp.from_dlpack(array)
    else:
        host = to_numpy(array)
        if not host.flags.c_contiguous:
            host = np.ascontiguousarray(host)
        if target.name == "jax" and "float64" in (dtype, host.dtype.name):
            _jax_float64()
        moved = xp.asarray(host, device=target.device)
    if dtype is not None:
        want = getattr(xp, dtype)
        if moved.dtype != want:
            moved = xp.astype(moved, want)
    return moved


def _jax_float64() -> None:
    """JAX keeps float64 only with its process-wide x64 switch; it is turned on the first time a float64
    array or model is moved to JAX (never merely by resolving or listing the backend)."""
    jax = importlib.import_module("jax")
    if not jax.config.read("jax_enable_x64"):
        jax.config.update("jax_enable_x64", True)


def device_copy(array: Any) -> Any:
    """A copy of ``array`` on its own device (no host transfer)."""
    return _compat.array_namespace(array).asarray(array, copy=True)


_constants: dict = {}


def constant(value: float, reference: Any) -> Any:
    """A 0-d array holding ``value`` in ``reference``'s dtype, on its library and device, made once per
    (library, dtype, device, value) and reused. An op given a Python number where it wants an array makes
    one on each call (array-api-compat's ``maximum(x, 0.0)`` on torch: a host-to-device copy that waits
    for the stream on CUDA); ops of a training step take this one instead."""
    key = (backend_of(reference), dtype_name(reference), str(_compat.device(reference)), value)
    made = _constants.get(key)
    if made is None:
        xp = _compat.array_namespace(reference)
        made = _constants[key] = xp.asarray(value, dtype=reference.dtype, device=_compat.device(reference))
    return made


_MASK64 = (1 << 64) - 1


def _mix(seed: int, counter: int) -> int:
    """A 64-bit key for draw ``counter`` of the stream ``seed`` (splitmix64's finaliser over both)."""
    z = (seed * 0x9E3779B97F4A7C15 + (counter + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class RandomStream:
    """Random keep-masks (dropout) drawn by the generator of the array's own library, on its device.

    Counter-based: draw ``k`` comes from a generator keyed by ``(seed, k)``, so the whole state is two
    integers (saved in checkpoints) and a resumed run draws what the uninterrupted run would have drawn.
    NumPy and array_api_strict draw with NumPy's Philox on the host; PyTorch with a ``torch.Generator``
    on the tensor's device; CuPy with a cuRAND Philox ``Generator``; JAX with ``jax.random`` keys. The same seed
    therefore gives the same masks on one backend, and different masks on different libraries.

    ``host=True`` draws every backend's masks with NumPy on the host and copies them over: identical
    on every backend (for teaching and cross-backend comparisons), at the price of one host-to-device
    copy per draw.
    """

    def __init__(self, seed: int, host: bool = False, draws: int = 0):
        self.seed, self.host, self.draws = int(seed) & _MASK64, bool(host), int(draws)
        self._engines: dict = {}

    def state(self) -> dict:
        return {"seed": self.seed, "draws": self.draws, "host": self.host}

    def split(self, number: int) -> "RandomStream":
        """The stream of worker ``number`` of a data-parallel run: this stream for 0, for the others an
        independent one keyed by (seed, number) far past any draw count, at the same draw count."""
        if number == 0:
            return self
        return RandomStream(_mix(self.seed, (1 << 62) + int(number)), host=self.host, draws=self.draws)

    def set_state(self, state: dict) -> None:
        self.seed, self.draws, self.host = int(state["seed"]) & _MASK64, int(state["draws"]), bool(state["host"])

    def keep_mask(self, shape: tuple, p: float, reference: Any) -> Any:
        """A 0/1 mask of ``shape`` (in ``reference``'s dtype, or bool), on its library and device: each value
        is 1 with probability ``1 - p`` (one generator call; on CUDA a single ``bernoulli_`` kernel)."""
        key = _mix(self.seed, self.draws)
        self.draws += 1
        shape = tuple(int(s) for s in shape)
        name = backend_of(reference)
        if self.host or name in ("numpy", "array_api_strict"):
            keep = np.random.Generator(np.random.Philox(key=key)).random(shape, dtype=np.float32) >= p
            return like(keep, reference)
        device = _compat.device(reference)
        if name in ("torch", "torch:cuda"):
            torch = importlib.import_module("torch")
            engine = self._engines.get(device)
            if engine is None:
                engine = self._engines[device] = torch.Generator(device=device)
            engine.manual_seed(key >> 1)                       # torch seeds are signed 64-bit
            if device.type == "cuda":                          # one fused kernel
                return torch.empty(shape, dtype=reference.dtype, device=device).bernoulli_(1.0 - p, generator=engine)
            # on CPUs bernoulli_ with a scalar probability is slow (1.2 against 0.45 ms for 64x3136 values)
            return torch.rand(shape, generator=engine, device=device) >= p
        if name == "cupy":
            return _cupy_keep(importlib.import_module("cupy"), key, shape, p, reference)
        if name == "jax":
            jax = importlib.import_module("jax")
            keep = jax.random.bernoulli(jax.random.key(key & 0xFFFFFFFF), 1.0 - p, shape)
            return jax.device_put(keep.astype(reference.dtype), device)
        raise TypeError(f"RandomStream: no generator for backend {name!r}")


def _cupy_keep(cupy, key: int, shape: tuple, p: float, reference: Any) -> Any:
    """CuPy's keep-mask for draw key ``key``: a Philox4x3210 generator keyed by it, as torch's Philox is seeded
    per draw. Philox is counter-based, so keying one sets each thread's counter in one light kernel; the
    legacy ``RandomState.seed`` reran cuRAND's generator set-up, milliseconds for every mask."""
    with reference.device:
        engine = cupy.random.Generator(cupy.random.Philox4x3210(key))
        return (engine.random(shape, dtype=cupy.float32) >= p).astype(reference.dtype)


def like(value: Any, reference: Any) -> Any:
    """``value`` (a host array, or any backend's) on ``reference``'s library and device, in its dtype."""
    return to_backend(value, backend_for(reference), dtype=dtype_name(reference))


def staging_buffer(size: int, reference: Any) -> np.ndarray:
    """A 1-D host buffer of ``size`` values in ``reference``'s dtype for a transport such as MPI: page-locked
    (pinned) when ``reference`` lives on a GPU (CuPy, a CUDA tensor), so copies run at full bus speed and
    can be reused step after step; ordinary memory otherwise."""
    dtype = np.dtype(dtype_name(reference))
    if _compat.is_cupy_array(reference):
        return importlib.import_module("cupyx").empty_pinned((size,), dtype=dtype)
    if _compat.is_torch_array(reference) and reference.device.type == "cuda":
        torch = importlib.import_module("torch")
        return torch.empty((size,), dtype=reference.dtype, pin_memory=True).numpy()
    return np.empty((size,), dtype=dtype)


def copy_to_host(array: Any, out: np.ndarray) -> np.ndarray:
    """Copy the 1-D ``array`` (any backend's) into the host buffer ``out[:len(array)]``; returns that view."""
    view = out[:int(array.shape[0])]
    if _compat.is_cupy_array(array):
        array.get(out=view)
    elif _compat.is_torch_array(array):
        importlib.import_module("torch").from_numpy(view).copy_(array.detach())
    else:
        np.copyto(view, to_numpy(array))
    return view


def on_gpu(array: Any) -> bool:
    """Whether ``array`` lives in GPU memory (CuPy, a CUDA tensor, a JAX GPU array)."""
    if _compat.is_cupy_array(array):
        return True
    device = _compat.device(array)
    return getattr(device, "type", None) == "cuda" or "gpu" in str(getattr(device, "platform", "")).lower()


def host_memory(array: Any) -> bool:
    """Whether ``array`` is a NumPy array: host memory, where reading a value back costs no transfer and no
    wait (an op may then look at its data to skip work, as max pooling's NaN test)."""
    return _compat.is_numpy_array(array)


def launch_bound(array: Any) -> bool:
    """Whether ops on ``array`` take their few-launch forms (one stacked max-pool reduction, one matrix
    product for the conv input gradient, selects instead of mask products), per ``xpcnn.config``'s
    ``few_launches``: ``"auto"`` (the default) chooses them on GPUs, where every operation costs a kernel
    launch, and on array_api_strict, so that every test run checks them; CPU libraries keep the loops
    measured fastest there. ``"on"`` forces them anywhere (the readiness benchmark counts a GPU's launches
    on CPU tensors that way), ``"off"`` never."""
    mode = config.get().few_launches
    if mode != "auto":
        return mode == "on"
    return on_gpu(array) or type(array).__module__.startswith("array_api_strict")


def same_place(a: Any, b: Any) -> bool:
    """Whether two arrays belong to one library and one device."""
    return backend_of(a) == backend_of(b) and same_device(_compat.device(a), _compat.device(b))


def _is_array(obj: Any) -> bool:
    try:
        backend_of(obj)
        return True
    except TypeError:
        return False


def describe() -> list[dict[str, str]]:
    """One row per backend: installed?, usable?, device, version (for ``xpcnn backends``)."""
    rows = []
    for name in BACKEND_NAMES[:-1]:
        row = {"name": name, "installed": "no", "usable": "no", "device": "-", "version": "-", "note": ""}
        try:
            backend = resolve(name)
            row.update(installed="yes", usable="yes", device=str(backend.device), version=backend.library_version)
        except BackendUnavailable as exc:
            message = str(exc)
            if "is not installed" not in message:
                row["installed"] = "yes"
            row["note"] = message
        rows.append(row)
    return rows
