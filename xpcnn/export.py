"""Models that leave xpcnn: ONNX graphs for ONNX Runtime (servers, browsers, phones).

``to_onnx(model, "model.onnx")`` writes the model as it computes in evaluation mode: every built-in layer
maps onto ONNX operators (Conv, Gemm, MaxPool, AveragePool, GlobalAveragePool, Flatten,
BatchNormalization with the running statistics, Relu, LeakyRelu, Sigmoid, Tanh, Softmax; Dropout is
the identity; a nested Sequential is its layers in order; a Residual is its two branches and an Add).
The batch axis is dynamic. Weights are read from any backend and stored as float32, the precision
ONNX Runtime's convolutions run in. The model itself is only read: its mode, weights and statistics do
not change. The graph is checked with ``onnx.checker.check_model(full_check=True)`` before the file is
written, atomically. The ``onnx`` package builds the graph: ``pip install "xpcnn[onnx]"``.

Weights alone, for PyTorch, JAX and the Hugging Face hub, go to ``.safetensors`` with ``model.save``.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np

from ._files import atomic_write_bytes
from .backend import to_numpy
from .layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, LeakyReLU,
                     MaxPool2D, ReLU, Residual, Sigmoid, Softmax, Tanh)
from .distributed import SyncBatchNorm2D
from .model import Sequential, batch_shape as _batch_shape

#: The opsets the exporter's operators are written for (Softmax's single-axis form needs 13).
OPSETS = range(13, 22)


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError('to_onnx: the onnx package builds the graph; install it with pip install "xpcnn[onnx]"') \
            from None
    return onnx


class _Graph:
    """The nodes and initializers of the graph being built; names are unique and say where they came from."""

    def __init__(self, onnx):
        self.onnx, self.helper = onnx, onnx.helper
        self.nodes: list = []
        self.initializers: list = []
        self.names: set[str] = set()

    def name(self, hint: str) -> str:
        base, number = hint.replace("/", "."), 0
        candidate = base
        while candidate in self.names:
            number += 1
            candidate = f"{base}_{number}"
        self.names.add(candidate)
        return candidate

    def constant(self, hint: str, value: Any) -> str:
        name = self.name(hint)
        array = np.ascontiguousarray(np.asarray(to_numpy(value), dtype=np.float32))
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, **attributes) -> str:
        output = self.name(hint)
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attributes))
        return output


def _conv(graph: _Graph, layer: Conv2D, x: str, where: str) -> str:
    inputs = [x, graph.constant(f"{where}.weight", layer.weight.data)]
    if layer.bias is not None:
        inputs.append(graph.constant(f"{where}.bias", layer.bias.data))
    top, bottom, left, right = layer.pads
    y = graph.node("Conv", inputs, f"{where}.conv", kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                   pads=[top, left, bottom, right], dilations=list(layer.dilation), group=layer.groups)
    return _activation(graph, layer.activation, y, where)


def _dense(graph: _Graph, layer: Dense, x: str, where: str) -> str:
    inputs = [x, graph.constant(f"{where}.weight", layer.weight.data)]
    if layer.bias is not None:
        inputs.append(graph.constant(f"{where}.bias", layer.bias.data))
    y = graph.node("Gemm", inputs, f"{where}.gemm", transB=1)
    return _activation(graph, layer.activation, y, where)


def _activation(graph: _Graph, activation, x: str, where: str) -> str:
    return x if activation is None else _emit(graph, activation, x, f"{where}.activation")


def _pool(graph: _Graph, layer, x: str, where: str) -> str:
    ph, pw = layer.padding
    attributes = {"kernel_shape": list(layer.kernel_size), "strides": list(layer.stride), "pads": [ph, pw, ph, pw]}
    if isinstance(layer, AvgPool2D):
        return graph.node("AveragePool", [x], f"{where}.avgpool", count_include_pad=int(layer.count_include_pad),
                          **attributes)
    return graph.node("MaxPool", [x], f"{where}.maxpool", **attributes)


def _batchnorm(graph: _Graph, layer: BatchNorm2D, x: str, where: str) -> str:
    channels = int(layer.running_mean.shape[0])
    scale = np.ones(channels) if layer.weight is None else layer.weight.data
    shift = np.zeros(channels) if layer.bias is None else layer.bias.data
    inputs = [x, graph.constant(f"{where}.weight", scale), graph.constant(f"{where}.bias", shift),
              graph.constant(f"{where}.running_mean", layer.running_mean),
              graph.constant(f"{where}.running_var", layer.running_var)]
    return graph.node("BatchNormalization", inputs, f"{where}.batchnorm", epsilon=float(layer.eps))


def _sequential(graph: _Graph, layer: Sequential, x: str, where: str) -> str:
    for index, inner in enumerate(layer.layers):
        x = _emit(graph, inner, x, f"{where}.{index}" if where else str(index))
    return x


def _residual(graph: _Graph, layer: Residual, x: str, where: str) -> str:
    branch = _emit(graph, layer.block, x, f"{where}.block")
    shortcut = x if layer.shortcut is None else _emit(graph, layer.shortcut, x, f"{where}.shortcut")
    return graph.node("Add", [branch, shortcut], f"{where}.add")


#: layer type -> function(graph, layer, input name, where) -> output name; exact types only, since a
#: subclass may compute something else
EMITTERS = {
    Sequential: _sequential,
    Residual: _residual,
    Conv2D: _conv,
    Dense: _dense,
    MaxPool2D: _pool,
    AvgPool2D: _pool,
    GlobalAvgPool2D: lambda g, layer, x, where: g.node("Flatten", [g.node("GlobalAveragePool", [x], f"{where}.gap")],
                                                       f"{where}.flatten", axis=1),
    Flatten: lambda g, layer, x, where: g.node("Flatten", [x], f"{where}.flatten", axis=1),
    BatchNorm2D: _batchnorm,
    BatchNorm1D: _batchnorm,
    SyncBatchNorm2D: _batchnorm,     # in evaluation: the running statistics, as BatchNorm2D
    Dropout: lambda g, layer, x, where: g.node("Identity", [x], f"{where}.dropout"),
    ReLU: lambda g, layer, x, where: g.node("Relu", [x], f"{where}.relu"),
    LeakyReLU: lambda g, layer, x, where: g.node("LeakyRelu", [x], f"{where}.leaky_relu",
                                                 alpha=float(layer.negative_slope)),
    Sigmoid: lambda g, layer, x, where: g.node("Sigmoid", [x], f"{where}.sigmoid"),
    Tanh: lambda g, layer, x, where: g.node("Tanh", [x], f"{where}.tanh"),
    Softmax: lambda g, layer, x, where: g.node("Softmax", [x], f"{where}.softmax", axis=int(layer.dim)),
}


def _emit(graph: _Graph, layer, x: str, where: str) -> str:
    """The nodes of ``layer`` (every type was checked by :func:`unmapped` before the graph is built)."""
    return EMITTERS[type(layer)](graph, layer, x, where)


def unmapped(model: Sequential) -> list[str]:
    """The layers of ``model`` (state-dict style indices, ``"3.block.0"``) that have no ONNX mapping."""
    found = []

    def visit(layer, where):
        if type(layer) not in EMITTERS:
            found.append(f"{where} ({layer!r})")
            return
        for prefix, child in layer.children():
            visit(child, f"{where}.{prefix}" if where else prefix)
        activation = getattr(layer, "activation", None)
        if activation is not None and type(activation) not in EMITTERS:
            found.append(f"{where}.activation ({activation!r})")

    visit(model, "")
    return found


def to_onnx(model: Sequential, path: str | os.PathLike, input_shape: tuple | None = None, opset: int = 17):
    """Write ``model`` as an ONNX graph to ``path`` (see the module's description); returns the path.

    ``input_shape`` is one sample's shape without the batch axis, ``(C, H, W)``; by default the model's own
    (``Sequential(..., input_shape=...)``, ``build`` or its first batch). The graph's input is
    ``"input"`` (batch, *input_shape) float32 and its output ``"output"``.
    """
    onnx = _onnx()
    if not isinstance(model, Sequential):
        raise TypeError(f"to_onnx: expected an xpcnn Sequential, got {type(model).__name__}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise ValueError(f"to_onnx: opset must be an int in [{OPSETS.start}, {OPSETS.stop - 1}], got {opset!r}")
    model._require_built("to_onnx")
    shape = input_shape if input_shape is not None else model.input_shape
    if shape is None:
        raise ValueError("to_onnx: the model's input shape is not known; pass input_shape=(C, H, W) (one sample, "
                         "without the batch axis)")
    batch_shape = _batch_shape(shape)
    output_shape = model.output_shape(batch_shape)
    missing = unmapped(model)
    if missing:
        try:
            model.spec()                                   # a registered layer type: model.save keeps it whole
            weights = "model.save('w.safetensors')"
        except ValueError:
            weights = "safetensors.numpy.save_file(model.state_dict(), 'w.safetensors')"
        raise ValueError(f"to_onnx: layer {missing[0]} has no ONNX mapping; only xpcnn's built-in layers export "
                         f"(save the weights with {weights} instead)")
    graph = _Graph(onnx)
    graph.names.add("input")
    last = _sequential(graph, model, "input", "")
    graph.nodes.append(onnx.helper.make_node("Identity", [last], ["output"], name="output"))
    float32 = onnx.TensorProto.FLOAT
    proto = onnx.helper.make_model(
        onnx.helper.make_graph(
            graph.nodes, "xpcnn",
            [onnx.helper.make_tensor_value_info("input", float32, ["batch", *batch_shape[1:]])],
            [onnx.helper.make_tensor_value_info("output", float32, ["batch", *output_shape[1:]])],
            graph.initializers),
        opset_imports=[onnx.helper.make_opsetid("", opset)], producer_name="xpcnn")
    proto.ir_version = min(proto.ir_version, 8 if opset <= 17 else 9)   # readable by older runtimes
    onnx.checker.check_model(proto, full_check=True)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, proto.SerializeToString())
