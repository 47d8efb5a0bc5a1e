"""Backend selection: the only package in xpcnn that names a concrete array library.

A backend is an Array API namespace (``xp``) plus the device new arrays go to. Everything above this
package receives arrays and asks them for their namespace; only model construction, data loading and
conversion come here.

    >>> import xpcnn
    >>> xpcnn.set_backend("torch")            # or XPCNN_BACKEND=torch; the default of every thread
    >>> with xpcnn.use_backend("numpy"):      # this thread (or asyncio task) only
    ...     ...

- :mod:`.registry`: the names, :class:`Backend`, ``resolve``, the backend in force, ``to_backend``, ``like``;
- :mod:`.convert`: which library an array belongs to, dtype names, canonical devices, copies to the host;
- :mod:`.random`: :class:`RandomStream`, dropout masks drawn on the array's device;
- :mod:`.transfer`: pinned staging buffers and host copies for MPI, ``synchronize``.
"""
from .convert import (
    backend_of, canonical_device, constant, device_copy, dtype_name, made_once, move, same_device, same_place, take,
    to_numpy,
)
from .registry import (
    BACKEND_NAMES, ENV_VAR, Backend, BackendUnavailable, backend_for, get_backend, like, resolve, set_backend,
    to_backend, use_backend,
)
from .random import RandomStream
from .transfer import copy_to_host, on_gpu, staging_buffer, synchronize, synchronize_array

__all__ = [
    "BACKEND_NAMES", "ENV_VAR", "Backend", "BackendUnavailable", "RandomStream", "backend_for", "backend_of",
    "canonical_device", "constant", "copy_to_host", "device_copy", "dtype_name", "get_backend", "like", "made_once", "move",
    "on_gpu", "resolve", "same_device", "same_place", "set_backend", "staging_buffer", "synchronize",
    "synchronize_array", "take", "to_backend", "to_numpy", "use_backend",
]
