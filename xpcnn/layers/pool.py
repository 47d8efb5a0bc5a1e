"""MaxPool2D, AvgPool2D and GlobalAvgPool2D."""
from __future__ import annotations

import array_api_compat

from .. import checks
from ..functional import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward
from ..functional.pool import pool_padding
from .base import Layer, check_ndim


class _Pool2D(Layer):
    kind = ""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        name = f"{type(self).__name__}({kernel_size})"
        self.kernel_size = checks.pair(name, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else checks.pair(name, "stride", stride, 1)
        self.padding = checks.pair(name, "padding", padding, 0)
        pool_padding(name, self.kernel_size, self.padding, padding)

    def output_shape(self, input_shape):
        check_ndim(self, input_shape, 4, "(N, C, H, W)")
        ph, pw = self.padding
        try:
            oh, ow = checks.check_window(self.label(), input_shape, self.kernel_size, self.stride, (ph, ph, pw, pw))
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        return (input_shape[0], input_shape[1], oh, ow)

    def extra_repr(self):
        k = self.kernel_size[0] if self.kernel_size[0] == self.kernel_size[1] else self.kernel_size
        text = f"{k}"
        if self.stride != self.kernel_size:
            text += f", stride={self.stride}"
        if any(self.padding):
            text += f", padding={self.padding}"
        return text

    def config(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding)}


class MaxPool2D(_Pool2D):
    """Max pooling; backward routes δ to each window's maximum."""

    def forward(self, x):
        self._ensure_built(x)
        self.check_input(x)
        y, self.cache = max_pool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return y

    def backward(self, dy, need_dx=True):
        return max_pool2d_backward(dy, self.cache)


class AvgPool2D(_Pool2D):
    """Average pooling; backward spreads δ evenly over each window."""

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = checks.flag(f"AvgPool2D({kernel_size})", "count_include_pad", count_include_pad)

    def extra_repr(self):
        return super().extra_repr() + ("" if self.count_include_pad else ", count_include_pad=False")

    def forward(self, x):
        self._ensure_built(x)
        self.check_input(x)
        y, self.cache = avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.count_include_pad)
        return y

    def backward(self, dy, need_dx=True):
        return avg_pool2d_backward(dy, self.cache)

    def config(self):
        return {**super().config(), "count_include_pad": self.count_include_pad}


class GlobalAvgPool2D(Layer):
    """(N, C, H, W) -> (N, C): the mean of each feature map, one reduction over (H, W).
    Backward: dx = broadcast(dy / (H W)) over each map, a broadcast view (read-only on NumPy)."""

    def output_shape(self, input_shape):
        check_ndim(self, input_shape, 4, "(N, C, H, W)")
        return (input_shape[0], input_shape[1])

    def forward(self, x):
        self._ensure_built(x)
        self.check_input(x)
        self.cache = tuple(x.shape)
        return array_api_compat.array_namespace(x).mean(x, axis=(2, 3))

    def backward(self, dy, need_dx=True):
        xp = array_api_compat.array_namespace(dy)
        n, c, h, w = self.cache
        return xp.broadcast_to(xp.reshape(dy * (1.0 / (h * w)), (n, c, 1, 1)), (n, c, h, w))
