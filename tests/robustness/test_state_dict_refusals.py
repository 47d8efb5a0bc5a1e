"""load_state_dict refuses, in one line and before changing anything, what would not load as weights."""
import numpy as np
import pytest

import xpcnn
from xpcnn import layers as L


def _model():
    return xpcnn.Sequential([L.Conv2D(1, 2, 3), L.BatchNorm2D(2), L.ReLU(), L.Flatten(), L.Dense(8, 3)], seed=0,
                            input_shape=(1, 4, 4))


def _bfloat16(shape):
    torch = pytest.importorskip("torch")
    return torch.zeros(shape, dtype=torch.bfloat16)


@pytest.mark.parametrize("key,make,pattern", [
    ("0.weight", _bfloat16, r"'0.weight': cannot be read as a NumPy array \(Tensor of dtype torch.bfloat16: .*\); "
                            r"convert it first, e.g. tensor.float\(\)$"),
    ("0.weight", lambda shape: None, r"'0.weight': expected an array, got NoneType$"),
    ("0.weight", lambda shape: "abc", r"'0.weight': expected an array, got str$"),
    ("4.bias", lambda shape: np.full(shape, 1e300), r"'4.bias': holds values beyond float32's range \(up to 1e\+300\), "
                                                    r"which would become infinity$"),
    ("1.running_var", lambda shape: -np.ones(shape), r"'1.running_var': a variance must be >= 0, got -1$"),
])
def test_a_value_that_cannot_be_weights_is_refused_in_one_line_and_nothing_changes(key, make, pattern):
    model = _model()
    before = model.state_dict()
    state = dict(before)
    state[key] = make(before[key].shape)
    with pytest.raises(ValueError, match=r"^load_state_dict: the state does not fit this model: " + pattern):
        model.load_state_dict(state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_a_state_that_is_not_a_dict_is_refused_in_one_line():
    model = _model()
    with pytest.raises(TypeError, match=r"^load_state_dict: expected a dict of arrays keyed as state_dict\(\) keys "
                                        r"them, got list$"):
        model.load_state_dict(list(model.state_dict().items()))
