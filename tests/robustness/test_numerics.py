"""Numbers stay finite and correct at the extremes; the fast ops equal the reference on random geometries."""
import gc
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import xpcnn
from xpcnn import functional as F, gradcheck, reference as R
from xpcnn.testing import assert_close, on, tie_free


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_and_log_softmax_are_finite_and_correct_for_huge_logits(backend, dtype):
    logits = np.array([[1e4, -1e4, 0.0, 5e3], [-1e4, -1e4, -1e4, -1e4], [1e4, 1e4, -1e4, 0.0]])
    labels = np.array([1, 2, 0])
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        log_p, _ = F.log_softmax_forward(on(backend, logits, dtype=dtype))
        loss, grad = F.softmax_cross_entropy(on(backend, logits, dtype=dtype), on(backend, labels))
    expected_log_p = R.log_softmax(logits)
    assert np.isfinite(xpcnn.to_numpy(log_p)).all() and np.isfinite(xpcnn.to_numpy(grad)).all()
    assert_close(log_p, expected_log_p, backend, dtype, rtol=1e-6, name="log_softmax")
    expected_loss = -np.mean(expected_log_p[np.arange(3), labels])           # (2e4 + log 4 + log 2) / 3
    assert_close(loss, expected_loss, backend, dtype, rtol=1e-6, name="loss")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_is_finite_for_huge_inputs(backend, dtype):
    x = np.array([-1e3, -88.0, -1.0, 0.0, 1.0, 88.0, 1e3])
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        y, cache = F.sigmoid_forward(on(backend, x, dtype=dtype))
        dx = F.sigmoid_backward(on(backend, np.ones(7), dtype=dtype), cache)
    assert_close(y, R.sigmoid(x), backend, dtype, atol=1e-30, name="sigmoid")
    assert_close(dx, R.sigmoid_backward(np.ones(7), x), backend, dtype, atol=1e-30, name="dsigmoid")


@st.composite
def conv_geometry(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 7))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 7))
    n = draw(st.integers(1, 2))
    bias = draw(st.booleans())
    return dict(x=(n, c_in, h, w), w=(c_out, c_in // groups, kh, kw), bias=bias,
                kwargs=dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups))


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(geometry=conv_geometry(), seed=st.integers(0, 2**16))
def test_convolution_equals_the_reference_on_random_geometries(backend, geometry, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(geometry["x"]), rng.standard_normal(geometry["w"])
    b = rng.standard_normal(geometry["w"][0]) if geometry["bias"] else None
    y, cache = F.conv2d_forward(*on(backend, x, w, b), **geometry["kwargs"])
    dy = rng.standard_normal(tuple(y.shape))
    dx, dw, db = F.conv2d_backward(on(backend, dy), cache)
    dx_ref, dw_ref, db_ref = R.conv2d_backward(dy, x, w, **geometry["kwargs"])
    assert_close(y, R.conv2d(x, w, b, **geometry["kwargs"]), backend, name="y")
    assert_close(dx, dx_ref, backend, name="dx")
    assert_close(dw, dw_ref, backend, name="dweight")
    if b is not None:
        assert_close(db, db_ref, backend, name="dbias")
    gradcheck(F.conv2d_forward, F.conv2d_backward, on(backend, x, w, b), forward_kwargs=geometry["kwargs"],
              seed=seed)


@st.composite
def pool_geometry(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h, w = draw(st.integers(max(1, kh - 2 * ph), 7)), draw(st.integers(max(1, kw - 2 * pw), 7))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 2)), h, w), (kh, kw), (sh, sw), (ph, pw), draw(st.booleans())


@SETTINGS
@given(geometry=pool_geometry(), seed=st.integers(0, 2**16))
def test_pooling_equals_the_reference_on_random_geometries(backend, geometry, seed):
    shape, kernel, stride, padding, include_pad = geometry
    x = tie_free(shape, seed)
    dy_shape = R.max_pool2d(x, kernel, stride, padding).shape
    dy = np.random.default_rng(seed).standard_normal(dy_shape)
    y, cache = F.max_pool2d_forward(on(backend, x), kernel, stride, padding)
    assert_close(y, R.max_pool2d(x, kernel, stride, padding), backend, name="max y")
    assert_close(F.max_pool2d_backward(on(backend, dy), cache), R.max_pool2d_backward(dy, x, kernel, stride, padding),
                 backend, name="max dx")
    y, cache = F.avg_pool2d_forward(on(backend, x), kernel, stride, padding, include_pad)
    assert_close(y, R.avg_pool2d(x, kernel, stride, padding, include_pad), backend, name="avg y")
    assert_close(F.avg_pool2d_backward(on(backend, dy), cache),
                 R.avg_pool2d_backward(dy, x, kernel, stride, padding, include_pad), backend, name="avg dx")
    gradcheck(F.max_pool2d_forward, F.max_pool2d_backward, (on(backend, x),),
              forward_kwargs=dict(kernel_size=kernel, stride=stride, padding=padding), eps=1e-7)


def test_two_thousand_steps_stay_finite_and_do_not_grow_memory():
    model = xpcnn.Sequential([xpcnn.layers.Conv2D(1, 4, 3), xpcnn.layers.ReLU(), xpcnn.layers.MaxPool2D(2),
                              xpcnn.layers.Flatten(), xpcnn.layers.Dense(36, 3)], seed=0)
    opt = xpcnn.optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 16)

    def steps(count):
        for _ in range(count):
            logits = model(x)
            loss, d = F.softmax_cross_entropy(logits, y)
            model.zero_grad()
            model.backward(d, need_dx=False)
            opt.step()
        return float(loss)

    first = steps(200)
    gc.collect()
    tracemalloc.start()
    settled = tracemalloc.get_traced_memory()[0]
    last = steps(1800)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - settled
    tracemalloc.stop()
    assert np.isfinite(last) and last < first
    assert all(np.isfinite(xpcnn.to_numpy(p.data)).all() for p in model.parameters())
    assert grown < 256 * 1024, f"memory grew by {grown} bytes over 1,800 steps"
