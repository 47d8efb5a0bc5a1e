"""Conv2D: holds weight (C_out, C_in/groups, kH, kW) and bias (C_out,); math in functional.conv."""
from __future__ import annotations

from .. import checks
from ..functional import conv2d_backward, conv2d_forward
from ..functional.conv import conv_padding
from .. import init
from ..init import name_of as init_name
from .base import Layer, check_ndim


class Conv2D(Layer):
    """2-D convolution with PyTorch's argument names.

    Input (N, in_channels, H, W) -> output (N, out_channels, OH, OW). Weights and bias are drawn, as
    PyTorch's Conv2d draws them, from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in_channels/groups*kH*kW
    (``"torch_default"``), so an untrained network's outputs have PyTorch's scale; ``weight_init=
    "kaiming_uniform"`` (He et al.) and the others of :mod:`xpcnn.init` can be chosen instead.
    """

    param_names = ("weight", "bias")

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, weight_init="torch_default", bias_init="torch_default"):
        super().__init__()
        name = f"Conv2D({in_channels}->{out_channels})"
        for argument, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            checks.positive_int(name, argument, value)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = checks.pair(name, "kernel_size", kernel_size, 1)
        self.stride = checks.pair(name, "stride", stride, 1)
        self.dilation = checks.pair(name, "dilation", dilation, 1)
        self.padding = padding
        self.pads = conv_padding(name, padding, self.kernel_size, self.stride, self.dilation)
        self.use_bias = bool(bias)
        self.weight_init = init.get(name, "weight_init", weight_init)
        self.bias_init = init.get(name, "bias_init", bias_init)
        self.weight = self.bias = None

    def init_parameters(self, rng):
        kh, kw = self.kernel_size
        fan_in = self.in_channels // self.groups * kh * kw
        fan_out = self.out_channels // self.groups * kh * kw
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        weight = self.weight_init(rng, shape, fan_in, fan_out)
        bias = self.bias_init(rng, (self.out_channels,), fan_in, fan_out) if self.use_bias else None
        return {"weight": weight, "bias": bias}

    def output_shape(self, input_shape):
        check_ndim(self, input_shape, 4, "(N, C, H, W)")
        if input_shape[1] != self.in_channels:
            raise ValueError(f"{self!r}: expected input with {self.in_channels} channels, got shape {tuple(input_shape)}")
        try:
            oh, ow = checks.check_window(repr(self), input_shape, self.kernel_size, self.stride, self.pads,
                                          self.dilation)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        return (input_shape[0], self.out_channels, oh, ow)

    def forward(self, x):
        self._ensure_built(x)
        self.check_input(x)
        y, self.cache = conv2d_forward(x, self.weight.data, self._data(self.bias), stride=self.stride,
                                       padding=self.pads, dilation=self.dilation, groups=self.groups,
                                       training=self.training)
        return y

    def backward(self, dy, need_dx=True):
        return self._keep_gradients(conv2d_backward(dy, self.cache, need_dx=need_dx))

    def extra_repr(self):
        return f"{self.in_channels}->{self.out_channels}"

    def describe(self) -> str:
        k = "x".join(map(str, self.kernel_size))
        parts = [f"{self.in_channels}->{self.out_channels}", f"k={k}"]
        if self.stride != (1, 1):
            parts.append(f"s={self.stride[0] if self.stride[0] == self.stride[1] else self.stride}")
        if any(self.pads):
            parts.append(f"p={self.padding}")
        if self.dilation != (1, 1):
            parts.append(f"d={self.dilation}")
        if self.groups != 1:
            parts.append(f"g={self.groups}")
        return f"Conv2D({', '.join(parts)})"

    def config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "kernel_size": list(self.kernel_size),
                "stride": list(self.stride), "padding": self.padding if isinstance(self.padding, (int, str))
                else list(self.padding), "dilation": list(self.dilation), "groups": self.groups,
                "bias": self.use_bias, "weight_init": init_name(self.weight_init),
                "bias_init": init_name(self.bias_init)}
