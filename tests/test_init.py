"""xpcnn.init: the initialisers have the documented spread, and the default bias is PyTorch's."""
import numpy as np
import pytest

from xpcnn import layers as L


@pytest.mark.parametrize("name", ["kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal",
                                  "torch_default"])
def test_initialisers_have_the_documented_spread(name):
    layer = L.Dense(400, 300, weight_init=name)._materialize("numpy", np.random.default_rng(0), "float64")
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
    zero = L.Dense(400, 300, weight_init=name, bias_init="zeros")
    zero._materialize("numpy", np.random.default_rng(0), "float64")
    np.testing.assert_array_equal(zero.bias.data, 0.0)
