"""Conv2D: holds weight (C_out, C_in/groups, kH, kW) and bias (C_out,); math in functional.conv."""
from __future__ import annotations

from .. import checks
from ..functional import conv2d_backward, conv2d_forward
from ..functional.conv import conv_padding
from .. import init
from ..init import name_of as init_name
from .activations import Activated
from .base import NOT_GIVEN, Layer, check_ndim, constructor_sizes


_NAMES = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias")


class Conv2D(Activated, Layer):
    """2-D convolution with PyTorch's argument names.

    Input (N, in_channels, H, W) -> output (N, out_channels, OH, OW).

    Sizes follow Chainer's rule: ``Conv2D(out_channels, kernel_size, stride=..., ...)`` (exactly two
    positional arguments) infers ``in_channels`` from the first input, and the rest are keywords;
    ``Conv2D(in_channels, out_channels, kernel_size, ...)`` (three or more) is PyTorch's signature;
    ``in_channels=None`` also infers. ``activation="relu"`` (or another name of
    ``xpcnn.layers.ACTIVATIONS``, or a layer) runs that activation's forward after the convolution and
    its backward before it. Weights and bias are drawn, as
    PyTorch's Conv2d draws them, from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in_channels/groups*kH*kW
    (``"torch_default"``), so an untrained network's outputs have PyTorch's scale; ``weight_init=
    "kaiming_uniform"`` (He et al.) and the others of :mod:`xpcnn.init` can be chosen instead.
    """

    param_names = ("weight", "bias")
    inferred_size = "in_channels"

    def __init__(self, *sizes, stride=1, padding=0, dilation=1, groups: int = 1, bias: bool = True,
                 weight_init="torch_default", bias_init="torch_default", activation=None,
                 in_channels=NOT_GIVEN, out_channels=NOT_GIVEN, kernel_size=NOT_GIVEN):
        super().__init__()
        # Chainer's rule: two positional sizes are (out_channels, kernel_size); three or more are PyTorch's
        # (in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        given = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups, "bias": bias}
        given.update(constructor_sizes(
            "Conv2D", _NAMES, sizes, {"in_channels": in_channels, "out_channels": out_channels,
                                      "kernel_size": kernel_size}, 2, "arguments",
            "write Conv2D(out_channels, kernel_size) to infer the input channels, or "
            "Conv2D(in_channels, out_channels, kernel_size)"))
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias = (
            given.get(name) for name in _NAMES)
        name = f"Conv2D({'?' if in_channels is None else in_channels}->{out_channels})"
        out_channels = checks.positive_int(name, "out_channels", out_channels)
        groups = checks.positive_int(name, "groups", groups)
        self.groups, self.out_channels, self.in_channels = groups, out_channels, None
        if in_channels is not None:
            self._set_in_channels(name, in_channels)
        elif out_channels % groups:
            raise ValueError(f"{name}: groups={groups} must divide out_channels={out_channels}")
        self.kernel_size = checks.pair(name, "kernel_size", kernel_size, 1)
        self.stride = checks.pair(name, "stride", stride, 1)
        self.dilation = checks.pair(name, "dilation", dilation, 1)
        self.pads = conv_padding(name, padding, self.kernel_size, self.stride, self.dilation)
        # as given ("same", 1, (1, 2), (top, bottom, left, right); checked above), NumPy integers as ints
        self.padding = padding if isinstance(padding, str) else tuple(map(checks.integral, padding)) \
            if isinstance(padding, (tuple, list)) else checks.integral(padding)
        self.use_bias = bool(bias)
        self.weight_init = init.get(name, "weight_init", weight_init)
        self.bias_init = init.get(name, "bias_init", bias_init)
        self._set_activation(name, activation)
        self.weight = self.bias = None

    def _set_in_channels(self, name: str, in_channels) -> None:
        in_channels = checks.positive_int(name, "in_channels", in_channels)
        if in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{name}: groups={self.groups} must divide in_channels={in_channels} "
                             f"and out_channels={self.out_channels}")
        self.in_channels = in_channels

    def infer(self, input_shape):
        if self.in_channels is None:
            check_ndim(self, input_shape, 4, "(N, C, H, W)")
            self._set_in_channels(self.label(), int(input_shape[1]))
        return self.output_shape(input_shape)

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
            raise ValueError(f"{self.label()}: expected input with {self.in_channels} channels, got shape {tuple(input_shape)}")
        try:
            oh, ow = checks.check_window(self.label(), input_shape, self.kernel_size, self.stride, self.pads,
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
        return self._activate(y)

    def backward(self, dy, need_dx=True):
        return self._keep_gradients(conv2d_backward(self._deactivate(dy), self.cache, need_dx=need_dx,
                                                       need_params=self.trains()))

    def extra_repr(self):
        return f"{'?' if self.in_channels is None else self.in_channels}->{self.out_channels}"

    def describe(self) -> str:
        k = "x".join(map(str, self.kernel_size))
        parts = [self.extra_repr(), f"k={k}"]
        if self.stride != (1, 1):
            parts.append(f"s={self.stride[0] if self.stride[0] == self.stride[1] else self.stride}")
        if any(self.pads):
            parts.append(f"p={self.padding}")
        if self.dilation != (1, 1):
            parts.append(f"d={self.dilation}")
        if self.groups != 1:
            parts.append(f"g={self.groups}")
        return f"Conv2D({', '.join(parts)})" + self._activation_text()

    def config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "kernel_size": list(self.kernel_size),
                "stride": list(self.stride), "padding": self.padding if isinstance(self.padding, (int, str))
                else list(self.padding), "dilation": list(self.dilation), "groups": self.groups,
                "bias": self.use_bias, "weight_init": init_name(self.weight_init),
                "bias_init": init_name(self.bias_init), **self._activation_config()}
