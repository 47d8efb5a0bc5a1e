import json

import numpy as np
import pytest

import xpcnn
from xpcnn import layers as L, optim, serialization
from xpcnn.checkpoint import CheckpointError
from xpcnn.testing import assert_close
from xpcnn.zoo import lenet


def _nested_model(**kwargs):
    block = xpcnn.Sequential([L.Conv2D(4, 3, padding=1), L.BatchNorm2D(4), L.ReLU()])
    return xpcnn.Sequential([L.Conv2D(4, 3, padding=1), L.Residual(block), L.Flatten(), L.Dense(3)],
                            seed=0, input_shape=(1, 6, 6), **kwargs)


def test_a_spec_is_json_that_rebuilds_the_same_architecture_and_weights_through_the_module():
    model = _nested_model(dropout_rng="host")
    spec = json.loads(json.dumps(serialization.model_spec(model)))
    assert spec == model.spec()
    assert spec["dtype"] == "float32" and spec["dropout_rng"] == "host" and spec["input_shape"] == [1, 6, 6]
    residual = spec["layers"][1]
    assert residual["type"] == "Residual" and residual["config"]["shortcut"] is None
    inner = residual["config"]["block"]["config"]["layers"]
    assert [entry["type"] for entry in inner] == ["Conv2D", "BatchNorm2D", "ReLU"]
    again = serialization.model_from_spec(spec)
    assert isinstance(again[1].block, xpcnn.Sequential) and again.noise.host and again.spec() == spec
    serialization.load_state(again, model.state_dict())
    x = np.random.default_rng(1).standard_normal((2, 1, 6, 6)).astype("float32")
    np.testing.assert_array_equal(again.predict(x), model.predict(x))
    assert xpcnn.Sequential.from_spec(spec).spec() == spec                  # the class method is the same path


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_save_and_load_round_trip_through_the_module(tmp_path, suffix):
    model = lenet(image_size=12, width=4, dropout=0.0, seed=0)
    path = serialization.save(model, tmp_path / f"m{suffix}")
    again = serialization.load(path)
    assert again.spec() == model.spec() and xpcnn.load is serialization.load
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key], value)


def test_a_layer_entry_names_the_place_of_a_type_that_cannot_be_rebuilt():
    class Custom(L.Layer):
        pass

    model = xpcnn.Sequential([L.Flatten(), L.Residual(xpcnn.Sequential([L.ReLU(), Custom()]))])
    with pytest.raises(CheckpointError, match=r"save: layer 1\.block\.1 Custom\(\) is not a built-in or registered"):
        serialization.model_spec(model)
    with pytest.raises(ValueError, match="unknown layer type 'Custom'"):
        serialization.layer_from_entry({"type": "Custom", "config": {}})


def test_a_spec_may_name_sync_batch_norm_and_it_is_rebuilt_as_such():
    entry = {"type": "SyncBatchNorm2D", "config": {"num_features": 3, "eps": 1e-5, "momentum": 0.1, "affine": True}}
    layer = serialization.layer_from_entry(entry)
    assert type(layer).__name__ == "SyncBatchNorm2D" and serialization.layer_entry(layer) == entry


def test_load_state_dict_lists_every_mismatch_and_changes_nothing():
    model = lenet(image_size=12, width=4, dropout=0.0, seed=0)
    before = model.state_dict()
    bad = dict(before)
    del bad["0.bias"]
    bad["0.weight"] = np.zeros((4, 1, 2, 2), dtype=np.float32)
    bad["9.weight"] = np.zeros((1, 2))
    bad["3.weight"] = bad.pop("3.bias").astype(np.int32)
    with pytest.raises(ValueError) as info:
        model.load_state_dict(bad)
    message = str(info.value)
    for fragment in ("'0.weight': expected shape (4, 1, 3, 3), got (4, 1, 2, 2)", "unexpected key '9.weight'",
                     "missing key '0.bias'", "missing key '3.bias'", "'3.weight'"):
        assert fragment in message
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_nested_models_save_and_load_on_every_backend(backend, tmp_path, nested_model):
    model = nested_model("numpy")
    model.fit(np.random.default_rng(0).standard_normal((8, 2, 6, 6)), np.arange(8) % 10,
              optimizer=optim.Adam(model.parameters()), batch_size=4, verbose=0, seed=0)
    path = model.save(tmp_path / "nested.npz")
    loaded = xpcnn.load(path, backend=backend)
    assert isinstance(loaded[1], xpcnn.Sequential) and isinstance(loaded[3], L.Residual)
    assert loaded[0].activation is not None and isinstance(loaded[6], L.BatchNorm1D)
    x = np.random.default_rng(1).standard_normal((3, 2, 6, 6))
    model.eval(), loaded.eval()
    assert_close(loaded(x), model(x), backend)


def test_a_registered_custom_layer_saves_and_loads(tmp_path):
    """The documented recipe: forward, backward, parameters, config(), register."""
    from xpcnn.layers import Layer, register

    @register
    class Scale(Layer):
        """y = a * x with one trainable scalar per channel."""
        param_names = ("a",)

        def __init__(self, channels):
            super().__init__()
            self.channels = channels

        def init_parameters(self, rng):
            return {"a": np.ones(self.channels)}

        def forward(self, x):
            self.cache = x
            return x * self.a.data[None, :]

        def backward(self, dy, need_dx=True):
            self._accumulate(self.a, (dy * self.cache).sum(axis=0))
            return dy * self.a.data[None, :] if need_dx else None

        def config(self):
            return {"channels": self.channels}

    model = xpcnn.Sequential([L.Dense(3, 2), Scale(2)], seed=0)
    model[1].a.data = np.array([2.0, -1.0], dtype=np.float32)
    loaded = xpcnn.load(model.save(tmp_path / "custom.npz"))
    assert isinstance(loaded[1], Scale) and loaded.state_dict()["1.a"].tolist() == [2.0, -1.0]
