import numpy as np
import pytest

import xpcnn
from xpcnn import layers as L, to_numpy
from xpcnn.testing import assert_close, on


def test_global_avg_pool_and_flatten_shapes(backend):
    x = on(backend, np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5))
    pool = L.GlobalAvgPool2D()
    y = pool(x)
    assert_close(y, to_numpy(x).mean(axis=(2, 3)), backend)
    dx = pool.backward(on(backend, np.ones((2, 3))))
    assert_close(dx, np.full((2, 3, 4, 5), 1 / 20), backend)
    flat = L.Flatten()
    assert tuple(flat(x).shape) == (2, 60)
    assert tuple(flat.backward(flat(x)).shape) == (2, 3, 4, 5)


@pytest.mark.parametrize("make,pattern", [
    (lambda: L.Conv2D(3, 4, 0), r"Conv2D\(3->4\): kernel_size must be >= 1, got 0"),
    (lambda: L.Conv2D(3, 4, 3, stride=0), r"Conv2D\(3->4\): stride must be >= 1, got 0"),
    (lambda: L.Conv2D(3, 4, 3, padding=-1), r"Conv2D\(3->4\): padding must be >= 0, got -1"),
    (lambda: L.Conv2D(3, 4, 3, groups=2), r"Conv2D\(3->4\): groups=2 must divide in_channels=3"),
    (lambda: L.Conv2D(3, 4, 3, weight_init="bogus"), r"Conv2D\(3->4\): unknown weight_init 'bogus'"),
    (lambda: L.Dense(0, 4), r"Dense\(0->4\): in_features must be a positive int, got 0"),
    (lambda: L.Dropout(1.0), r"Dropout: p must be a probability in \[0, 1\), got 1.0"),
    (lambda: L.Dropout(-0.1), r"Dropout: p must be a probability in \[0, 1\), got -0.1"),
    (lambda: L.MaxPool2D(2, padding=2), r"MaxPool2D\(2\): padding must be at most half the kernel size"),
    (lambda: L.BatchNorm2D(4, momentum=2), r"BatchNorm2D\(4\): momentum must be in \[0, 1\]"),
    (lambda: xpcnn.Sequential([L.ReLU(), "relu"]), r"Sequential: item 1 is a str, not an xpcnn layer"),
    (lambda: xpcnn.Sequential([L.ReLU()], dtype="float16"), r"Sequential: dtype must be one of"),
])
def test_bad_layer_arguments_are_refused(make, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        make()


@pytest.mark.parametrize("make,error,pattern", [
    (lambda: L.AvgPool2D(2, count_include_pad="no"), TypeError,
     r"AvgPool2D\(2\): count_include_pad must be True or False, got 'no'"),
    (lambda: L.BatchNorm2D(4, momentum="0.1"), TypeError, r"BatchNorm2D\(4\): momentum must be a number, got '0.1'"),
    (lambda: L.BatchNorm2D(4, eps=float("nan")), ValueError, r"BatchNorm2D\(4\): eps must be finite, got nan"),
    (lambda: L.BatchNorm1D(4, affine="yes"), TypeError, r"BatchNorm1D\(4\): affine must be True or False, got 'yes'"),
    (lambda: L.LeakyReLU("a"), TypeError, r"LeakyReLU: negative_slope must be a number, got 'a'"),
    (lambda: L.LeakyReLU(float("nan")), ValueError, r"LeakyReLU: negative_slope must be finite, got nan"),
    (lambda: L.Softmax(dim=1.5), TypeError, r"Softmax: dim must be an int, got 1.5"),
    (lambda: L.MaxPool2D(True), TypeError, r"MaxPool2D\(True\): kernel_size must be an int or a pair of ints"),
])
def test_bad_flags_and_numbers_are_refused_in_one_line(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_numpy_integers_are_accepted_where_python_ints_are(tmp_path):
    i = np.int64
    model = xpcnn.Sequential([L.Conv2D(i(4), i(3), stride=i(2), padding=i(1), dilation=np.int32(1), groups=i(1)),
                              L.BatchNorm2D(i(4)), L.MaxPool2D(i(2), stride=(i(1), 1), padding=np.int8(1)),
                              L.AvgPool2D((i(2), i(2))), L.Flatten(), L.Dense(i(10)), L.Dense(i(10), i(3))],
                             seed=0, input_shape=np.array([1, 6, 6]))
    assert model.input_shape == (1, 6, 6) and all(type(s) is int for s in model.input_shape)
    assert model(np.zeros((2, 1, 6, 6), np.float32)).shape == (2, 3)
    config = model.spec()
    assert type(config["layers"][0]["config"]["padding"]) is int
    model.save(tmp_path / "m.npz")                        # the spec is JSON: no NumPy integer left in it
    assert xpcnn.load(tmp_path / "m.npz").spec() == config
    for shape in ((1, 6, 6), [1, 6, 6], np.array([1, 6, 6], dtype=np.int32)):
        assert xpcnn.Sequential([L.Flatten(), L.Dense(3)], input_shape=shape).input_shape == (1, 6, 6)
    for bad in ("abc", np.array(5), np.array([1.5, 6, 6]), (1, 0, 6), (True, 6, 6)):
        with pytest.raises(ValueError, match=r"Sequential: input_shape must be positive ints without the batch axis"):
            xpcnn.Sequential([L.Flatten(), L.Dense(3)], input_shape=bad)


def test_models_that_are_moved_rebuilt_or_made_by_the_zoo_keep_working(tmp_path):
    from xpcnn import zoo
    model = zoo.resnet8()
    model.to("numpy")
    again = xpcnn.Sequential.from_spec(model.spec())
    assert again.spec() == model.spec()
    model.save(tmp_path / "m.safetensors")
    assert xpcnn.load(tmp_path / "m.safetensors").spec() == model.spec()


def test_reprs_show_geometry_and_activation_and_help_shows_no_object_address():
    import pydoc
    model = xpcnn.Sequential([L.Conv2D(1, 16, 3, stride=2, padding=1, activation="relu"), L.MaxPool2D(2),
                              L.AvgPool2D(3, 1, 1, count_include_pad=False), L.Flatten(), L.Dense(16, 10, activation="tanh")])
    text = repr(model)
    for part in ("Conv2D(1->16, k=3x3, s=2, p=1) + ReLU()", "MaxPool2D(2)",
                 "AvgPool2D(3, stride=(1, 1), padding=(1, 1), count_include_pad=False)", "Dense(16->10) + Tanh()"):
        assert part in text, (part, text)
    with pytest.raises(ValueError, match=r"^layer 0: Conv2D\(1->16\): expected input with 1 channels"):
        model(np.zeros((1, 2, 8, 8)))                               # errors keep the short name
    signature = pydoc.render_doc(L.Conv2D, renderer=pydoc.plaintext)
    assert "object at" not in signature and "in_channels=NOT_GIVEN" in signature


def test_a_refused_backend_claims_no_layer_and_copies_of_layers_or_models_are_free():
    import copy

    layers = [L.Dense(4, 3), L.ReLU()]
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        xpcnn.Sequential(layers, backend="nope")
    model = xpcnn.Sequential(layers, seed=0)                  # the failed attempt kept nothing
    twin = copy.deepcopy(model)                               # a whole model copies (its backend is shared)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(twin(x), model(x))
    assert twin.backend is model.backend
    xpcnn.Sequential([copy.deepcopy(model.layers[0]), L.ReLU()])   # a copied layer belongs to no model yet
    with pytest.raises(ValueError, match=r"layer 0 \(Dense\(4->3\)\) already belongs to another model"):
        xpcnn.Sequential([model.layers[0]])
