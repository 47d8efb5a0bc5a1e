"""Models that leave xpcnn: ONNX graphs checked by ONNX Runtime, safetensors weights moving both ways with PyTorch."""
import json
import sys

import numpy as np
import pytest

import xpcnn
from xpcnn import optim
from xpcnn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D,
                          Layer, LeakyReLU, MaxPool2D, ReLU, Residual, Sigmoid, Softmax, Tanh)
from xpcnn.distributed import SyncBatchNorm2D
from xpcnn.zoo import MODELS


def _trained(model, shape, steps=3, seed=0):
    """A few SGD steps in training mode, so batch-norm statistics and weights are not the defaults (a model
    without parameters runs its batches forward in training mode)."""
    rng = np.random.default_rng(seed)
    if not model.parameters():
        for _ in range(steps):
            model(rng.standard_normal((8,) + shape))
        return model
    x = rng.standard_normal((8 * steps,) + shape).astype(np.float32)
    y = rng.integers(0, model.output_shape((1,) + shape)[-1], 8 * steps)
    model.fit(x, y, optimizer=optim.SGD(model.parameters(), lr=0.05, momentum=0.9), batch_size=8, verbose=0)
    return model


# one model per layer type (and per option that changes the graph); (name, builder, input shape)
LAYER_CASES = [
    ("conv-bias-relu", lambda: [Conv2D(4, 3, activation="relu"), Flatten(), Dense(3)], (2, 6, 6)),
    ("conv-same-stride-dilation-groups", lambda: [Conv2D(4, 3, padding="same", dilation=2, groups=2, bias=False),
                                                  Conv2D(4, 2, stride=2, padding=(0, 1)), Flatten()], (2, 7, 7)),
    ("conv-asymmetric-same-even-kernel", lambda: [Conv2D(3, 4, padding="same"), Flatten()], (1, 5, 5)),
    ("maxpool-padding", lambda: [MaxPool2D(3, stride=2, padding=1), Flatten()], (2, 7, 7)),
    ("avgpool-count-include-pad", lambda: [AvgPool2D(3, stride=2, padding=1), Flatten()], (2, 7, 7)),
    ("avgpool-exclude-pad", lambda: [AvgPool2D(3, stride=1, padding=1, count_include_pad=False), Flatten()],
     (2, 5, 5)),
    ("global-avgpool", lambda: [Conv2D(3, 1), GlobalAvgPool2D()], (2, 5, 4)),
    ("batchnorm2d", lambda: [BatchNorm2D(), Flatten()], (3, 4, 4)),
    ("batchnorm2d-no-affine", lambda: [BatchNorm2D(affine=False), Flatten()], (3, 4, 4)),
    ("batchnorm1d", lambda: [Flatten(), Dense(6), BatchNorm1D(), Dense(3)], (1, 3, 3)),
    ("syncbatchnorm2d", lambda: [SyncBatchNorm2D(3), Flatten()], (3, 4, 4)),
    ("dropout", lambda: [Flatten(), Dropout(0.5), Dense(3)], (1, 3, 3)),
    ("activations", lambda: [Flatten(), Dense(5, activation="tanh"), LeakyReLU(0.2), Dense(5), Sigmoid(),
                             Dense(4, activation="leaky_relu"), Tanh(), ReLU(), Dense(3, bias=False), Softmax()],
     (1, 3, 3)),
    ("dense-activation-softmax", lambda: [Flatten(), Dense(3, activation="softmax")], (1, 2, 2)),
    ("nested-residual", lambda: [Conv2D(4, 3, padding=1),
                                 Residual(xpcnn.Sequential([Conv2D(4, 3, padding=1), BatchNorm2D(), ReLU()])),
                                 Residual(xpcnn.Sequential([Conv2D(6, 3, stride=2, padding=1)]),
                                          xpcnn.Sequential([Conv2D(6, 1, stride=2), BatchNorm2D()])),
                                 xpcnn.Sequential([GlobalAvgPool2D(), Dense(3)])], (2, 6, 6)),
]


def _runtime_outputs(path, x):
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"] and session.get_inputs()[0].shape[0] == "batch"
    return session.run(None, {"input": x})[0]


def _check_round_trip(model, shape, tmp_path):
    from xpcnn.export import to_onnx
    before = {key: np.array(value) for key, value in model.state_dict().items()}
    training = model.training
    path = to_onnx(model, tmp_path / "model.onnx", input_shape=shape)
    assert model.training == training                            # the mode is the model's own
    for key, value in model.state_dict().items():                # weights and statistics untouched
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    rng = np.random.default_rng(7)
    for batch in (1, 7):
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
        np.testing.assert_allclose(_runtime_outputs(path, x), model.predict(x), rtol=1e-5, atol=1e-5,
                                   err_msg=f"batch {batch}")


@pytest.mark.parametrize("name,layers,shape", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_every_layer_type_runs_in_onnx_runtime_as_in_xpcnn(name, layers, shape, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = xpcnn.Sequential(layers(), seed=1, input_shape=shape)
    if name == "syncbatchnorm2d":        # trained as its single-process twin (training it here would start MPI)
        twin = _trained(xpcnn.Sequential([BatchNorm2D(3), Flatten()], seed=1, input_shape=shape), shape)
        model.load_state_dict(twin.state_dict())
    else:
        model = _trained(model, shape)
    _check_round_trip(model, shape, tmp_path)


def test_the_layer_cases_cover_every_built_in_layer_type():
    from xpcnn.export import EMITTERS
    from xpcnn.layers import LAYER_TYPES
    covered = set()

    def visit(layer):
        covered.add(type(layer))
        for _, child in layer.children():
            visit(child)
        if getattr(layer, "activation", None) is not None:
            covered.add(type(layer.activation))

    for _, layers, _ in LAYER_CASES:
        for layer in layers():
            visit(layer)
    assert set(LAYER_TYPES.values()) <= covered <= set(EMITTERS) | {xpcnn.Sequential}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_zoo_model_runs_in_onnx_runtime_as_in_xpcnn(name, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    shape = (3, 32, 32) if name.startswith("resnet") or name == "vgg_small" else (1, 28, 28)
    model = MODELS[name](seed=0, **({} if shape[0] == 1 else {"in_channels": 3}))
    _check_round_trip(_trained(model, shape, steps=2), shape, tmp_path)


def test_export_from_every_backend_gives_the_same_graph(backend, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from xpcnn.export import to_onnx
    shape = (2, 6, 6)
    reference = _trained(xpcnn.Sequential(LAYER_CASES[-1][1](), seed=3, input_shape=shape), shape)
    model = xpcnn.load(reference.save(tmp_path / "m.npz"), backend=backend)
    x = np.random.default_rng(0).standard_normal((5,) + shape).astype(np.float32)
    here, there = to_onnx(reference, tmp_path / "numpy.onnx"), to_onnx(model, tmp_path / "other.onnx")
    np.testing.assert_array_equal(_runtime_outputs(there, x), _runtime_outputs(here, x))
    np.testing.assert_allclose(_runtime_outputs(there, x), model.predict(x), rtol=1e-5, atol=1e-5)


class _Scale(Layer):
    """A user's layer: no ONNX mapping."""

    def forward(self, x):
        return 2 * x

    def backward(self, dy, need_dx=True):
        return 2 * dy


def test_a_layer_without_a_mapping_is_named_and_nothing_is_written(tmp_path):
    pytest.importorskip("onnx")
    from xpcnn.export import to_onnx
    model = xpcnn.Sequential([Conv2D(2, 3), xpcnn.Sequential([ReLU(), _Scale()]), Flatten()], seed=0,
                             input_shape=(1, 5, 5))
    with pytest.raises(ValueError, match=r"to_onnx: layer 1\.1 \(_Scale\(\)\) has no ONNX mapping"):
        to_onnx(model, tmp_path / "out" / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_the_advice_for_a_layer_without_a_mapping_works_for_that_layer(tmp_path):
    """model.save refuses an unregistered layer too, so the message advises what does save its weights."""
    pytest.importorskip("onnx")
    from xpcnn.export import to_onnx
    model = xpcnn.Sequential([Conv2D(2, 3), _Scale(), Flatten()], seed=0, input_shape=(1, 5, 5))
    with pytest.raises(ValueError) as error:
        to_onnx(model, tmp_path / "model.onnx")
    advice = str(error.value).split("save the weights with ", 1)[1].split(" instead)", 1)[0]
    assert advice == "safetensors.numpy.save_file(model.state_dict(), 'w.safetensors')"
    import safetensors.numpy
    exec(advice.replace("'w.safetensors'", repr(str(tmp_path / "w.safetensors"))),
         {"model": model, "safetensors": safetensors})
    assert sorted(safetensors.numpy.load_file(str(tmp_path / "w.safetensors"))) == sorted(model.state_dict())


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    from xpcnn.export import to_onnx
    explicit = xpcnn.Sequential([Conv2D(1, 2, 3), Flatten()], seed=0)
    with pytest.raises(ValueError, match=r"input shape is not known; pass input_shape=\(C, H, W\)"):
        to_onnx(explicit, tmp_path / "a.onnx")
    with pytest.raises(ValueError, match="opset must be an int in"):
        to_onnx(explicit, tmp_path / "a.onnx", input_shape=(1, 5, 5), opset=9)
    with pytest.raises(ValueError, match=r"expected input with 1 channels"):
        to_onnx(explicit, tmp_path / "a.onnx", input_shape=(3, 5, 5))
    with pytest.raises(RuntimeError, match="to_onnx needs the parameters"):
        to_onnx(xpcnn.Sequential([Conv2D(2, 3)]), tmp_path / "a.onnx", input_shape=(1, 5, 5))
    (tmp_path / "keep.onnx").write_bytes(b"previous")
    import onnx

    def broken(*args, **kwargs):
        raise onnx.checker.ValidationError("simulated")
    monkeypatch.setattr(onnx.checker, "check_model", broken)
    with pytest.raises(onnx.checker.ValidationError):
        to_onnx(explicit, tmp_path / "keep.onnx", input_shape=(1, 5, 5))
    assert (tmp_path / "keep.onnx").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.onnx"]


def test_without_onnx_the_error_says_what_to_install(monkeypatch, tmp_path):
    from xpcnn.export import to_onnx
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r'pip install "xpcnn\[onnx\]"'):
        to_onnx(xpcnn.zoo.mlp(seed=0), tmp_path / "m.onnx", input_shape=(1, 28, 28))


# ---------------------------------------------------------------------------- safetensors
def test_safetensors_round_trip_on_every_backend(backend, tmp_path):
    shape = (2, 6, 6)
    model = _trained(xpcnn.Sequential(LAYER_CASES[-1][1](), seed=3, input_shape=shape), shape)
    path = model.save(tmp_path / "weights.safetensors")
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata()
        assert sorted(handle.keys()) == sorted(model.state_dict())
    assert metadata["format"] == "xpcnn" and metadata["xpcnn_version"] == xpcnn.__version__
    assert json.loads(metadata["architecture"]) == json.loads(json.dumps(model.spec()))
    again = xpcnn.load(path, backend=backend)
    assert again.backend.name == xpcnn.backend.resolve(backend).name and not again.training
    x = np.random.default_rng(0).standard_normal((3,) + shape).astype(np.float32)
    np.testing.assert_allclose(again.predict(x), model.predict(x), rtol=1e-6, atol=1e-6)


def test_pytorch_reads_our_safetensors_and_we_read_pytorchs(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file
    from xpcnn.testing import torch_twin
    shape = (3, 32, 32)
    model = _trained(xpcnn.zoo.resnet8(seed=0), shape, steps=2).eval()
    x = np.random.default_rng(1).standard_normal((4,) + shape).astype(np.float32)
    # ours -> PyTorch: a torch.nn model of the same architecture (other weights) loads the file
    twin = torch_twin(xpcnn.zoo.resnet8(seed=9), torch, "cpu", torch.float32).eval()
    twin.load_state_dict(load_file(str(model.save(tmp_path / "ours.safetensors"))))
    with torch.no_grad():
        np.testing.assert_allclose(twin(torch.from_numpy(x)).numpy(), model.predict(x), rtol=1e-5, atol=1e-5)
    # PyTorch's -> ours: a file written by safetensors.torch from the twin's state dict
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(0.5)
    save_file({k: v.contiguous() for k, v in twin.state_dict().items()}, str(tmp_path / "theirs.safetensors"))
    from safetensors.numpy import load_file as load_numpy
    fresh = xpcnn.zoo.resnet8(seed=5).eval()
    fresh.load_state_dict(load_numpy(str(tmp_path / "theirs.safetensors")))
    with torch.no_grad():
        np.testing.assert_allclose(fresh.predict(x), twin(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(xpcnn.CheckpointError, match="has no xpcnn architecture in its metadata"):
        xpcnn.load(tmp_path / "theirs.safetensors")


def _damaged(tmp_path, kind):
    from safetensors.numpy import load_file, save_file
    model = xpcnn.Sequential([Flatten(), Dense(4, 3)], seed=0)
    path = model.save(tmp_path / "w.safetensors")
    tensors = load_file(str(path))
    raw = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "garbage":
        path.write_bytes(b"\xff" * 64)
    elif kind == "unknown layer":
        spec = {"dtype": "float32", "layers": [{"type": "Frobnicate", "config": {}}]}
        save_file(tensors, str(path), metadata={"format": "xpcnn", "architecture": json.dumps(spec)})
    elif kind == "damaged metadata":
        save_file(tensors, str(path), metadata={"format": "xpcnn", "architecture": "{not json"})
    elif kind == "tensors do not fit":
        tensors["1.weight"] = np.zeros((3, 5), np.float32)
        save_file(tensors, str(path), metadata={"format": "xpcnn", "architecture": json.dumps(model.spec())})
    return path


@pytest.mark.parametrize("kind,message", [
    ("truncated", "not a readable safetensors file (truncated or corrupted?)"),
    ("garbage", "not a readable safetensors file (truncated or corrupted?)"),
    ("unknown layer", "the architecture in the file cannot be rebuilt: unknown layer type 'Frobnicate'"),
    ("damaged metadata", "the architecture in the file's metadata is damaged"),
    ("tensors do not fit", "the tensors do not fit the architecture"),
])
def test_damaged_safetensors_files_are_one_line_checkpoint_errors(kind, message, tmp_path):
    path = _damaged(tmp_path, kind)
    with pytest.raises(xpcnn.CheckpointError) as info:
        xpcnn.load(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_saving_safetensors_refuses_training_state_and_unsavable_layers_writing_nothing(tmp_path):
    model = xpcnn.Sequential([Flatten(), Dense(4, 3)], seed=0)
    with pytest.raises(ValueError, match="a .safetensors file holds the weights only, not optimizer"):
        model.save(tmp_path / "w.safetensors", optimizer=optim.SGD(model.parameters(), lr=0.1))
    custom = xpcnn.Sequential([_Scale(), Flatten()], seed=0)
    with pytest.raises(ValueError, match="not a built-in or registered layer type"):
        custom.save(tmp_path / "sub" / "c.safetensors")
    assert list(tmp_path.iterdir()) == []
