"""Dense (fully connected) and Flatten."""
from __future__ import annotations

import array_api_compat

from ..functional import linear_backward, linear_forward
from ..checks import positive_int
from .. import init
from ..init import name_of as init_name
from .activations import Activated
from .base import NOT_GIVEN, Layer, constructor_sizes


class Dense(Activated, Layer):
    """y = x @ W^T + b with weight (out_features, in_features), as torch.nn.Linear. Input (N, in_features).

    ``Dense(out_features)`` (one positional size) or ``in_features=None`` infers the input size from the
    first input; ``activation=`` composes an activation as in :class:`Conv2D`.

    Weights and bias are drawn as torch.nn.Linear draws them, U(-1/sqrt(in_features), 1/sqrt(in_features))
    (``"torch_default"``); any initialiser of :mod:`xpcnn.init` can be chosen instead."""

    param_names = ("weight", "bias")
    inferred_size = "in_features"

    def __init__(self, *sizes, bias: bool = True, weight_init="torch_default", bias_init="torch_default",
                 activation=None, in_features=NOT_GIVEN, out_features=NOT_GIVEN):
        super().__init__()
        # Chainer's Linear(out_size) rule: one positional size is out_features; two are (in, out)
        given = constructor_sizes("Dense", ("in_features", "out_features"), sizes,
                                  {"in_features": in_features, "out_features": out_features}, 1,
                                  "sizes (in_features, out_features)",
                                  "write Dense(out_features) to infer the input size, or Dense(in_features, out_features)")
        in_features, out_features = given.get("in_features"), given["out_features"]
        name = f"Dense({'?' if in_features is None else in_features}->{out_features})"
        out_features = positive_int(name, "out_features", out_features)
        if in_features is not None:
            in_features = positive_int(name, "in_features", in_features)
        self.in_features, self.out_features, self.use_bias = in_features, out_features, bool(bias)
        self.weight_init = init.get(name, "weight_init", weight_init)
        self.bias_init = init.get(name, "bias_init", bias_init)
        self._set_activation(name, activation)
        self.weight = self.bias = None

    def infer(self, input_shape):
        if self.in_features is None:
            if len(input_shape) != 2:
                raise self.fail(input_shape, "(N, features)")
            positive_int(self.label(), "in_features", int(input_shape[1]))
            self.in_features = int(input_shape[1])
        return self.output_shape(input_shape)

    def init_parameters(self, rng):
        shape = (self.out_features, self.in_features)
        weight = self.weight_init(rng, shape, self.in_features, self.out_features)
        bias = self.bias_init(rng, (self.out_features,), self.in_features, self.out_features) if self.use_bias else None
        return {"weight": weight, "bias": bias}

    def output_shape(self, input_shape):
        if len(input_shape) != 2 or input_shape[1] != self.in_features:
            raise self.fail(input_shape, f"(N, {self.in_features})")
        return (input_shape[0], self.out_features)

    def forward(self, x):
        self._ensure_built(x)
        self.check_input(x)
        y, self.cache = linear_forward(x, self.weight.data, self._data(self.bias))
        return self._activate(y)

    def backward(self, dy, need_dx=True):
        return self._keep_gradients(linear_backward(self._deactivate(dy), self.cache, need_dx=need_dx,
                                                       need_params=self.trains()))

    def extra_repr(self):
        return f"{'?' if self.in_features is None else self.in_features}->{self.out_features}"

    def describe(self) -> str:
        return self.label() + self._activation_text()

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.use_bias,
                "weight_init": init_name(self.weight_init), "bias_init": init_name(self.bias_init),
                **self._activation_config()}


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W); backward reshapes δ back."""

    @staticmethod
    def _flat(input_shape) -> tuple:
        size = 1
        for extent in input_shape[1:]:
            size *= extent
        return (input_shape[0], size)

    def output_shape(self, input_shape):
        if len(input_shape) < 2:
            raise self.fail(input_shape, "an input with a batch axis and at least one more")
        return self._flat(input_shape)

    def forward(self, x):
        self._ensure_built(x)
        self.check_input(x)
        self.cache = tuple(x.shape)
        return array_api_compat.array_namespace(x).reshape(x, self._flat(self.cache))

    def backward(self, dy, need_dx=True):
        return array_api_compat.array_namespace(dy).reshape(dy, self.cache)
