"""Helpers for testing code across backends (used by xpcnn's own tests, usable by yours).

``assert_close`` checks namespace, dtype, shape and device before values, so a result that
silently fell back to NumPy, or lost its float32, fails loudly.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import array_api_compat

from . import functional as F
from . import layers as L
from .backend import Backend, backend_of, resolve, same_device, to_backend, to_numpy

#: (rtol, atol) used when comparing a backend's result with a NumPy float64 expectation.
TOLERANCES = {"float64": (1e-10, 1e-12), "float32": (1e-4, 1e-5)}


def loss_and_grads(model, x, labels) -> tuple[float, dict[str, np.ndarray]]:
    """One forward and backward pass of ``model`` with softmax cross-entropy: the loss and every
    parameter's gradient as host arrays, keyed by state-dict name (gradients zeroed first)."""
    model.zero_grad()
    logits = model(x)
    loss, dlogits = F.softmax_cross_entropy(logits, to_backend(labels, model.backend))
    model.backward(dlogits)
    return float(loss), {name: to_numpy(p.grad) for name, p in model.named_parameters()}


def assert_same_gradients_as_twin(model, twin, torch, x, labels, backend: str | Backend) -> None:
    """``model`` and its :func:`torch_twin` give the same cross-entropy loss (rel 1e-12) and the same gradient
    of every parameter (:func:`assert_close`) for the host batch ``x``, ``labels``; both keep the gradients."""
    loss, grads = loss_and_grads(model, x, labels)
    twin_loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(labels))
    twin_loss.backward()
    if abs(loss - twin_loss.item()) > max(1e-12 * abs(twin_loss.item()), 1e-12):      # pytest.approx(rel=1e-12)
        raise AssertionError(f"loss {loss!r} differs from PyTorch's {twin_loss.item()!r}")
    for key, p in twin.named_parameters():
        assert_close(to_backend(grads[key], backend), p.grad.numpy(), backend, name=key)


def assert_close(actual: Any, desired: Any, backend: str | Backend, dtype: str = "float64",
                 rtol: float | None = None, atol: float | None = None, name: str = "value") -> None:
    """Assert ``actual`` lives on ``backend`` with ``dtype`` and the shape of ``desired``, and is close to it."""
    target = resolve(backend)
    assert actual is not None, f"{name}: got None"
    assert backend_of(actual) == target.name, f"{name}: expected a {target.name} array, got {type(actual)}"
    assert str(actual.dtype).endswith(dtype), f"{name}: expected dtype {dtype}, got {actual.dtype}"
    assert same_device(array_api_compat.device(actual), target.device), (
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


def torch_conv2d_grads(torch, x, w, b, dy, **conv_kwargs) -> tuple:
    """PyTorch autograd's ``(y, dx, dweight, dbias)`` of ``conv2d(x, w, b, **conv_kwargs)`` for the output
    gradient ``dy``, as float64 NumPy arrays (``dbias`` None without a bias)."""
    leaves = [None if a is None else torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in (x, w, b)]
    y = torch.nn.functional.conv2d(*leaves, **conv_kwargs)
    y.backward(torch.tensor(np.asarray(dy, np.float64)))
    return (y.detach().numpy(), *(None if leaf is None else leaf.grad.numpy() for leaf in leaves))


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

    class Residual(nn.Module):                      # attributes block and shortcut, as xpcnn's keys name them
        def __init__(self, block, shortcut):
            super().__init__()
            self.block, self.shortcut = block, shortcut

        def forward(self, x):
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    def twin_of(layer):
        if hasattr(layer, "layers"):                 # a nested Sequential
            return nn.Sequential(*[twin_of(inner) for inner in layer.layers])
        if isinstance(layer, L.Residual):
            return Residual(twin_of(layer.block), None if layer.shortcut is None else twin_of(layer.shortcut))
        if isinstance(layer, L.Conv2D):
            module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                               layer.padding, layer.dilation, layer.groups, layer.use_bias)
        elif isinstance(layer, L.Dense):
            module = nn.Linear(layer.in_features, layer.out_features, layer.use_bias)
        elif isinstance(layer, L.MaxPool2D):
            return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, L.AvgPool2D):
            return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, count_include_pad=layer.count_include_pad)
        elif isinstance(layer, L.GlobalAvgPool2D):
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        elif isinstance(layer, L.BatchNorm1D):
            return nn.BatchNorm1d(layer.num_features, layer.eps, layer.momentum, layer.affine)
        elif isinstance(layer, L.BatchNorm2D):
            return nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum, layer.affine)
        elif isinstance(layer, L.LeakyReLU):
            return nn.LeakyReLU(layer.negative_slope)
        elif isinstance(layer, L.Softmax):
            return nn.Softmax(layer.dim)
        elif isinstance(layer, L.Dropout):
            return nn.Dropout(layer.p)
        elif type(layer) in (L.Flatten, L.ReLU, L.Sigmoid, L.Tanh):
            return getattr(nn, type(layer).__name__)()
        else:
            raise TypeError(f"torch_twin: no torch.nn equivalent for {layer!r}")
        if layer.activation is not None:           # composed: the activation replaces the output (keys unchanged)
            activation = twin_of(layer.activation)
            module.register_forward_hook(lambda _module, _inputs, output: activation(output))
        return module

    modules = [twin_of(layer) for layer in model.layers]
    twin = nn.Sequential(*modules).to(device=device, dtype=dtype)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return twin


class _ModeCounter:
    """A counter used as a ``with`` block: its torch modes (``self._modes``) are entered in order and left in
    reverse, and the block gives the counter itself."""

    _modes: tuple = ()

    def __enter__(self):
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


class Transfers(_ModeCounter):
    """Counts PyTorch's host/device transfers inside the block (``with Transfers() as t``), each one a
    synchronisation or a copy on a GPU; CPU tensors are counted the same, so counts are exact without one.

    ``t.reads`` (device to host): ``item()``, ``tolist()``, ``numpy()``, ``float()``/``int()``/``bool()``/
    ``index()`` and NumPy's ``__array__`` on a tensor; ``t.read_calls`` names them.
    ``t.writes`` (host to device): every tensor made from host data, seen in aten's dispatch trace whatever
    the device: Python numbers, lists and NumPy arrays given to ``torch.asarray``/``tensor``/``as_tensor``/
    ``from_numpy`` all dispatch ``aten.lift_fresh`` (on CUDA then a copy that waits for the stream, as
    array-api-compat's ``maximum(x, 0.0)`` makes), and a Python number an op needs as a tensor
    (``torch.where(c, x, 0.0)``, ``torch.scalar_tensor``) dispatches ``aten.scalar_tensor`` (an allocation
    and a fill). A Python number in an arithmetic operator (``x * 0.5``) stays a kernel argument: not
    counted. ``t.write_shapes`` gives the tensors' shapes, ``t.write_calls`` the aten op of each.
    """

    READS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__", "__array__")
    WRITES = ("lift_fresh", "lift_fresh_copy", "scalar_tensor")

    def __init__(self):
        import torch
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode

        transfers = self
        reads = {getattr(torch.Tensor, name) for name in self.READS}
        self.read_calls: list[str] = []
        self.write_calls: list[str] = []
        self.write_shapes: list[tuple] = []

        class _Reads(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if func in reads:
                    transfers.read_calls.append(func.__name__)
                return func(*args, **(kwargs or {}))

        class _Writes(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                name = func.overloadpacket.__name__
                if name in Transfers.WRITES:
                    transfers.write_calls.append(name)
                    transfers.write_shapes.append(tuple(out.shape))
                return out

        self._modes = (_Reads(), _Writes())

    @property
    def reads(self) -> int:
        return len(self.read_calls)

    @property
    def writes(self) -> int:
        return len(self.write_shapes)


class MaskIndexSyncs(_ModeCounter):
    """Counts the PyTorch operations inside the block whose output size depends on the data
    (``with MaskIndexSyncs() as m``): boolean-mask indexing (``x[mask]``, ``x[mask] = v``: aten ``index`` /
    ``index_put`` with a bool index), ``nonzero``, ``masked_select``. On a GPU each reads a count back to the
    host and waits for the stream (CuPy does the same for ``x[mask]``); a training step makes none.
    ``m.count`` is the total and ``m.calls`` names them."""

    SIZED_BY_DATA = ("nonzero", "masked_select", "argwhere", "unique", "_unique2", "unique_consecutive")

    def __init__(self):
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self
        self.calls: list[str] = []

        def bool_index(indices) -> bool:
            return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func.overloadpacket.__name__
                if name in MaskIndexSyncs.SIZED_BY_DATA or (
                        name in ("index", "index_put", "index_put_", "_index_put_impl_") and len(args) > 1
                        and bool_index(args[1])):
                    counter.calls.append(name)
                return func(*args, **(kwargs or {}))

        self._modes = (_Mode(),)

    @property
    def count(self) -> int:
        return len(self.calls)


#: aten operations that launch no kernel though their schema does not mark them as views: a read to the host
#: (counted by Transfers), the view reshape returns after a copy, and allocations without a fill (torch's
#: caching allocator and CuPy's memory pool hand out memory without a kernel); profiler bookkeeping is left out too.
NOT_KERNELS = {"_local_scalar_dense", "_unsafe_view", "empty", "empty_like", "empty_strided", "new_empty",
               "new_empty_strided"}


def _launches(func) -> bool:
    """Whether an aten operation launches a kernel: every one but pure views and NOT_KERNELS."""
    name = func.overloadpacket.__name__
    if name in NOT_KERNELS or name.startswith("_record_function"):
        return False
    returns = func._schema.returns
    return not returns or any(r.alias_info is None or r.alias_info.is_write for r in returns)


class KernelLaunches(_ModeCounter):
    """Counts the kernel-launching PyTorch operations run inside the block (``with KernelLaunches() as k``):
    every aten operation except pure views (an op whose every output is a non-writing alias of an input,
    as aten's schemas mark slice, permute, reshape views and the like). In-place operations count: they
    launch a kernel. ``k.count`` is the total and ``k.by_op`` a Counter per aten op, for a breakdown.
    The same rule counts xpcnn's torch backend and torch.nn/autograd, so the two compare fairly."""

    def __init__(self):
        import collections

        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self
        self.by_op: collections.Counter = collections.Counter()

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if _launches(func):
                    counter.by_op[func.overloadpacket.__name__] += 1
                return func(*args, **(kwargs or {}))

        self._torch = torch
        self._modes = (_Mode(),)

    @property
    def count(self) -> int:
        return sum(self.by_op.values())


def _scan_kernels(size: int, complete: bool = True) -> int:
    """Kernels of CuPy's prefix sum over ``size`` elements (``scan`` in cupy/_core/_routines_math.pyx): one
    block scan up to 512 elements; beyond, a block-sum kernel, the scan of the block sums, and (unless the scan
    is left incomplete, as ``nonzero`` leaves it) a kernel that adds them back."""
    if size <= 512:
        return 1
    return 1 + _scan_kernels(-(-size // 512)) + complete


class CupyCosts(_ModeCounter):
    """Prices the aten operations run inside the block (``with CupyCosts() as c``) by what CuPy 14 does for
    the same call, where that differs from PyTorch's one kernel per operation (KernelLaunches' rule otherwise):

    - ``cat``/``stack`` of n arrays (``_concatenate`` in cupy/_core/_routines_manipulation.pyx; ``stack``
      concatenates expanded views, cupy/_manipulation/join.py): one copy kernel per non-empty array, unless
      n > 8, every array has the output's dtype and they total under 2 MiB per array: then one kernel that
      reads a table of the arrays' pointers, copied host-to-device (``core.array(ptrs)``), plus two more
      tables (offsets along the axis, strides) unless every array is C-contiguous and equally long on the axis.
    - ``constant_pad_nd`` (``pad`` in cupy/_padding/pad.py): with the value 0 and a 1-d array or one under
      4e6 elements, an empty array filled, then the input copied in (2 kernels); otherwise the copy and one
      fill per padded side.
    - boolean-mask ``index``/``index_put`` and ``masked_select`` (``_prepare_mask_indexing_single`` in
      cupy/_core/_routines_indexing.pyx): a prefix sum of the mask (a second one over the mask broadcast
      to the array when it covers fewer axes), a read of its last element to the host (a sync), and one
      gather or scatter kernel when anything is selected; ``nonzero``/``argwhere`` (``_ndarray_nonzero``):
      a comparison with 0 for a non-bool array, an incomplete prefix sum, the sync, one kernel. The other
      operations sized by the data (MaskIndexSyncs' list) count PyTorch's kernel plus one sync.
    - a tensor made from host data (``lift_fresh``, ``lift_fresh_copy``, ``scalar_tensor``: a Python
      number made into a device array, as ``cupy.asarray(0.0)``): a host-to-device copy, no kernel.
    - a read to the host (``_local_scalar_dense``, what ``item()``/``float()`` dispatch): a sync.

    ``c.kernels``, ``c.copies`` (host to device) and ``c.syncs`` are the totals; ``c.by_op``,
    ``c.copies_by_op`` and ``c.syncs_by_op`` Counters per aten op, for a breakdown. The inputs' layouts are
    the torch tensors' (the same arrays on CuPy have the same shapes, dtypes and, as xpcnn makes them, strides).
    Beside other dispatch modes, enter it first: pricing a mask counts its elements, which modes entered
    after it would see.
    """

    SCALAR_TO_DEVICE = ("lift_fresh", "lift_fresh_copy", "scalar_tensor")
    MASK_INDEX = ("index", "index_put", "index_put_", "_index_put_impl_")
    TABLE_BYTES_PER_ARRAY = 2 * 1024 * 1024          # CuPy's threshold_size in _concatenate
    SMALL_PAD = 4e6                                  # pad's fast path for a zero fill

    def __init__(self):
        import collections

        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self
        self.by_op: collections.Counter = collections.Counter()
        self.copies_by_op: collections.Counter = collections.Counter()
        self.syncs_by_op: collections.Counter = collections.Counter()

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                name = func.overloadpacket.__name__
                kernels, copies, syncs = counter._price(torch, func, name, args, kwargs, out)
                for tally, n in ((counter.by_op, kernels), (counter.copies_by_op, copies),
                                 (counter.syncs_by_op, syncs)):
                    if n:
                        tally[name] += n
                return out

        self._modes = (_Mode(),)

    def _price(self, torch, func, name, args, kwargs, out) -> tuple[int, int, int]:
        """(kernels, host-to-device copies, syncs) CuPy spends on one aten call."""
        if name in ("cat", "stack"):
            arrays = list(args[0])
            table = (len(arrays) > 8 and all(a.dtype == out.dtype for a in arrays)
                     and sum(a.numel() * a.element_size() for a in arrays) < self.TABLE_BYTES_PER_ARRAY * len(arrays))
            if not table:
                return sum(a.numel() > 0 for a in arrays), 0, 0
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            equal = name == "stack" or len({a.shape[dim] for a in arrays}) == 1
            return 1, 1 if equal and all(a.is_contiguous() for a in arrays) else 3, 0
        if name == "constant_pad_nd":
            x, widths = args[0], args[1]
            value = args[2] if len(args) > 2 else kwargs.get("value", 0)
            if value == 0 and (x.dim() == 1 or x.numel() < self.SMALL_PAD):
                return 2, 0, 0
            return 1 + sum(w != 0 for w in widths), 0, 0
        if name in self.SCALAR_TO_DEVICE:
            return 0, 1, 0
        if name == "_local_scalar_dense":
            return 0, 0, 1
        if name in self.MASK_INDEX and len(args) > 1:
            indices = list(args[1] or ())
            masks = [i for i, t in enumerate(indices)
                     if isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8)]
            if masks:
                x, mask = args[0], indices[masks[0]]
                selected = int(mask.sum()) > 0             # runs outside the mode: not priced
                scans = _scan_kernels(mask.numel())
                if masks[0] != 0 or mask.dim() < x.dim():
                    scans += _scan_kernels(x.numel())
                return scans + selected, 0, 1
        if name == "masked_select":
            x, mask = args[0], args[1]
            scans = _scan_kernels(mask.numel()) + (_scan_kernels(x.numel()) if mask.dim() < x.dim() else 0)
            return scans + (out.numel() > 0), 0, 1
        if name in ("nonzero", "argwhere"):
            x = args[0]
            return (x.dtype != torch.bool) + _scan_kernels(x.numel(), complete=False) + (out.numel() > 0), 0, 1
        if name in MaskIndexSyncs.SIZED_BY_DATA:
            return 1, 0, 1
        return int(_launches(func)), 0, 0

    @property
    def kernels(self) -> int:
        return sum(self.by_op.values())

    @property
    def copies(self) -> int:
        return sum(self.copies_by_op.values())

    @property
    def syncs(self) -> int:
        return sum(self.syncs_by_op.values())
