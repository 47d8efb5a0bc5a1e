"""Models as data and files: a model's architecture spec, the arrays a state dict may load, and the model
files themselves (``model.save``, :func:`load`, :func:`load_checkpoint`).

The *spec* of a Sequential is JSON-able data that rebuilds it: ``{"dtype": ..., "dropout_rng": ...,
"input_shape": [...] (when known), "layers": [entry, ...]}``. A layer's *entry* is ``{"type": class name,
"config": layer.config()}``; a constructor argument that is a layer (a Residual's ``block``) or a list of
layers (a nested Sequential's ``layers``) is stored as its entry, so containers need no code of their own.
Every type a spec names is in ``xpcnn.layers.LAYER_TYPES`` (built in, ``register``-ed, ``Sequential``).
:mod:`xpcnn.checkpoint` reads and writes the files as plain data; this module turns them into models.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import checkpoint
from . import distributed  # noqa: F401  registers SyncBatchNorm2D, so specs may name it (mpi4py loads only when used)
from .backend import to_backend, to_numpy
from .layers import LAYER_TYPES, Layer


# ---------------------------------------------------------------------------- specs
def layer_entry(layer: Layer, where: str = "0") -> dict:
    """``{"type": ..., "config": ...}`` of ``layer`` (``where``: its place in the model, for the error a type
    that cannot be rebuilt gets)."""
    cls = type(layer)
    if LAYER_TYPES.get(cls.__name__) is not cls:
        raise checkpoint.CheckpointError(f"save: layer {where} {layer!r} is not a built-in or registered layer "
                                         "type and cannot be saved (see xpcnn.layers.register)")
    return {"type": cls.__name__, "config": {key: _encoded(value, f"{where}.{key}", where)
                                             for key, value in layer.config().items()}}


def _encoded(value: Any, where: str, parent: str) -> Any:
    if isinstance(value, Layer):
        return layer_entry(value, where)
    if isinstance(value, (list, tuple)) and value and all(isinstance(item, Layer) for item in value):
        return [layer_entry(item, f"{parent}.{index}") for index, item in enumerate(value)]   # keys as "2.0"
    return value


def layer_from_entry(entry: dict) -> Layer:
    """The layer an entry describes (the layers its config holds rebuilt first)."""
    if entry["type"] not in LAYER_TYPES:
        raise ValueError(f"unknown layer type {entry['type']!r}")
    return LAYER_TYPES[entry["type"]](**{key: _decoded(value) for key, value in entry["config"].items()})


def _decoded(value: Any) -> Any:
    def is_entry(item):
        return isinstance(item, dict) and set(item) == {"type", "config"}

    if is_entry(value):
        return layer_from_entry(value)
    if isinstance(value, list) and value and all(is_entry(item) for item in value):
        return [layer_from_entry(item) for item in value]
    return value


def model_spec(model) -> dict:
    """The architecture of a Sequential as JSON-able data (see the module's docstring)."""
    shape = {} if model.input_shape is None else {"input_shape": list(model.input_shape)}
    return {"dtype": model.dtype, "dropout_rng": model.dropout_rng, **shape,
            "layers": [layer_entry(layer, str(index)) for index, layer in enumerate(model.layers)]}


def model_from_spec(spec: dict, backend=None):
    """A new Sequential of the architecture ``spec``, on ``backend``, with freshly drawn parameters."""
    shape = spec.get("input_shape")
    return LAYER_TYPES["Sequential"]([layer_from_entry(entry) for entry in spec["layers"]], backend=backend,
                                     dtype=spec["dtype"], dropout_rng=spec.get("dropout_rng", "device"),
                                     input_shape=None if shape is None else tuple(shape))


# ---------------------------------------------------------------------------- state dicts
def load_state(model, state: Mapping) -> None:
    """``model.load_state_dict(state)``: the arrays of ``state`` (any backend) moved into the model's
    parameters and buffers, once every key fits (:func:`fitting_state`); otherwise nothing changes."""
    host = fitting_state(model, state)
    for key, param in model.named_parameters():
        param.data, param.grad = to_backend(host[key], model.backend, dtype=model.dtype), None
    for key, owner, attr in model.buffer_slots():
        float_dtype = model.dtype if host[key].dtype.kind == "f" else None        # integer counters stay integers
        setattr(owner, attr, to_backend(host[key], model.backend, dtype=float_dtype))


def fitting_state(model, state: Mapping) -> dict[str, np.ndarray]:
    """``state`` as host arrays, after checking that every key fits ``model`` (the shapes and dtype kinds of
    its ``state_dict()``, finite values that stay finite in its dtype, no negative ``running_var``); a
    ValueError lists every mismatch (one line for one problem)."""
    if not isinstance(state, Mapping):
        raise TypeError(f"load_state_dict: expected a dict of arrays keyed as state_dict() keys them, got "
                        f"{type(state).__name__}")
    expected = model.state_dict()
    largest = float(np.finfo(model.dtype).max)
    variances = {key for key, _, attr in model.buffer_slots() if attr == "running_var"}
    problems, host = [], {}
    for key, value in state.items():
        array = _host_array(value) if key in expected else None
        if key not in expected:
            problems.append(f"unexpected key {key!r}")
        elif isinstance(array, str):
            problems.append(f"{key!r}: {array}")
        elif array.shape != expected[key].shape:
            problems.append(f"{key!r}: expected shape {expected[key].shape}, got {array.shape}")
        elif expected[key].dtype.kind != array.dtype.kind and not (
                expected[key].dtype.kind in "iu" and array.dtype.kind in "iu"):
            problems.append(f"{key!r}: expected a {expected[key].dtype.kind!r}-kind dtype like "
                            f"{expected[key].dtype}, got {array.dtype}")
        elif array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            problems.append(f"{key!r}: holds NaN or infinity")
        elif array.dtype.kind == "f" and array.size and float(np.max(np.abs(array))) > largest:
            problems.append(f"{key!r}: holds values beyond {model.dtype}'s range (up to "
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
    return host


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


# ---------------------------------------------------------------------------- files
def save(model, path: str | os.PathLike, **kwargs):
    """``model.save``: a checkpoint (architecture, weights, optionally training state; see
    :func:`xpcnn.checkpoint.save`), or, for a path ending in ``.safetensors``, the weights with the
    architecture in the file's metadata (:func:`xpcnn.checkpoint.save_weights`; readable by PyTorch and JAX)."""
    if not str(path).endswith(".safetensors"):
        return checkpoint.save(model, path, **kwargs)
    if kwargs:
        raise ValueError(f"save: a .safetensors file holds the weights only, not {', '.join(sorted(kwargs))}; "
                         "save training state to a .npz checkpoint")
    return checkpoint.save_weights(model, path)


def load(path: str | os.PathLike, backend=None):
    """The model stored in a checkpoint (``.npz``) or a ``.safetensors`` file written by ``model.save``, on
    ``backend`` (default: the current backend), in evaluation mode for a ``.safetensors`` file."""
    if not str(path).endswith(".safetensors"):
        return load_checkpoint(path, backend).model
    spec, tensors = checkpoint.read_weights(path)
    model = _rebuilt(spec, backend, path)
    try:
        model.load_state_dict(tensors)
    except ValueError as exc:
        lines = str(exc).removeprefix("load_state_dict: the state does not fit this model:").splitlines()
        problems = "; ".join(line.strip() for line in lines if line.strip())
        raise checkpoint.CheckpointError(f"{path}: the tensors do not fit the architecture: {problems}") from None
    return model.eval()


def load_checkpoint(path: str | os.PathLike, backend=None) -> checkpoint.Checkpoint:
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


def _rebuilt(spec: dict, backend, path):
    try:
        return model_from_spec(spec, backend)
    except (KeyError, TypeError, ValueError) as exc:
        raise checkpoint.CheckpointError(f"{path}: the architecture in the file cannot be rebuilt: {exc}") from None
