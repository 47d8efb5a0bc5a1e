"""Arrays between libraries and devices: which library an array belongs to, its dtype's plain name, devices
compared in one canonical form, copies to the host, and :func:`move` to a given :class:`Backend` (DLPack
between GPU libraries, the host otherwise). Nothing here knows the backend names; :mod:`.registry` does.
"""
from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import array_api_compat as _compat


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


def _is_array(obj: Any) -> bool:
    try:
        backend_of(obj)
        return True
    except TypeError:
        return False


def same_place(a: Any, b: Any) -> bool:
    """Whether two arrays belong to one library and one device."""
    return backend_of(a) == backend_of(b) and same_device(_compat.device(a), _compat.device(b))


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


def move(array: Any, target: Any, dtype: str | None = None) -> Any:
    """``array`` (any backend's, a NumPy array or a Python list) on ``target``, a :class:`Backend` (its
    ``name``, ``xp`` and ``device``), in ``dtype`` (a name such as ``"float32"``; ``None`` keeps the dtype)."""
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


_MADE: dict = {}


def made_once(key: tuple, like: Any, make) -> Any:
    """``make(device)``: arrays that depend on ``key`` alone (constants, index tables, rank vectors), made once
    per library and device of ``like`` and reused, so that a call launches nothing and copies nothing for them."""
    device = _compat.device(like)
    full = (type(like).__module__, str(device)) + key
    made = _MADE.get(full)
    if made is None:
        made = _MADE[full] = make(device)
    return made


def constant(value: float, reference: Any) -> Any:
    """A 0-d array holding ``value`` in ``reference``'s dtype, on its library and device, made once per
    (library, dtype, device, value) and reused. An op given a Python number where it wants an array makes
    one on each call (array-api-compat's ``maximum(x, 0.0)`` on torch: a host-to-device copy that waits
    for the stream on CUDA); ops of a training step take this one instead."""
    return made_once(("constant", dtype_name(reference), value), reference, lambda device: _compat.array_namespace(
        reference).asarray(value, dtype=reference.dtype, device=device))


def take(array: Any, indices: Any, axis: int) -> Any:
    """``xp.take(array, indices, axis=axis)`` for indices known to be >= 0 (index tables): on torch one
    ``index_select``, where array-api-compat's take adds three launches to wrap negative indices; CuPy's
    and the other libraries' take is one gather already."""
    if _compat.is_torch_array(array):
        return importlib.import_module("torch").index_select(array, axis, indices)
    return _compat.array_namespace(array).take(array, indices, axis=axis)
