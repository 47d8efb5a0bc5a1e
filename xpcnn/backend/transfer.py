"""Host transfers and waits for a transport such as MPI: whether an array is in GPU memory, page-locked
staging buffers, copies into them, and waiting until a device's queued work is done."""
from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import array_api_compat as _compat

from .convert import dtype_name, to_numpy
from .registry import Backend, resolve


def on_gpu(array: Any) -> bool:
    """Whether ``array`` lives in GPU memory (CuPy, a CUDA tensor, a JAX GPU array)."""
    if _compat.is_cupy_array(array):
        return True
    device = _compat.device(array)
    return getattr(device, "type", None) == "cuda" or "gpu" in str(getattr(device, "platform", "")).lower()


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
