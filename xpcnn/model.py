"""Sequential: a list of layers, run forward in order and backward in reverse.

``fit``/``evaluate``/``predict`` delegate down to :mod:`xpcnn.train`; ``spec``/``from_spec``/``save``/
``load_state_dict`` to :mod:`xpcnn.serialization`, ``summary`` to :mod:`xpcnn.summary`; none of those
imports this module.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import array_api_compat
import numpy as np

from . import checks, serialization, summary, train
from .backend import Backend, RandomStream, backend_of, resolve, to_backend
from .layers import register
from .layers.base import Layer, Parameter, claim, release, walk_shapes

_DTYPES = ("float32", "float64")


@register                      # a type specs may name: a Sequential nests inside another
class Sequential(Layer):
    """A feed-forward stack of layers on one backend; itself a layer, so it nests (an inner one takes the outer
    one's backend, dtype and generator; keys like ``"2.0.weight"``, as torch.nn.Sequential's).

    Parameters are drawn from ``numpy.random.default_rng(seed)`` on the host, in layer order, then moved to
    ``backend`` (default: the current one): one seed, one model on every backend. Sizes left to the input
    (``Dense(10)``) come from ``input_shape`` (no batch axis), :meth:`build` or the first batch, and nothing
    is drawn before all are known. Dropout masks come from ``model.noise``, drawn on the device
    (``dropout_rng="device"``) or on the host (``"host"``: alike on every backend). Inputs are arrays of the
    model's backend or NumPy arrays. A layer object has one place in one model.
    """

    def __init__(self, layers: Iterable[Layer], backend: str | Backend | None = None, seed: int | None = None,
                 dtype: str = "float32", dropout_rng: str = "device", input_shape: tuple | None = None):
        super().__init__()
        layers = list(layers)
        for index, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {index} is a {type(layer).__name__}, not an xpcnn layer")
        if dtype not in _DTYPES:
            raise ValueError(f"Sequential: dtype must be one of {_DTYPES}, got {dtype!r}")
        if dropout_rng not in ("device", "host"):
            raise ValueError(f"Sequential: dropout_rng must be 'device' or 'host', got {dropout_rng!r}")
        shape = None if input_shape is None else batch_shape(input_shape)      # checked before any layer is claimed,
        backend = resolve(backend)                                              # as the backend is
        parts = [(f"layer {index}", layer) for index, layer in enumerate(layers)]
        claim("Sequential", self, parts)
        self.layers, self.backend, self.dtype, self.seed, self.dropout_rng = layers, backend, dtype, seed, dropout_rng
        self.rng, self._checked_shapes = np.random.default_rng(seed), {}
        self.input_shape = self._output = None     # the shape built for; the last forward pass's output shape
        try:
            if shape is not None:
                self.build(shape[1:])
            elif not self.missing_sizes():
                self._draw()
        except BaseException:
            release(parts)                             # a model that failed to build holds no layer
            raise

    def children(self):
        return [(str(index), layer) for index, layer in enumerate(self.layers)]

    def missing_sizes(self) -> list[str]:
        return [f"layer {index} {layer.label()}: {size}" for index, layer in enumerate(self.layers)
                for size in layer.missing_sizes()]

    def build(self, input_shape) -> "Sequential":
        """Keras' ``model.build(input_shape)``, without the batch axis (``(1, 28, 28)``): infer every layer's
        sizes for that input and draw the parameters."""
        if isinstance(input_shape, (str, Backend)):
            raise TypeError(f"Sequential.build: input_shape must be a shape without the batch axis, such as "
                            f"(1, 28, 28), got {input_shape!r}; a backend goes to Sequential(..., backend=...)")
        shape = batch_shape(input_shape)
        self.infer(shape)
        self.input_shape = shape[1:]
        self._draw()
        return self

    def _materialize(self, backend, rng=None, dtype=None) -> "Sequential":
        """The layer protocol inside a container: the outer model's backend, generator and dtype replace this one's."""
        self.backend, self.rng, self.dtype = resolve(backend), rng if rng is not None else self.rng, dtype or self.dtype
        for layer in self.layers:
            layer._materialize(self.backend, self.rng, self.dtype)
        self.built = True
        return self

    def _draw(self) -> None:                   # every parameter in layer order, then the dropout stream's seed
        self._materialize(self.backend, self.rng, self.dtype)
        self.set_noise(RandomStream(int(self.rng.integers(2**63)), host=self.dropout_rng == "host"))

    def infer(self, input_shape):
        return walk_shapes(self.layers, input_shape, lambda index, layer, shape: layer.infer(shape))

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise RuntimeError(f"Sequential: {what} needs the parameters, but some sizes are inferred from the input "
                               f"and not known yet ({'; '.join(self.missing_sizes())}); pass input_shape=(C, H, W) "
                               "to Sequential, call model.build((C, H, W)), or run a batch through the model first")

    def forward(self, x: Any) -> Any:
        """Run every layer in order; the shapes are checked for the whole stack before any layer runs."""
        if not checks.is_trusted():             # a top-level call (inside a model, the model checked)
            x = self.prepare_input(x)
            if x.ndim == 0 or x.shape[0] == 0:
                raise ValueError(f"Sequential: x is an empty batch, shape {tuple(x.shape)}; pass at least one sample")
            if not self.built:
                self.build(tuple(int(s) for s in x.shape[1:]))
            self._output = self.output_shape(tuple(x.shape))
        with checks.trusted():                  # each layer and op trusts the shapes checked above
            for layer in self.layers:
                x = layer.forward(x)
        return x

    def backward(self, dy: Any, need_dx: bool = True) -> Any:
        """Backpropagate dL/dy through the layers in reverse; parameter gradients are added to ``.grad``.
        Returns dL/dx, or None with ``need_dx=False``: then the layers below the lowest trainable one (a
        frozen backbone) are not run at all, and that one skips its input gradient."""
        if not checks.is_trusted():             # a top-level call: dy is checked once, here
            dy = self.prepare_input(dy, name="dy")
            if self._output is None:
                raise ValueError("Sequential: backward needs a forward pass first")
            if tuple(dy.shape) != self._output:
                raise ValueError(f"Sequential: dy must have the shape of the last output {self._output}, "
                                 f"got {tuple(dy.shape)}")
        lowest = 0 if need_dx else next((index for index, layer in enumerate(self.layers) if layer.trains()),
                                        len(self.layers))
        with checks.trusted():
            for index in range(len(self.layers) - 1, lowest - 1, -1):
                dy = self.layers[index].backward(dy, need_dx=need_dx or index > lowest)
        return dy if need_dx else None

    def prepare_input(self, x: Any, name: str = "x") -> Any:
        return model_input(x, self.backend, self.dtype, name)

    def output_shape(self, input_shape: tuple) -> tuple:
        """The output shape for ``input_shape`` (cached); a layer that cannot take its input raises, named."""
        input_shape = tuple(int(s) for s in input_shape)
        if input_shape not in self._checked_shapes:
            if len(self._checked_shapes) > 64:
                self._checked_shapes.clear()
            self._checked_shapes[input_shape] = walk_shapes(self.layers, input_shape,
                                                              lambda index, layer, shape: layer.output_shape(shape))
        return self._checked_shapes[input_shape]

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        self._require_built("named_parameters()")
        return super().named_parameters()

    def parameters(self) -> list[Parameter]:
        self._require_built("parameters()")
        return [p for _, p in self.named_parameters()]

    def to(self, backend: str | Backend) -> "Sequential":       # in place; works before the parameters are drawn
        self.backend = resolve(backend)
        for layer in self.layers:
            layer.to(self.backend)
        return self

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load arrays (NumPy, torch tensors, ... any backend) by key; every mismatch is listed in one error
        and nothing is changed unless every key fits (:func:`xpcnn.serialization.load_state`)."""
        serialization.load_state(self, state)

    def fit(self, x, y, **kwargs):
        """Train on host arrays; see :func:`xpcnn.train.fit` for the arguments. Returns a History."""
        return train.fit(self, x, y, **kwargs)

    def evaluate(self, x, y, **kwargs) -> dict:
        """Mean loss and accuracy over ``x``, ``y``; see :func:`xpcnn.train.evaluate`."""
        return train.evaluate(self, x, y, **kwargs)

    def predict(self, x, **kwargs):
        """Outputs for ``x`` as a NumPy array; see :func:`xpcnn.train.predict`."""
        return train.predict(self, x, **kwargs)

    def save(self, path, **kwargs):
        """A ``.npz`` checkpoint, or the weights alone to ``.safetensors`` (:func:`xpcnn.serialization.save`)."""
        return serialization.save(self, path, **kwargs)

    def config(self) -> dict:
        return {"layers": self.layers}

    def spec(self) -> dict:
        """The architecture as JSON-able data (:func:`xpcnn.serialization.model_spec`)."""
        return serialization.model_spec(self)

    @classmethod
    def from_spec(cls, spec: dict, backend: str | Backend | None = None) -> "Sequential":
        """A new model of the architecture ``spec``, with freshly drawn parameters."""
        return serialization.model_from_spec(spec, backend)

    def summary(self, input_shape: tuple | None = None) -> None:
        """Print the table of :func:`xpcnn.summary.summary_text`: layers, output shapes, parameter counts."""
        print(summary.summary_text(self, input_shape))

    def summary_text(self, input_shape: tuple | None = None) -> str:
        return summary.summary_text(self, input_shape)

    def summary_rows(self, prefix, input_shape):
        return summary.chain_rows(self.layers, prefix, input_shape)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  ({i}) " + repr(layer).replace("\n", "\n  ") for i, layer in enumerate(self.layers))
        return f"Sequential(backend={self.backend.name!r}, dtype={self.dtype!r},\n{inner}\n)"


def batch_shape(input_shape) -> tuple:
    """``(1,) + input_shape`` as Python ints: a tuple, list or 1-D array of positive integers."""
    try:
        shape = tuple(checks.integral(s) for s in input_shape) if not isinstance(input_shape, str) else ()
    except TypeError:                       # not iterable (a 0-d array, a number)
        shape = ()
    if not shape or None in shape or min(shape) < 1:
        raise ValueError(f"Sequential: input_shape must be positive ints without the batch axis, such as "
                         f"(1, 28, 28), got {input_shape!r}")
    return (1,) + shape


def model_input(x: Any, backend: Backend, dtype: str, name: str = "x") -> Any:
    """``x`` as an array of ``backend`` in ``dtype``: a host (NumPy) array or list is moved there, an array of
    ``backend`` is cast; another backend's array, or one that is not of a float dtype, is refused."""
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    try:
        source = backend_of(x)
    except TypeError:
        raise TypeError(f"Sequential: {name} must be an array, got {type(x).__name__}") from None
    if source != backend.name and source != "numpy":
        raise TypeError(f"Sequential: {name} is a {source} array but the model is on {backend.name}; "
                        f"move it with xpcnn.to_backend({name}, {backend.name!r}) or model.to({source!r})")
    if source == backend.name and array_api_compat.device(x) != backend.device:
        raise ValueError(f"Sequential: {name} is on device {array_api_compat.device(x)} but the model is "
                         f"on {backend.device}; move it with xpcnn.to_backend({name}, model.backend)")
    if source == backend.name and x.dtype == getattr(backend.xp, dtype):
        return x
    xp = array_api_compat.array_namespace(x)
    if not xp.isdtype(x.dtype, "real floating") or "float16" in str(x.dtype):
        raise TypeError(f"Sequential: {name} must have dtype float32 or float64 (the model computes in "
                        f"{dtype}), got dtype {x.dtype}; convert images with x.astype('float32') / 255")
    if source == backend.name:
        return backend.xp.astype(x, getattr(backend.xp, dtype))
    return to_backend(x, backend, dtype=dtype)
