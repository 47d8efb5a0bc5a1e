"""Validation and window geometry: the one public module of checks (functional ops, layers, optimizers,
the training loop and the command line all use these).

Every check raises before any work is done, naming the op or layer, the argument, what was
expected and what came. It sits on the bottom floor beside ``backend``: it imports no other xpcnn module.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import operator
from typing import Any, Iterator

import array_api_compat
import numpy as np

_FLOAT_NAMES = ("float32", "float64")

# Validation happens once per boundary: a public entry point (Sequential.forward/backward, fit, an op
# called by a user) checks its input, then runs the work inside ``trusted()``, where the layers and ops
# it calls skip the checks already made for the same batch (shapes, dtypes, devices, geometry).
_trusted: contextvars.ContextVar[bool] = contextvars.ContextVar("xpcnn_trusted", default=False)


@contextlib.contextmanager
def trusted() -> Iterator[None]:
    """``with checks.trusted():`` the caller has validated what the ops in this block receive."""
    token = _trusted.set(True)
    try:
        yield
    finally:
        _trusted.reset(token)


def is_trusted() -> bool:
    """Whether the current call runs inside :func:`trusted` (then ops skip their input checks)."""
    return _trusted.get()


def namespace(op: str, *arrays: Any):
    """The Array API namespace shared by ``arrays`` (``None`` entries are ignored)."""
    present = [a for a in arrays if a is not None]
    for a in present:
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            raise TypeError(f"{op}: expected arrays, got {type(a).__name__}")
    try:
        return array_api_compat.array_namespace(*present)
    except TypeError:
        kinds = sorted({f"{type(a).__module__}.{type(a).__name__}" for a in present})
        raise TypeError(
            f"{op}: all arrays must come from one backend, got a mix of {', '.join(kinds)}; "
            "move them with xpcnn.to_backend(array, name) first"
        ) from None


def backward_namespace(op: str, dy: Any, like: Any, shape: tuple, dtype: Any = None) -> Any:
    """The namespace of a backward pass's ``dy``, checked to share ``like``'s backend and device, to have
    ``shape`` and the forward pass's float dtype (``dtype``, default ``like``'s): an integer dy, or a float32
    dy after a float64 forward, would give gradients of mixed dtypes. Inside :func:`trusted` nothing is checked."""
    if _trusted.get():
        return array_api_compat.array_namespace(dy)
    xp = namespace(op, dy, like)
    if tuple(dy.shape) != tuple(shape):
        raise ValueError(f"{op}: dy must have shape {tuple(shape)}, got {tuple(dy.shape)}")
    expected = like.dtype if dtype is None else dtype
    if dy.dtype != expected:
        raise TypeError(f"{op}: dy must have the forward pass's dtype {expected}, got {dy.dtype}")
    check_same_device(op, like, "dy", dy)
    return xp


def input_and_weight(op: str, x: Any, weight: Any, bias: Any, x_layout: str, weight_layout: str) -> Any:
    """The checks every weighted op makes: one backend, float x and weight of the axes their layouts name,
    one dtype and one device for x, weight and bias. Returns the namespace; shapes are the op's to check."""
    xp = namespace(op, x, weight, bias)
    check_float(op, "x", x, xp)
    check_ndim(op, "x", x, x_layout.count(",") + 1, x_layout)
    check_float(op, "weight", weight, xp)
    check_ndim(op, "weight", weight, weight_layout.count(",") + 1, weight_layout)
    for name, other in (("weight", weight), ("bias", bias)):
        check_same_dtype(op, x, name, other)
        check_same_device(op, x, name, other)
    return xp


def check_float(op: str, name: str, x: Any, xp: Any) -> None:
    """Accept float32 and float64 only: integer, bool, complex and float16 are refused."""
    if x.dtype not in (xp.float32, xp.float64):
        raise TypeError(f"{op}: {name} must have dtype float32 or float64, got {x.dtype}")


def check_ndim(op: str, name: str, x: Any, ndim: int, layout: str) -> None:
    if x.ndim != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D {layout}, got shape {tuple(x.shape)}")


def check_same_dtype(op: str, x: Any, name: str, other: Any) -> None:
    if other is not None and other.dtype != x.dtype:
        raise TypeError(f"{op}: {name} has dtype {other.dtype} but the input has dtype {x.dtype}; cast one of them")


def check_same_device(op: str, x: Any, name: str, other: Any) -> None:
    if other is not None and array_api_compat.device(other) != array_api_compat.device(x):
        raise ValueError(
            f"{op}: {name} is on device {array_api_compat.device(other)} but the input is on "
            f"{array_api_compat.device(x)}"
        )


def positive_int(owner: str, name: str, value: Any) -> int:
    """An int of at least 1 (a NumPy integer is one, a bool is not), as an int; else a ValueError naming the
    owner and the argument."""
    number = integral(value)
    if number is None or number < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return number


def monitor_mode(owner: str, monitor: str, mode: str = "auto") -> str:
    """Whether a monitored metric improves downwards ("min") or upwards ("max"): the one rule of every
    callback and schedule that watches a metric. ``mode="auto"`` reads the name: an accuracy
    ("acc"/"accuracy" in it) goes up, anything else (a loss) goes down."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if "acc" in str(monitor) else "min"


def integral(value: Any) -> int | None:
    """``value`` as a Python int when it is an integer (a NumPy integer too, anything ``operator.index``
    takes) and not a bool; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    try:
        return operator.index(value)
    except TypeError:
        return None


def flag(owner: str, name: str, value: Any) -> bool:
    """``True`` or ``False`` (a NumPy bool too); anything else, such as the string ``"no"``, is a TypeError."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
    return bool(value)


def finite_number(owner: str, name: str, value: Any) -> float:
    """A finite real number (an int, a float, a NumPy scalar; not a bool or a string) as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be finite, got {value!r}")
    return float(value)


def pair(op: str, name: str, value: Any, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints (NumPy integers too), each at least ``minimum``, as a pair of Python ints."""
    if isinstance(value, (tuple, list)):
        items = tuple(value)
    else:
        items = (value, value)
    numbers = tuple(integral(v) for v in items)
    if len(numbers) != 2 or None in numbers:
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(numbers) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return numbers[0], numbers[1]


def out_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int = 1) -> int:
    """Output length of a sliding window: floor((size + pads - d*(k-1) - 1) / s) + 1."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def window_shape(x_shape, kernel, stride, pads, dilation=(1, 1)) -> tuple[int, int]:
    """Output (OH, OW) of a sliding window over an NCHW input (no check: see :func:`check_window`)."""
    (top, bottom, left, right) = pads
    return (out_size(x_shape[-2], kernel[0], stride[0], top + bottom, dilation[0]),
            out_size(x_shape[-1], kernel[1], stride[1], left + right, dilation[1]))


def check_window(op: str, x_shape, kernel, stride, pads, dilation=(1, 1)) -> tuple[int, int]:
    """Output (OH, OW) for an NCHW input, or a clear error if the window does not fit."""
    (top, bottom, left, right) = pads
    height, width = x_shape[-2], x_shape[-1]
    span_h = dilation[0] * (kernel[0] - 1) + 1
    span_w = dilation[1] * (kernel[1] - 1) + 1
    if height + top + bottom < span_h or width + left + right < span_w:
        raise ValueError(
            f"{op}: kernel {kernel[0]}x{kernel[1]} (dilation {dilation[0]}x{dilation[1]}) is larger than the "
            f"padded input {height + top + bottom}x{width + left + right} (input shape {tuple(x_shape)})"
        )
    return window_shape(x_shape, kernel, stride, pads, dilation)
