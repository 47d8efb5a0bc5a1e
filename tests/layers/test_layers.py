import numpy as np
import pytest

import xpcnn
from xpcnn import layers as L, to_numpy
from xpcnn.testing import assert_close, on


def test_layers_build_themselves_when_used_alone(backend):
    x = on(backend, np.random.default_rng(0).standard_normal((2, 3, 6, 6)))
    conv = L.Conv2D(3, 4, 3, padding=1)
    y = conv(x)
    assert tuple(y.shape) == (2, 4, 6, 6)
    assert xpcnn.backend.backend_of(conv.weight.data) == backend.name
    dx = conv.backward(y)
    assert tuple(dx.shape) == (2, 3, 6, 6) and conv.weight.grad is not None


def test_gradients_accumulate_until_zero_grad():
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 2)], seed=0, dtype="float64")
    x = np.ones((3, 1, 2, 2))
    model(x)
    model.backward(np.ones((3, 2)))
    once = model.layers[1].weight.grad.copy()
    model(x)
    model.backward(np.ones((3, 2)))
    np.testing.assert_allclose(model.layers[1].weight.grad, 2 * once)
    model.zero_grad()
    assert model.layers[1].weight.grad is None


def test_dropout_scales_in_training_and_is_identity_in_eval():
    model = xpcnn.Sequential([L.Dropout(0.25)], seed=0, dtype="float64")
    x = np.ones((200, 50))
    y = model(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_array_equal(model.backward(np.ones_like(x)), y)
    model.eval()
    np.testing.assert_array_equal(model(x), x)


def test_batchnorm_uses_running_statistics_in_eval(backend):
    layer = L.BatchNorm2D(3, momentum=0.5).build(backend, np.random.default_rng(0), "float64")
    x = np.random.default_rng(1).standard_normal((4, 3, 5, 5)) * 2 + 1
    layer(on(backend, x))
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3), ddof=1)
    assert_close(layer.running_mean, 0.5 * mean, backend)
    assert_close(layer.running_var, 0.5 + 0.5 * var, backend)
    layer.training = False
    y = layer(on(backend, x))
    expected = (x - 0.5 * mean[None, :, None, None]) / np.sqrt(0.5 + 0.5 * var[None, :, None, None] + 1e-5)
    assert_close(y, expected, backend)


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


@pytest.mark.parametrize("name", ["kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal",
                                  "torch_default"])
def test_initialisers_have_the_documented_spread(name):
    layer = L.Dense(400, 300, weight_init=name).build("numpy", np.random.default_rng(0), "float64")
    w = layer.weight.data
    fan_in, fan_out = 400, 300
    expected_std = {"kaiming_uniform": np.sqrt(2 / fan_in), "kaiming_normal": np.sqrt(2 / fan_in),
                    "xavier_uniform": np.sqrt(2 / (fan_in + fan_out)), "xavier_normal": np.sqrt(2 / (fan_in + fan_out)),
                    "torch_default": 1 / np.sqrt(3 * fan_in)}[name]
    assert w.std() == pytest.approx(expected_std, rel=0.02)
    assert abs(w.mean()) < 0.01 * expected_std * 10
    bias = layer.bias.data                        # the default bias_init is PyTorch's: U(-1/sqrt(fan_in), ...)
    assert np.abs(bias).max() <= 1 / np.sqrt(fan_in) and bias.std() == pytest.approx(1 / np.sqrt(3 * fan_in),
                                                                                      rel=0.15)
    zero = L.Dense(400, 300, weight_init=name, bias_init="zeros").build("numpy", np.random.default_rng(0), "float64")
    np.testing.assert_array_equal(zero.bias.data, 0.0)


def test_batchnorm_without_affine_has_no_parameters_and_the_unit_gamma_gradient(backend):
    x = on(backend, np.random.default_rng(2).standard_normal((4, 3, 5, 5)))
    dy = on(backend, np.random.default_rng(3).standard_normal((4, 3, 5, 5)))
    plain = L.BatchNorm2D(3, affine=False).build(backend, None, "float64")
    unit = L.BatchNorm2D(3).build(backend, None, "float64")          # gamma starts at 1, beta at 0
    assert plain.named_parameters() == []
    np.testing.assert_allclose(to_numpy(plain(x)), to_numpy(unit(x)), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(plain.backward(dy)), to_numpy(unit.backward(dy)), rtol=1e-12, atol=1e-14)


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


@pytest.mark.parametrize("make,pattern", [
    (lambda relu: [L.Flatten(), L.Dense(4, 3), relu, L.Dense(3, 3), relu],
     r"^Sequential: layer 4 \(ReLU\) is the same object as layer 2; create a new ReLU\(\) for each place$"),
    (lambda relu: [L.Flatten(), relu, xpcnn.Sequential([L.Dense(4, 4), relu])],
     r"^Sequential: layer 2.1 \(ReLU\) is the same object as layer 1; create a new ReLU\(\) for each place$"),
    (lambda relu: [L.Flatten(), L.Residual(L.Dense(4, 4, activation=relu)), relu],
     r"^Sequential: layer 2 \(ReLU\) is the same object as layer 1.block.activation; create a new ReLU\(\)"),
    (lambda relu: [L.Flatten(), L.Dense(4, 4), L.Residual(relu, shortcut=relu)],
     r"^Residual: shortcut \(ReLU\) is the same object as block; create a new ReLU\(\) for each place$"),
])
def test_a_layer_object_in_two_places_of_one_model_is_refused(make, pattern):
    """Its cache would keep only the last place's input, so the first place's gradients would be wrong."""
    with pytest.raises(ValueError, match=pattern):
        xpcnn.Sequential(make(L.ReLU()), seed=0)


def test_a_layer_of_one_model_is_refused_by_another_and_its_weights_stay():
    dense = L.Dense(4, 3)
    first = xpcnn.Sequential([L.Flatten(), dense], seed=0)
    weight = dense.weight.data.copy()
    with pytest.raises(ValueError, match=r"^Sequential: layer 1 \(Dense\(4->3\)\) already belongs to another model "
                                         r"or layer; create new layers for this one"):
        xpcnn.Sequential([L.Flatten(), dense], seed=1)
    np.testing.assert_array_equal(dense.weight.data, weight)
    assert first.layers[1] is dense
    block = xpcnn.Sequential([L.Dense(3, 3)])
    outer = xpcnn.Sequential([first, L.Residual(block)], seed=0)    # nesting a model or a block is one owner each
    with pytest.raises(ValueError, match=r"^Residual: block \(Sequential\(\)\) already belongs to another model or layer"):
        L.Residual(block)
    relu = L.ReLU()
    conv = L.Conv2D(1, 2, 3, activation=relu)                       # kept: a layer that is gone owns nothing
    with pytest.raises(ValueError, match=r"Conv2D\(1->2\): activation \(ReLU\(\)\) already belongs to another model"):
        L.Conv2D(1, 2, 3, activation=relu)
    twice = L.ReLU()                                                 # a refused model claims nothing
    with pytest.raises(ValueError, match="is the same object as"):
        xpcnn.Sequential([twice, twice])
    xpcnn.Sequential([twice])
    late = L.Dense(3)
    with pytest.raises(ValueError, match="layer 0: Conv2D"):
        xpcnn.Sequential([L.Conv2D(1, 2, 5), late], input_shape=(1, 3, 3))
    xpcnn.Sequential([L.Flatten(), late], input_shape=(1, 3, 3))


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
