"""Helpers for testing code across backends (used by xpcnn's own tests, usable by yours).

``assert_close`` checks namespace, dtype, shape and device before values, so a result that
silently fell back to NumPy, or lost its float32, fails loudly.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import array_api_compat

from . import layers as L
from .backend import Backend, backend_of, resolve, to_backend, to_numpy

#: (rtol, atol) used when comparing a backend's result with a NumPy float64 expectation.
TOLERANCES = {"float64": (1e-10, 1e-12), "float32": (1e-4, 1e-5)}


def assert_close(actual: Any, desired: Any, backend: str | Backend, dtype: str = "float64",
                 rtol: float | None = None, atol: float | None = None, name: str = "value") -> None:
    """Assert ``actual`` lives on ``backend`` with ``dtype`` and the shape of ``desired``, and is close to it."""
    target = resolve(backend)
    assert actual is not None, f"{name}: got None"
    assert backend_of(actual) == target.name, f"{name}: expected a {target.name} array, got {type(actual)}"
    assert str(actual.dtype).endswith(dtype), f"{name}: expected dtype {dtype}, got {actual.dtype}"
    assert array_api_compat.device(actual) == target.device, (
        f"{name}: expected device {target.device}, got {array_api_compat.device(actual)}")
    desired = np.asarray(desired)
    assert tuple(actual.shape) == desired.shape, f"{name}: expected shape {desired.shape}, got {tuple(actual.shape)}"
    default_rtol, default_atol = TOLERANCES[dtype]
    np.testing.assert_allclose(to_numpy(actual).astype(np.float64), desired,
                               rtol=default_rtol if rtol is None else rtol,
                               atol=default_atol if atol is None else atol, err_msg=name)


def on(backend: str | Backend, *arrays: Any, dtype: str | None = None):
    """Move host arrays to ``backend`` (``None`` passes through); one array in, one out."""
    moved = tuple(None if a is None else to_backend(np.asarray(a), backend, dtype=dtype) for a in arrays)
    return moved[0] if len(moved) == 1 else moved


def tie_free(shape, seed: int = 0) -> np.ndarray:
    """A shuffled linspace: every value distinct, so max-pool has no ties."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    return rng.permutation(np.linspace(-1.0, 1.0, size)).reshape(shape)


def torch_twin(model, torch, device="cpu", dtype=None):
    """The same architecture built with ``torch.nn``, holding ``model``'s weights and buffers.

    ``torch`` is the imported module (this function never imports it). The modules are moved to
    ``device`` and ``dtype`` before the weights are loaded, so float64 weights stay exact.
    """
    nn = torch.nn
    modules = []
    for layer in model.layers:
        if isinstance(layer, L.Conv2D):
            modules.append(nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                     layer.padding, layer.dilation, layer.groups, layer.use_bias))
        elif isinstance(layer, L.Dense):
            modules.append(nn.Linear(layer.in_features, layer.out_features, layer.use_bias))
        elif isinstance(layer, L.MaxPool2D):
            modules.append(nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding))
        elif isinstance(layer, L.AvgPool2D):
            modules.append(nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding,
                                        count_include_pad=layer.count_include_pad))
        elif isinstance(layer, L.GlobalAvgPool2D):
            modules.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        elif isinstance(layer, L.BatchNorm2D):
            modules.append(nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum, layer.affine))
        elif isinstance(layer, L.LeakyReLU):
            modules.append(nn.LeakyReLU(layer.negative_slope))
        elif isinstance(layer, L.Softmax):
            modules.append(nn.Softmax(layer.dim))
        elif isinstance(layer, L.Dropout):
            modules.append(nn.Dropout(layer.p))
        elif type(layer) in (L.Flatten, L.ReLU, L.Sigmoid, L.Tanh):
            modules.append(getattr(nn, type(layer).__name__)())
        else:
            raise TypeError(f"torch_twin: no torch.nn equivalent for {layer!r}")
    twin = nn.Sequential(*modules).to(device=device, dtype=dtype)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return twin


class HostReads:
    """Counts device-to-host reads of PyTorch tensors (each one a GPU synchronisation on a GPU):
    ``item()``, ``tolist()``, ``numpy()``, ``float()``/``int()``/``bool()``/``index()`` and NumPy's
    ``__array__`` on a tensor. Use ``with HostReads() as reads: ...; reads.count`` with the torch backend;
    ``reads.calls`` names them. CPU tensors are counted the same, so the count is exact without a GPU."""

    NAMES = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__", "__array__")

    def __init__(self):
        import torch
        from torch.overrides import TorchFunctionMode

        reads = self
        watched = {getattr(torch.Tensor, name) for name in self.NAMES}
        self.calls: list[str] = []

        class _Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if func in watched:
                    reads.calls.append(func.__name__)
                return func(*args, **(kwargs or {}))

        self._mode = _Mode()

    @property
    def count(self) -> int:
        return len(self.calls)

    def __enter__(self) -> "HostReads":
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
