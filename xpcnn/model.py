"""Sequential: a list of layers, run forward in order and backward in reverse; and loading models from files.

This module owns the translation between a model and its architecture spec (``Sequential.spec()``,
``Sequential.from_spec()``), so it is where files become models (:func:`load`, :func:`load_checkpoint`).
``fit``/``evaluate``/``predict`` delegate down to :mod:`xpcnn.train` and ``save`` to
:mod:`xpcnn.checkpoint`; neither of those imports this module.
"""
from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Mapping
from typing import Any, Iterable, Iterator

import array_api_compat
import numpy as np

from . import checkpoint, checks, train
from .backend import Backend, RandomStream, backend_of, resolve, to_backend, to_numpy
from .layers import LAYER_TYPES
from .layers.base import Layer, Parameter, claim, layer_spec, release

_DTYPES = ("float32", "float64")


class Sequential(Layer):
    """A feed-forward stack of layers on one backend; itself a layer, so it nests inside another.

    ``Sequential(layers, backend=None, seed=None, dtype="float32", dropout_rng="device", input_shape=None)``:
    the parameters are drawn from ``numpy.random.default_rng(seed)`` on the host, in layer order, then
    moved to ``backend`` (default: the current backend), so one seed gives the same model on every
    backend. Layers whose input size is inferred (``Dense(10)``, ``Conv2D(32, 3)``) learn it from
    ``input_shape`` (without the batch axis: ``(1, 28, 28)``), from :meth:`build`, or from the first batch;
    every parameter is drawn only when the whole model knows its sizes, so a lazy model and its explicit
    twin get the same weights from one seed. A Sequential inside another takes the outer one's backend,
    dtype and generator; its state-dict keys nest as torch.nn.Sequential's do (``"2.0.weight"``).

    Dropout masks come from ``model.noise``, a :class:`~xpcnn.backend.RandomStream` seeded by the same
    generator: drawn on the model's device by its library (``dropout_rng="device"``, the default:
    reproducible per backend), or on the host and copied (``dropout_rng="host"``: the same masks on
    every backend, one copy per draw).

    Inputs may be arrays of the model's backend, or NumPy arrays (moved to the model's backend and
    cast to its dtype). An array of another backend is refused: move it with ``xpcnn.to_backend``.

    A layer object has one place in one model (its cache holds one input; building would redraw its
    weights): the same object twice, or a layer of another model, is refused at construction.
    ``input_shape`` may be a tuple, a list or a 1-D integer array.
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
        shape = None if input_shape is None else self._batch_shape(input_shape)
        backend = resolve(backend)                     # an unusable backend is refused before any layer is claimed
        parts = [(f"layer {index}", layer) for index, layer in enumerate(layers)]
        claim("Sequential", self, parts)
        self.layers = layers
        self.backend = backend
        self.dtype = dtype
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.dropout_rng = dropout_rng
        self.noise = None
        self.input_shape: tuple | None = None
        self._checked_shapes: dict[tuple, tuple] = {}
        self._output: tuple | None = None          # the shape of the last forward pass's output
        try:
            if shape is not None:
                self._build_for(shape)
            elif not self.missing_sizes():
                self._draw()
        except BaseException:
            release(parts)                             # a model that failed to build holds no layer
            raise

    # ------------------------------------------------------------------ building
    def children(self):
        return [(str(index), layer) for index, layer in enumerate(self.layers)]

    def missing_sizes(self) -> list[str]:
        return [f"layer {index} {layer.label()}: {size}" for index, layer in enumerate(self.layers)
                for size in layer.missing_sizes()]

    def build(self, input_shape=None, rng=None, dtype=None) -> "Sequential":
        """``model.build(input_shape)`` (Keras' form, without the batch axis): infer every layer's sizes
        for that input and draw the parameters. Inside another Sequential, ``build(backend, rng, dtype)``
        is the layer protocol: the outer model's backend, generator and dtype replace this one's."""
        if input_shape is not None and not isinstance(input_shape, (str, Backend)):
            return self._build_for(self._batch_shape(input_shape))
        self.backend, self.rng, self.dtype = resolve(input_shape), rng if rng is not None else self.rng, dtype or self.dtype
        for layer in self.layers:
            layer.build(self.backend, self.rng, self.dtype)
        self.built = True
        return self

    def _build_for(self, shape: tuple) -> "Sequential":
        self.infer(shape)
        self.input_shape = shape[1:]
        self._draw()
        return self

    def _batch_shape(self, input_shape) -> tuple:
        """``(1,) + input_shape`` as Python ints: a tuple, list or 1-D array of positive integers."""
        try:
            shape = tuple(checks.integral(s) for s in input_shape) if not isinstance(input_shape, str) else ()
        except TypeError:                       # not iterable (a 0-d array, a number)
            shape = ()
        if not shape or None in shape or min(shape) < 1:
            raise ValueError(f"Sequential: input_shape must be positive ints without the batch axis, such as "
                             f"(1, 28, 28), got {input_shape!r}")
        return (1,) + shape

    def infer(self, input_shape):
        shape = tuple(int(s) for s in input_shape)
        for index, layer in enumerate(self.layers):
            try:
                shape = layer.infer(shape)
            except ValueError as exc:
                raise ValueError(f"layer {index}: {exc}") from None
        return shape

    def _draw(self) -> None:
        """Draw every parameter in layer order, then the dropout stream's seed (a top-level model)."""
        self.build(self.backend, self.rng, self.dtype)
        self.noise = RandomStream(int(self.rng.integers(2**63)), host=self.dropout_rng == "host")
        self.set_noise(self.noise)

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise RuntimeError(f"Sequential: {what} needs the parameters, but some sizes are inferred from the input "
                               f"and not known yet ({'; '.join(self.missing_sizes())}); pass input_shape=(C, H, W) "
                               "to Sequential, call model.build((C, H, W)), or run a batch through the model first")

    # ------------------------------------------------------------------ running
    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def forward(self, x: Any) -> Any:
        """Run every layer in order; the shapes are checked for the whole stack before any layer runs."""
        if checks.is_trusted():                 # inside an outer model, which checked the shapes
            for layer in self.layers:
                x = layer.forward(x)
            return x
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

    def backward(self, dy: Any, input_grad: bool = True, *, need_dx: bool | None = None) -> Any:
        """Backpropagate dL/dy through the layers in reverse; parameter gradients are added to ``.grad``.

        Returns dL/dx, or None with ``input_grad=False`` (the first layer then skips its input gradient).
        """
        input_grad = input_grad if need_dx is None else need_dx
        if checks.is_trusted():
            return self._backward_layers(dy, input_grad)
        dy = self.prepare_input(dy, name="dy")
        if self._output is None:
            raise ValueError("Sequential: backward needs a forward pass first")
        if tuple(dy.shape) != self._output:
            raise ValueError(f"Sequential: dy must have the shape of the last output {self._output}, "
                             f"got {tuple(dy.shape)}")
        with checks.trusted():
            return self._backward_layers(dy, input_grad)

    def _backward_layers(self, dy: Any, input_grad: bool) -> Any:
        """The layers' backward passes, from the last down to the first that needs one: without ``input_grad``,
        the layers below the lowest trainable one (a frozen backbone) are not run at all."""
        lowest = 0
        if not input_grad:
            lowest = next((index for index, layer in enumerate(self.layers) if layer.trains()), len(self.layers))
        for index in range(len(self.layers) - 1, lowest - 1, -1):
            dy = self.layers[index].backward(dy, need_dx=input_grad or index > lowest)
        return dy if input_grad else None
    def prepare_input(self, x: Any, name: str = "x") -> Any:
        """Move a host (NumPy) array to the model's backend and dtype; refuse another backend's array."""
        if isinstance(x, (list, tuple)):
            x = np.asarray(x)
        try:
            source = backend_of(x)
        except TypeError:
            raise TypeError(f"Sequential: {name} must be an array, got {type(x).__name__}") from None
        if source == self.backend.name:
            if array_api_compat.device(x) != self.backend.device:
                raise ValueError(f"Sequential: {name} is on device {array_api_compat.device(x)} but the model is "
                                 f"on {self.backend.device}; move it with xpcnn.to_backend({name}, model.backend)")
            if x.dtype != getattr(self.backend.xp, self.dtype):
                self._check_float(x, name)
                x = self.backend.xp.astype(x, getattr(self.backend.xp, self.dtype))
            return x
        if source != "numpy":
            raise TypeError(f"Sequential: {name} is a {source} array but the model is on {self.backend.name}; "
                            f"move it with xpcnn.to_backend({name}, {self.backend.name!r}) or model.to({source!r})")
        self._check_float(x, name)
        return to_backend(x, self.backend, dtype=self.dtype)

    def _check_float(self, x: Any, name: str) -> None:
        xp = array_api_compat.array_namespace(x)
        if not xp.isdtype(x.dtype, "real floating") or "float16" in str(x.dtype):
            raise TypeError(f"Sequential: {name} must have dtype float32 or float64 (the model computes in "
                            f"{self.dtype}), got dtype {x.dtype}; convert images with x.astype('float32') / 255")

    def output_shape(self, input_shape: tuple) -> tuple:
        """Walk the shapes through every layer; a layer that cannot take its input raises, named with its index."""
        input_shape = tuple(int(s) for s in input_shape)
        known = self._checked_shapes.get(input_shape)
        if known is not None:
            return known
        shape = input_shape
        for index, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as exc:
                raise ValueError(f"layer {index}: {exc}") from None
        if len(self._checked_shapes) > 64:
            self._checked_shapes.clear()
        self._checked_shapes[input_shape] = shape
        return shape

    # ------------------------------------------------------------------ layers, parameters and modes
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

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    @contextlib.contextmanager
    def evaluating(self) -> Iterator["Sequential"]:
        """``with model.evaluating(): ...`` runs in evaluation mode and restores the previous mode after."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    def to(self, backend: str | Backend) -> "Sequential":
        """Move every parameter and buffer to ``backend`` (in place; returns the model)."""
        self.backend = resolve(backend)
        for layer in self.layers:
            layer.to(self.backend)
        return self

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, np.ndarray]:
        """Host NumPy copies of parameters and buffers, keyed as torch.nn.Sequential keys them."""
        state = {key: np.array(to_numpy(param.data), copy=True) for key, param in self.named_parameters()}
        state.update({key: np.array(to_numpy(value), copy=True) for key, value in self.named_buffers()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load arrays (NumPy, torch tensors, ... any backend) by key; every mismatch is listed in one error
        (one line for one problem) and nothing is changed unless every key fits: the shape and dtype kind
        of ``state_dict()``, finite values that stay finite in the model's dtype, and no negative
        ``running_var``."""
        if not isinstance(state, Mapping):
            raise TypeError(f"load_state_dict: expected a dict of arrays keyed as state_dict() keys them, got "
                            f"{type(state).__name__}")
        expected = self.state_dict()
        largest = float(np.finfo(self.dtype).max)
        variances = {key for key, _, attr in self.buffer_slots() if attr == "running_var"}
        problems = []
        host = {}
        for key, value in state.items():
            if key not in expected:
                problems.append(f"unexpected key {key!r}")
                continue
            array = _host_array(value)
            if isinstance(array, str):
                problems.append(f"{key!r}: {array}")
                continue
            if array.shape != expected[key].shape:
                problems.append(f"{key!r}: expected shape {expected[key].shape}, got {array.shape}")
            elif expected[key].dtype.kind != array.dtype.kind and not (
                    expected[key].dtype.kind in "iu" and array.dtype.kind in "iu"):
                problems.append(f"{key!r}: expected a {expected[key].dtype.kind!r}-kind dtype like "
                                f"{expected[key].dtype}, got {array.dtype}")
            elif array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                problems.append(f"{key!r}: holds NaN or infinity")
            elif array.dtype.kind == "f" and array.size and float(np.max(np.abs(array))) > largest:
                problems.append(f"{key!r}: holds values beyond {self.dtype}'s range (up to "
                                f"{float(np.max(np.abs(array))):.3g}), which would become infinity")
            elif key in variances and array.size and float(np.min(array)) < 0:
                problems.append(f"{key!r}: a variance must be >= 0, got {float(np.min(array)):.3g}")
            else:
                host[key] = array
        problems += [f"missing key {key!r}" for key in expected if key not in state]
        if len(problems) == 1:
            raise ValueError(f"load_state_dict: the state does not fit this model: {problems[0]}")
        if problems:
            raise ValueError("load_state_dict: the state does not fit this model:\n  " + "\n  ".join(problems))
        for key, param in self.named_parameters():
            param.data, param.grad = to_backend(host[key], self.backend, dtype=self.dtype), None
        for key, owner, attr in self.buffer_slots():
            kind_dtype = self.dtype if host[key].dtype.kind == "f" else None
            setattr(owner, attr, to_backend(host[key], self.backend, dtype=kind_dtype))
        self._checked_shapes.clear()

    # ------------------------------------------------------------------ training (xpcnn.train, xpcnn.checkpoint)
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
        """Write a checkpoint (architecture, weights, optionally training state; see :func:`xpcnn.checkpoint.save`),
        or, for a path ending in ``.safetensors``, the weights with the architecture in the file's metadata
        (:func:`xpcnn.checkpoint.save_weights`; readable by PyTorch and JAX)."""
        if str(path).endswith(".safetensors"):
            if kwargs:
                raise ValueError(f"save: a .safetensors file holds the weights only, not {', '.join(sorted(kwargs))}; "
                                 "save training state to a .npz checkpoint")
            return checkpoint.save_weights(self, path)
        return checkpoint.save(self, path, **kwargs)

    def spec(self) -> dict:
        """The architecture as JSON-able data: ``{"dtype": ..., "dropout_rng": ..., "input_shape": [...] (when
        known), "layers": [{"type": ..., "config": ...}, ...]}``; nested Sequentials and Residual blocks hold
        their layers' specs."""
        known = {**LAYER_TYPES, "Sequential": Sequential}

        def check(layer: Layer, where: str) -> None:
            if known.get(type(layer).__name__) is not type(layer):
                raise checkpoint.CheckpointError(f"save: layer {where} {layer!r} is not a built-in or registered "
                                                 "layer type and cannot be saved (see xpcnn.layers.register)")
            for name, child in layer.children():
                check(child, f"{where}.{name}")

        for index, layer in enumerate(self.layers):
            check(layer, str(index))
        shape = {} if self.input_shape is None else {"input_shape": list(self.input_shape)}
        return {"dtype": self.dtype, "dropout_rng": self.dropout_rng, **shape, **self.config()}

    def config(self) -> dict:
        return {"layers": [layer_spec(layer) for layer in self.layers]}

    @classmethod
    def from_config(cls, config: dict, build) -> "Sequential":
        return cls([build(entry) for entry in config["layers"]])

    @classmethod
    def from_spec(cls, spec: dict, backend: str | Backend | None = None) -> "Sequential":
        """A new model of the architecture ``spec`` (from :meth:`spec`), with freshly drawn parameters."""
        known = {**LAYER_TYPES, "Sequential": cls}

        def build(entry: dict) -> Layer:
            if entry["type"] == "SyncBatchNorm2D" and entry["type"] not in known:
                importlib.import_module("xpcnn.distributed")         # registers it (mpi4py only when used)
                known.update(LAYER_TYPES)
            if entry["type"] not in known:
                raise ValueError(f"unknown layer type {entry['type']!r}")
            return known[entry["type"]].from_config(entry["config"], build)

        shape = spec.get("input_shape")
        return cls([build(entry) for entry in spec["layers"]], backend=backend, dtype=spec["dtype"],
                   dropout_rng=spec.get("dropout_rng", "device"), input_shape=None if shape is None else tuple(shape))

    # ------------------------------------------------------------------ description
    def summary(self, input_shape: tuple | None = None) -> None:
        """Print a table of layers, output shapes and parameter counts for an input of ``input_shape``
        (with or without the batch axis; default the shape the model was built for), as Keras does;
        :meth:`summary_text` returns the same text."""
        print(self.summary_text(input_shape))

    def summary_rows(self, prefix, input_shape):
        rows, shape = [], tuple(input_shape)
        for index, layer in enumerate(self.layers):
            try:
                layer_rows, shape = layer.summary_rows(f"{prefix}.{index}" if prefix else str(index), shape)
            except ValueError as exc:
                raise ValueError(f"layer {index}: {exc}") from None
            rows += layer_rows
        return rows, shape

    def summary_text(self, input_shape: tuple | None = None) -> str:
        """The table :meth:`summary` prints, as a string."""
        if input_shape is None:
            if self.input_shape is None:
                raise ValueError("summary: pass the input shape, such as summary((1, 28, 28)); the model was not "
                                 "built with input_shape=... or model.build(...)")
            input_shape = self.input_shape
        shape = tuple(input_shape)
        if len(shape) in (1, 3):
            shape = (1,) + shape
        self._require_built("summary()")
        try:
            found, _ = self.summary_rows("", shape)
        except ValueError as exc:
            raise ValueError(f"summary: {exc}") from None
        rows = [("#", "layer", "output shape", "params")]
        rows += [(index, text, str(("N",) + tuple(out[1:])).replace("'", ""), f"{count:,}")
                 for index, text, out, count in found]
        total = sum(int(np.prod(p.shape)) for p in self.parameters())
        widths = [max(len(row[c]) for row in rows) for c in range(4)]

        def format_row(row):
            return "  ".join(cell.rjust(w) if c == 3 else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths)))

        line = "  ".join("-" * w for w in widths)
        text = [line, format_row(rows[0]), line] + [format_row(row) for row in rows[1:]]
        text += [line, f"total parameters: {total:,}   backend: {self.backend.name}   dtype: {self.dtype}"]
        return "\n".join(text)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  ({i}) " + repr(layer).replace("\n", "\n  ") for i, layer in enumerate(self.layers))
        return f"Sequential(backend={self.backend.name!r}, dtype={self.dtype!r},\n{inner}\n)"


def load_checkpoint(path: str | os.PathLike, backend: str | Backend | None = None) -> checkpoint.Checkpoint:
    """The model, optimizer, schedule and training state of a checkpoint, on ``backend`` (default: the
    current backend), whichever backend saved it. The model is built from the file's architecture first,
    so no entry larger than its place in that model is ever decompressed."""
    built = []

    def expected(spec: dict):
        built.append(_rebuilt(spec, backend, path))
        return checkpoint.state_shapes(built[-1])

    saved = checkpoint.read(path, expected=expected)
    model = built[-1]
    try:
        model.rng.bit_generator.state = saved.model_rng
        model.noise.set_state(saved.noise)
    except (KeyError, TypeError, ValueError) as exc:
        raise checkpoint.CheckpointError(f"{saved.path}: the checkpoint's random state cannot be restored: "
                                         f"{exc}") from None
    try:
        model.load_state_dict(saved.model_state)
    except ValueError as exc:
        raise checkpoint.CheckpointError(f"{saved.path}: {exc}") from None
    model.train(saved.training)
    optimizer = checkpoint.restore_optimizer(saved, model.parameters())
    return checkpoint.Checkpoint(model, optimizer, checkpoint.restore_scheduler(saved, optimizer), saved.epoch,
                                 saved.history, saved.data_rng_state, saved.metadata)


def load(path: str | os.PathLike, backend: str | Backend | None = None) -> Sequential:
    """The model stored in a checkpoint (``.npz``) or a ``.safetensors`` file written by ``model.save``, on
    ``backend``."""
    if str(path).endswith(".safetensors"):
        spec, tensors = checkpoint.read_weights(path)
        model = _rebuilt(spec, backend, path)
        try:
            model.load_state_dict(tensors)
        except ValueError as exc:
            lines = str(exc).removeprefix("load_state_dict: the state does not fit this model:").splitlines()
            problems = "; ".join(line.strip() for line in lines if line.strip())
            raise checkpoint.CheckpointError(f"{path}: the tensors do not fit the architecture: {problems}") from None
        return model.eval()
    return load_checkpoint(path, backend).model


def _host_array(value: Any) -> "np.ndarray | str":
    """``value`` as a host NumPy array of numbers, or what is wrong with it (a None, a string, a dtype NumPy lacks)."""
    if value is None or isinstance(value, (str, bytes, dict)):
        return f"expected an array, got {type(value).__name__}"
    try:
        array = to_numpy(value)
    except (TypeError, ValueError, RuntimeError, BufferError) as exc:
        dtype = getattr(value, "dtype", None)
        hint = "; convert it first, e.g. tensor.float()" if dtype is not None else ""
        return f"cannot be read as a NumPy array ({type(value).__name__} of dtype {dtype}: {exc}){hint}".replace(
            "\n", " ")
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        return f"expected an array of numbers, got {type(value).__name__} of dtype {getattr(array, 'dtype', None)}"
    return array


def _rebuilt(spec: dict, backend, path) -> Sequential:
    try:
        return Sequential.from_spec(spec, backend)
    except (KeyError, TypeError, ValueError) as exc:
        raise checkpoint.CheckpointError(f"{path}: the architecture in the file cannot be rebuilt: {exc}") from None
