import numpy as np
import pytest

from xpcnn import GradcheckError, functional as F, gradcheck
from xpcnn.testing import on


def _wrong_backward(dy, cache):
    dx, dw, db = F.linear_backward(dy, cache)
    return dx * 1.01, dw, db


@pytest.mark.parametrize("mode", ["direction", "elementwise"])
def test_gradcheck_catches_a_wrong_gradient(backend, mode):
    rng = np.random.default_rng(0)
    inputs = on(backend, rng.standard_normal((3, 4)), rng.standard_normal((2, 4)), rng.standard_normal(2))
    gradcheck(F.linear_forward, F.linear_backward, inputs, mode=mode)
    with pytest.raises(GradcheckError, match="gradient of input 0 disagrees"):
        gradcheck(F.linear_forward, _wrong_backward, inputs, mode=mode)


def test_gradcheck_needs_float64():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(F.relu_forward, F.relu_backward, (np.ones(3, dtype=np.float32),))


def test_gradcheck_reports_each_checked_input():
    rng = np.random.default_rng(1)
    report = gradcheck(F.conv2d_forward, F.conv2d_backward,
                       (rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3)), None))
    assert sorted(report) == [0, 1]
    assert all(error < 1e-6 for error in report.values())


def test_elementwise_mode_refuses_large_inputs():
    with pytest.raises(ValueError, match="use mode='direction'"):
        gradcheck(F.relu_forward, F.relu_backward, (np.ones((100, 100)),), mode="elementwise")
