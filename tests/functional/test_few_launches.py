"""The few-launch forms of the ops (taken on GPUs and array_api_strict) agree with the loops (NumPy, CPUs),
and the setting that chooses them is checked."""
import numpy as np
import pytest

import xpcnn
from xpcnn import config, functional as F, layers as L
from xpcnn.functional._launch import launch_bound


def _both(fn):
    with config.using(few_launches="off"):
        loops = fn()
    with config.using(few_launches="on"):
        fused = fn()
    return loops, fused


@pytest.mark.parametrize("kwargs", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                    dict(kernel_size=(2, 3), stride=(1, 2))])
def test_max_pooling_forms_agree_and_break_ties_alike(kwargs):
    rng = np.random.default_rng(0)
    x = np.round(rng.standard_normal((2, 3, 7, 8)))          # many ties: the first maximum must win in both
    dy_shape = F.max_pool2d_forward(x, **kwargs)[0].shape
    dy = rng.standard_normal(dy_shape)

    def run():
        y, cache = F.max_pool2d_forward(x, **kwargs)
        return np.asarray(y), np.asarray(F.max_pool2d_backward(dy, cache))

    (y0, dx0), (y1, dx1) = _both(run)
    np.testing.assert_array_equal(y0, y1)
    # overlapping windows sum δ in another order (the CPU fold sums one column shift at a time): a tie sent
    # to another cell would differ by a whole δ, a rounding by 1e-16
    np.testing.assert_allclose(dx0, dx1, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(stride=2, padding=(1, 0)), dict(dilation=2, groups=2),
                                    dict(stride=3, padding=(0, 1, 2, 0))])
def test_conv_input_gradient_as_one_product_agrees_with_the_per_offset_sum(kwargs):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 4, 9, 8)), rng.standard_normal((6, 4 // kwargs.get("groups", 1), 3, 3)), \
        rng.standard_normal(6)

    def run():
        y, cache = F.conv2d_forward(x, w, b, **kwargs)
        dx, dw, db = F.conv2d_backward(np.cos(np.asarray(y)), cache)
        return [np.asarray(a) for a in (y, dx, dw, db)]

    loops, fused = _both(run)
    for a, b_ in zip(loops, fused):
        np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-12)


def test_relu_backward_forms_agree():
    x, dy = np.random.default_rng(2).standard_normal((2, 3, 4, 4)), np.ones((2, 3, 4, 4))
    loops, fused = _both(lambda: np.asarray(F.relu_backward(dy, F.relu_forward(x)[1])))
    np.testing.assert_array_equal(loops, fused)


@pytest.mark.parametrize("training,affine", [(True, True), (True, False), (False, True)])
def test_batch_norm_forms_agree(training, affine):
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal((4, 3, 5, 6)), rng.standard_normal((4, 3, 5, 6))
    weight, bias = (rng.standard_normal(3), rng.standard_normal(3)) if affine else (None, None)
    mean, var = rng.standard_normal(3), rng.random(3) + 0.5

    def run():
        y, cache = F.batch_norm2d_forward(x, weight, bias, mean, var, training=training)
        dx, dweight, dbias = F.batch_norm2d_backward(dy, cache)
        return [np.asarray(a) for a in (y, cache.batch_mean, cache.batch_var, dx, dbias)
                + ((dweight,) if affine else ())]

    loops, fused = _both(run)
    for name, a, b in zip(["y", "batch mean", "batch var", "dx", "dbias", "dweight"], loops, fused):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12, err_msg=name)


def test_auto_chooses_the_loops_on_numpy_and_the_few_launch_forms_on_array_api_strict():
    strict = pytest.importorskip("array_api_strict")
    assert not launch_bound(np.ones(2)) and launch_bound(strict.ones(2))
    with config.using(few_launches="on"):
        assert launch_bound(np.ones(2))
    with pytest.raises(ValueError, match="few_launches must be 'auto', 'on' or 'off', got 'yes'"):
        config.using(few_launches="yes").__enter__()


def test_a_model_trains_the_same_with_either_form():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((16, 1, 8, 8)), rng.integers(0, 3, 16)

    def run():
        model = xpcnn.Sequential([L.Conv2D(1, 4, 3, padding=1), L.ReLU(), L.MaxPool2D(2), L.Conv2D(4, 4, 3),
                                  L.ReLU(), L.Flatten(), L.Dense(16, 3)], seed=0, dtype="float64")
        model.fit(x, y, optimizer=xpcnn.optim.SGD(model.parameters(), lr=0.1), epochs=2, batch_size=4, verbose=0, seed=1)
        return model.state_dict()

    loops, fused = _both(run)
    for key in loops:
        np.testing.assert_allclose(loops[key], fused[key], rtol=1e-10, atol=1e-12, err_msg=key)
