"""Parameter and the Layer base class: thin stateful wrappers over xpcnn.functional."""
from __future__ import annotations

import contextlib
import weakref
from typing import Any, Iterator

import numpy as np

from .. import checks
from ..backend import Backend, backend_for, backend_of, dtype_name, resolve, to_backend, to_numpy


class Parameter:
    """A trainable array: ``.data`` (on the model's backend) and ``.grad`` (same shape, or None).

    ``requires_grad = False`` freezes it (as ``layer.freeze()`` does): backward computes and stores no
    gradient for it, and optimizers leave it alone.
    """

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data: Any, requires_grad: bool = True):
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.data.dtype}, backend={backend_of(self.data)})"


class Layer:
    """Base class. Subclasses implement ``output_shape``, ``forward`` and ``backward``.

    ``forward(x)`` keeps what ``backward`` needs in ``self.cache``; ``backward(dy)`` stores
    parameter gradients in ``param.grad`` (adding to an existing gradient, as PyTorch does)
    and returns dx.
    """

    param_names: tuple[str, ...] = ()
    buffer_names: tuple[str, ...] = ()
    inferred_size: str | None = None   # the constructor size that may be left to the input (Dense: in_features)

    def __init__(self) -> None:
        self.training = True
        self.cache: Any = None
        self.built = False
        self.rng: np.random.Generator | None = None
        self.noise = None          # the model's RandomStream (dropout masks), set by Sequential

    # ------------------------------------------------------------------ construction
    def init_parameters(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Host float64 values of this layer's parameters (drawn from ``rng``)."""
        return {}

    def init_buffers(self) -> dict[str, np.ndarray]:
        """Host values of non-trainable state (BatchNorm's running statistics)."""
        return {}

    def _materialize(self, backend: Backend | str | None = None, rng: np.random.Generator | None = None,
                     dtype: str = "float32") -> "Layer":
        """Create the parameters on ``backend`` from ``rng``: the protocol a container (a Sequential) runs on
        its layers once every size is known; a layer used on its own runs it on its first input.

        The layer does not keep the backend: its arrays carry their library and device, and the model
        that holds the layer is where the backend is recorded (``model.backend``).
        """
        target = resolve(backend)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.dtype = dtype
        for name, value in self.init_parameters(self.rng).items():
            setattr(self, name, None if value is None else Parameter(to_backend(value, target, dtype=dtype)))
        for name, value in self.init_buffers().items():
            buffer_dtype = dtype if np.asarray(value).dtype.kind == "f" else None
            setattr(self, name, to_backend(value, target, dtype=buffer_dtype))
        self.built = True
        return self

    def _ensure_built(self, x: Any) -> None:
        """A layer used on its own builds on its first input's backend, device and float dtype (inferring
        the sizes it was not given from x's shape)."""
        if not self.built:
            self.infer(tuple(x.shape))
            self._materialize(backend_for(x), None, dtype_name(x))

    # ------------------------------------------------------------------ inferred sizes
    def missing_sizes(self) -> list[str]:
        """The constructor sizes this layer still has to infer from its input (``Dense(10)``: in_features)."""
        name = self.inferred_size
        return [name] if name is not None and getattr(self, name) is None else []

    def infer(self, input_shape: tuple) -> tuple:
        """Take the sizes not given at construction from ``input_shape``; return the output shape.
        Nothing is drawn here: a model infers every layer first, then draws all parameters in order."""
        return self.output_shape(tuple(input_shape))

    # ------------------------------------------------------------------ modes and state slots
    def train(self, mode: bool = True) -> "Layer":
        self.training = bool(mode)
        for _, child in self.children():
            child.train(self.training)
        return self

    def eval(self) -> "Layer":
        return self.train(False)

    @contextlib.contextmanager
    def evaluating(self) -> Iterator["Layer"]:
        """``with model.evaluating(): ...`` runs in evaluation mode and restores the previous mode after."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    def buffer_slots(self) -> list[tuple[str, "Layer", str]]:
        """``(key, owner, attribute)`` for every buffer, keys as in the state dict, those of contained layers too."""
        own = [(name, self, name) for name in self.buffer_names if getattr(self, name, None) is not None]
        return own + [(f"{prefix}.{key}", owner, attr) for prefix, child in self.children()
                      for key, owner, attr in child.buffer_slots()]

    def freeze(self) -> "Layer":
        """Freeze every parameter of this layer and the layers it contains (fine-tuning: no gradient is
        computed or stored for them, optimizers skip them); returns the layer."""
        return self.requires_grad_(False)

    def unfreeze(self) -> "Layer":
        return self.requires_grad_(True)

    def requires_grad_(self, requires_grad: bool = True) -> "Layer":
        for _, param in self.named_parameters():
            param.requires_grad = bool(requires_grad)
            if not requires_grad:
                param.grad = None
        return self

    def trains(self) -> bool:
        """Whether any parameter of this layer (or a layer inside it) takes gradients."""
        return any(param.requires_grad for _, param in self.named_parameters())

    def set_noise(self, noise) -> None:
        """Share the model's random stream (dropout masks); containers pass it on."""
        self.noise = noise
        for _, child in self.children():
            child.set_noise(noise)

    def children(self) -> list[tuple[str, "Layer"]]:
        """The layers this one contains, with their state-dict prefixes (containers only)."""
        return []

    def summary_rows(self, prefix: str, input_shape: tuple) -> tuple[list[tuple[str, str, tuple, int]], tuple]:
        """Rows ``(index, description, output shape, parameter count)`` for ``Sequential.summary`` and the
        output shape; containers add a row per layer inside."""
        shape = self.output_shape(input_shape)
        count = sum(int(np.prod(p.shape)) for _, p in self.named_parameters())
        return [(prefix, self.describe(), shape, count)], shape

    # ------------------------------------------------------------------ interface
    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """This layer's parameters, then those of the layers it contains, keyed ``"<child>.<name>"``."""
        own = [(name, getattr(self, name)) for name in self.param_names if getattr(self, name, None) is not None]
        return own + [(f"{prefix}.{name}", p) for prefix, child in self.children() for name, p in child.named_parameters()]

    def parameters(self) -> list[Parameter]:
        """This layer's parameters and those of the layers it contains (``named_parameters`` without names)."""
        return [param for _, param in self.named_parameters()]

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.grad = None

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host NumPy copies of parameters and buffers, keyed as torch.nn.Sequential keys them."""
        state = {key: np.array(to_numpy(param.data), copy=True) for key, param in self.named_parameters()}
        state.update({key: np.array(to_numpy(value), copy=True) for key, value in self.named_buffers()})
        return state

    def named_buffers(self) -> list[tuple[str, Any]]:
        own = [(name, getattr(self, name)) for name in self.buffer_names if getattr(self, name, None) is not None]
        return own + [(f"{prefix}.{name}", v) for prefix, child in self.children() for name, v in child.named_buffers()]

    def output_shape(self, input_shape: tuple) -> tuple:
        """The output shape for ``input_shape``, or a ValueError naming this layer."""
        return tuple(input_shape)

    def check_input(self, x: Any) -> None:
        """Validate ``x``'s shape for a standalone call; inside a model (checks.trusted()) the model
        checked the whole stack's shapes once for this batch, so nothing is repeated."""
        if not checks.is_trusted():
            self.output_shape(tuple(x.shape))

    def forward(self, x: Any) -> Any:
        raise NotImplementedError

    def backward(self, dy: Any, need_dx: bool = True) -> Any:
        raise NotImplementedError

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def to(self, backend: Backend | str) -> "Layer":
        """Move parameters and buffers to ``backend`` (gradients and the cache are dropped)."""
        target = resolve(backend)
        for _, param in self.named_parameters():
            param.data, param.grad = to_backend(param.data, target), None
        for _, owner, name in self.buffer_slots():
            setattr(owner, name, to_backend(getattr(owner, name), target))
        self.cache = None
        return self

    def _accumulate(self, param: Parameter | None, grad: Any) -> None:
        if param is not None and grad is not None and param.requires_grad:
            param.grad = grad if param.grad is None else param.grad + grad

    def _keep_gradients(self, grads: tuple) -> Any:
        """An op's ``(dx, dweight, dbias)``: add dweight and dbias to ``self.weight.grad`` and ``self.bias.grad``
        (a parameter that is None, like a layer without bias, or frozen, keeps nothing); return dx."""
        dx, dweight, dbias = grads
        self._accumulate(getattr(self, "weight", None), dweight)
        self._accumulate(getattr(self, "bias", None), dbias)
        return dx

    @staticmethod
    def _data(param: Parameter | None) -> Any:
        """A parameter's array, or None for an absent one (a layer built without bias)."""
        return None if param is None else param.data

    def fail(self, input_shape: tuple, expected: str) -> ValueError:
        """The error a layer raises for an input it cannot take."""
        return ValueError(f"{self.label()}: expected {expected}, got {tuple(input_shape)}")

    def config(self) -> dict:
        """The constructor arguments, as JSON-able values or layers (a container's), from which a checkpoint
        rebuilds the layer as ``cls(**config)`` (see :mod:`xpcnn.serialization`)."""
        return {}

    def extra_repr(self) -> str:
        return ""

    def label(self) -> str:
        """The short name errors give the layer: its type and sizes (``Conv2D(1->16)``)."""
        return f"{type(self).__name__}({self.extra_repr()})"

    def describe(self) -> str:
        """A one-line description for the repr and ``Sequential.summary``: the label, unless a layer says more
        (geometry, a composed activation)."""
        return self.label()

    def __repr__(self) -> str:
        return self.describe()


class _NotGiven:
    """The default of a size keyword that was not passed; ``help(Conv2D)`` shows it as ``NOT_GIVEN``."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


#: The default of a size keyword (``Conv2D(..., in_channels=...)``) that was not passed.
NOT_GIVEN = _NotGiven()


def _parts(layer: Layer) -> list[tuple[str, Layer]]:
    """The layers a layer holds: its children and a composed activation (``Conv2D(..., activation=...)``)."""
    activation = getattr(layer, "activation", None)
    return list(layer.children()) + ([("activation", activation)] if isinstance(activation, Layer) else [])


def claim(owner_name: str, owner: Layer, parts: list[tuple[str, Layer]]) -> None:
    """Make ``owner`` the container of ``parts`` (``(label, layer)`` pairs), refusing a layer that sits in two
    places of the tree (its cache would hold only the last place's input: wrong gradients) or already
    belongs to another container (building this one would redraw the other's weights). Nothing is changed
    unless every part is accepted."""
    seen: dict[int, str] = {}

    def walk(label: str, layer: Layer) -> None:
        if id(layer) in seen:
            again = f"{type(layer).__name__}()" if not layer.config() else f"{type(layer).__name__}(...)"
            raise ValueError(f"{owner_name}: {label} ({type(layer).__name__}) is the same object as "
                             f"{seen[id(layer)]}; create a new {again} for each place")
        seen[id(layer)] = label
        for name, inner in _parts(layer):
            walk(f"{label}.{name}", inner)

    for label, layer in parts:
        walk(label, layer)
    for label, layer in parts:
        holder = _holder(layer)
        if holder is not None and holder is not owner:
            name = layer.label() if "\n" not in layer.label() else type(layer).__name__   # one line
            raise ValueError(f"{owner_name}: {label} ({name}) already belongs to another model or layer; "
                             "create new layers for this one (copy weights over with load_state_dict)")
    for _, layer in parts:
        layer._owner = weakref.ref(owner)


def _holder(layer: Layer) -> Layer | None:
    """The container that holds ``layer`` now, or None. The owner is kept by a weak reference, which
    ``copy.deepcopy`` shares rather than copies: a copied layer points at the original's container, which
    does not hold the copy, so the copy is free to go into a new model."""
    ref = getattr(layer, "_owner", None)
    holder = ref() if ref is not None else None
    if holder is None or not any(part is layer for _, part in _parts(holder)):
        return None
    return holder


def release(parts: list[tuple[str, Layer]]) -> None:
    """Undo :func:`claim` (a container that failed to build gives its layers back)."""
    for _, layer in parts:
        layer._owner = None


def constructor_sizes(owner: str, names: tuple, positional: tuple, keywords: dict, lazy_count: int,
                      too_many: str, hint: str) -> dict:
    """The sizes of a constructor that may infer its first one (Chainer's rule): exactly ``lazy_count``
    positional arguments and no size keyword are ``names[1:]`` (the first inferred); otherwise positional
    arguments fill ``names`` in order and keywords add to them. Returns ``{name: value}`` of those given."""
    keywords = {name: value for name, value in keywords.items() if value is not NOT_GIVEN}
    if len(positional) == lazy_count and not keywords:
        return dict(zip(names[1:], positional))
    if len(positional) > len(names):
        raise TypeError(f"{owner}: takes at most {len(names)} positional {too_many}, got {len(positional)}")
    given = dict(zip(names, positional))
    for name in keywords:
        if name in given:
            raise TypeError(f"{owner}: got two values for {name} (positional and keyword)")
    given.update(keywords)
    if any(name not in given for name in names[1:lazy_count + 1]):
        raise TypeError(f"{owner}: ambiguous or missing sizes {positional!r} (keywords {sorted(keywords)}); {hint}")
    return given


def walk_shapes(layers: list[Layer], input_shape: tuple, step) -> tuple:
    """The shape after ``shape = step(index, layer, shape)`` for each of ``layers`` in order (a chain's walk:
    inferring sizes, checking shapes, summary rows); a ValueError is named with the layer's index."""
    shape = tuple(int(s) for s in input_shape)
    for index, layer in enumerate(layers):
        try:
            shape = step(index, layer, shape)
        except ValueError as exc:
            raise ValueError(f"layer {index}: {exc}") from None
    return shape


def check_ndim(layer: Layer, input_shape: tuple, ndim: int, layout: str) -> None:
    if len(input_shape) != ndim:
        raise layer.fail(input_shape, f"a {ndim}-D input {layout}")
