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
