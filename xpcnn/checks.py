"""Validation and window geometry: the one public module of checks (functional ops, layers, optimizers,
the training loop and the command line all use these).

Every check raises before any work is done, naming the op or layer, the argument, what was
expected and what came. It sits on the bottom floor beside ``backend``: it imports no other xpcnn module.
"""
from __future__ import annotations

from typing import Any

import array_api_compat

_FLOAT_NAMES = ("float32", "float64")


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
    """An int of at least 1 (a bool is not one), or a ValueError naming the owner and the argument."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return value


def pair(op: str, name: str, value: Any, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each at least ``minimum``, as a pair."""
    if isinstance(value, (tuple, list)):
        items = tuple(value)
    else:
        items = (value, value)
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(items) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return items[0], items[1]


def out_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int = 1) -> int:
    """Output length of a sliding window: floor((size + pads - d*(k-1) - 1) / s) + 1."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


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
    return (
        out_size(height, kernel[0], stride[0], top + bottom, dilation[0]),
        out_size(width, kernel[1], stride[1], left + right, dilation[1]),
    )
