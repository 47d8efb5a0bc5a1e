"""Every op refuses bad input with an error naming the op, the argument, what was expected and what came."""
import numpy as np
import pytest

from xpcnn import functional as F
from xpcnn.testing import on


def _x(backend, shape=(2, 3, 6, 6), dtype="float64"):
    return on(backend, np.ones(shape), dtype=dtype)


@pytest.mark.parametrize("call,error,pattern", [
    (lambda b: F.conv2d_forward(_x(b, (3, 6, 6)), _x(b, (4, 3, 3, 3))), ValueError,
     r"conv2d: x must be 4-D \(N, C, H, W\), got shape \(3, 6, 6\)"),
    (lambda b: F.conv2d_forward(_x(b, (2, 1, 6, 6)), _x(b, (4, 3, 3, 3))), ValueError,
     r"conv2d: expected input with 3 channels .* got shape \(2, 1, 6, 6\)"),
    (lambda b: F.conv2d_forward(_x(b, (2, 3, 2, 2)), _x(b, (4, 3, 3, 3))), ValueError,
     r"conv2d: kernel 3x3 .* larger than the padded input 2x2"),
    (lambda b: F.conv2d_forward(_x(b), _x(b, (4, 3, 3, 3)), stride=0), ValueError, r"conv2d: stride must be >= 1, got 0"),
    (lambda b: F.conv2d_forward(_x(b), _x(b, (4, 3, 3, 3)), padding=-1), ValueError, r"conv2d: padding must be >= 0"),
    (lambda b: F.conv2d_forward(_x(b), _x(b, (4, 3, 3, 3)), padding="full"), ValueError, r"'valid' or 'same'"),
    (lambda b: F.conv2d_forward(_x(b), _x(b, (4, 3, 3, 3)), stride=2, padding="same"), ValueError, r"needs stride 1"),
    (lambda b: F.conv2d_forward(_x(b, (2, 4, 6, 6)), _x(b, (3, 2, 3, 3)), groups=2), ValueError,
     r"groups=2 must divide in_channels=4 and out_channels=3"),
    (lambda b: F.conv2d_forward(_x(b), _x(b, (4, 3, 3, 3)), _x(b, (3,))), ValueError, r"bias must have shape \(4,\)"),
    (lambda b: F.conv2d_forward(on(b, np.ones((2, 3, 6, 6), dtype=np.int64)), _x(b, (4, 3, 3, 3))), TypeError,
     r"conv2d: x must have dtype float32 or float64, got .*int64"),
    (lambda b: F.conv2d_forward(on(b, np.ones((2, 3, 6, 6), dtype=bool)), _x(b, (4, 3, 3, 3))), TypeError,
     r"conv2d: x must have dtype float32 or float64, got .*bool"),
    (lambda b: F.conv2d_forward(_x(b, dtype="float32"), _x(b, (4, 3, 3, 3))), TypeError,
     r"conv2d: weight has dtype .*float64 but the input has dtype .*float32"),
    (lambda b: F.max_pool2d_forward(_x(b), 0), ValueError, r"max_pool2d: kernel_size must be >= 1, got 0"),
    (lambda b: F.max_pool2d_forward(_x(b), 7), ValueError, r"max_pool2d: kernel 7x7 .* larger than the padded input 6x6"),
    (lambda b: F.avg_pool2d_forward(_x(b), 2, 2, 2), ValueError, r"avg_pool2d: padding must be at most half"),
    (lambda b: F.avg_pool2d_forward(_x(b, (6, 6)), 2), ValueError, r"avg_pool2d: x must be 4-D"),
    (lambda b: F.linear_forward(_x(b, (2, 5)), _x(b, (3, 4))), ValueError,
     r"linear: expected input \(N, 4\) for weight \(3, 4\), got \(2, 5\)"),
    (lambda b: F.relu_forward(on(b, np.ones(3, dtype=np.int32))), TypeError, r"relu: x must have dtype float32 or float64"),
    (lambda b: F.softmax_forward(_x(b, (2, 3)), axis=2), ValueError, r"softmax: axis 2 is out of range"),
    (lambda b: F.softmax_cross_entropy(_x(b, (2, 3)), on(b, np.array([0, 3])), check_labels=True), ValueError,
     r"softmax_cross_entropy: labels must lie in \[0, 3\), got values from 0 to 3"),
    (lambda b: F.softmax_cross_entropy(_x(b, (2, 3)), on(b, np.array([0, 1, 2]))), ValueError,
     r"integer labels must have shape \(2,\), got \(3,\)"),
    (lambda b: F.softmax_cross_entropy(_x(b, (2, 3)), _x(b, (2, 3)), check_labels=True), ValueError,
     r"must sum to 1, off by up to 2"),
    (lambda b: F.mse_loss(_x(b, (2, 3)), _x(b, (3, 2))), ValueError, r"mse_loss: target must have the shape of pred"),
])
def test_bad_input_is_refused_clearly(backend, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(backend)


def test_float16_and_complex_are_refused_with_the_accepted_dtypes():
    for dtype in (np.float16, np.complex128):
        with pytest.raises(TypeError, match=r"conv2d: x must have dtype float32 or float64, got (float16|complex128)"):
            F.conv2d_forward(np.ones((1, 1, 3, 3), dtype=dtype), np.ones((1, 1, 2, 2)))


def test_mixing_backends_is_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"conv2d: all arrays must come from one backend, got a mix of .*numpy.*torch"):
        F.conv2d_forward(np.ones((1, 1, 3, 3)), torch.ones((1, 1, 2, 2), dtype=torch.float64))


def test_backward_refuses_a_gradient_of_the_wrong_shape(backend):
    y, cache = F.conv2d_forward(_x(backend), _x(backend, (4, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"conv2d_backward: dy must have shape \(2, 4, 4, 4\), got \(2, 4, 4, 5\)"):
        F.conv2d_backward(_x(backend, (2, 4, 4, 5)), cache)
    y, cache = F.max_pool2d_forward(_x(backend), 2)
    with pytest.raises(ValueError, match=r"max_pool2d_backward: dy must have shape"):
        F.max_pool2d_backward(_x(backend), cache)


def _bn(backend, dtype="float64", **kwargs):
    c = on(backend, np.zeros(3), dtype=dtype)
    args = dict(x=_x(backend, dtype="float64"), weight=c, bias=c, running_mean=c, running_var=c + 1, training=True)
    args.update(kwargs)
    return F.batch_norm2d_forward(args.pop("x"), args.pop("weight"), args.pop("bias"), args.pop("running_mean"),
                                  args.pop("running_var"), **args)


@pytest.mark.parametrize("call,error,pattern", [
    (lambda b: F.relu_backward(on(b, np.ones((2, 3), dtype=np.int64)), F.relu_forward(_x(b, (2, 3)))[1]), TypeError,
     r"relu_backward: dy must have the forward pass's dtype .*float64, got .*int64"),
    (lambda b: F.linear_backward(_x(b, (2, 3), dtype="float32"), F.linear_forward(_x(b, (2, 4)), _x(b, (3, 4)))[1]),
     TypeError, r"linear_backward: dy must have the forward pass's dtype .*float64, got .*float32"),
    (lambda b: F.max_pool2d_backward(_x(b, (2, 3, 3, 3), dtype="float32"), F.max_pool2d_forward(_x(b), 2)[1]),
     TypeError, r"max_pool2d_backward: dy must have the forward pass's dtype .*float64, got .*float32"),
    (lambda b: F.avg_pool2d_backward(on(b, np.ones((2, 3, 3, 3), dtype=np.int32)), F.avg_pool2d_forward(_x(b), 2)[1]),
     TypeError, r"avg_pool2d_backward: dy must have the forward pass's dtype .*float64, got .*int32"),
    (lambda b: F.conv2d_backward(_x(b, (2, 4, 4, 4), dtype="float32"), F.conv2d_forward(_x(b), _x(b, (4, 3, 3, 3)))[1]),
     TypeError, r"conv2d_backward: dy must have the forward pass's dtype .*float64, got .*float32"),
    (lambda b: F.batch_norm2d_backward(_x(b, dtype="float32"), _bn(b)[1]), TypeError,
     r"batch_norm2d_backward: dy must have the forward pass's dtype .*float64, got .*float32"),
    (lambda b: _bn(b, "float32"), TypeError, r"batch_norm2d: weight has dtype .*float32 but the input has dtype .*float64"),
    (lambda b: _bn(b, running_mean=None, training=False), ValueError,
     r"batch_norm2d: evaluation \(training=False\) uses running_mean and running_var, got None"),
    (lambda b: _bn(b, training="no"), TypeError, r"batch_norm2d: training must be True or False, got 'no'"),
    (lambda b: F.conv2d_forward(_x(b), _x(b, (4, 3, 3, 3)), training="no"), TypeError,
     r"conv2d: training must be True or False, got 'no'"),
    (lambda b: F.softmax_forward(_x(b, (2, 3)), axis=1.5), TypeError, r"softmax: axis must be an int, got 1.5"),
    (lambda b: F.log_softmax_forward(_x(b, (2, 3)), axis="1"), TypeError, r"log_softmax: axis must be an int, got '1'"),
    (lambda b: F.leaky_relu_forward(_x(b, (2, 3)), "a"), TypeError, r"leaky_relu: negative_slope must be a number, got 'a'"),
    (lambda b: F.leaky_relu_forward(_x(b, (2, 3)), float("nan")), ValueError,
     r"leaky_relu: negative_slope must be finite, got nan"),
    (lambda b: F.avg_pool2d_forward(_x(b), 2, count_include_pad="no"), TypeError,
     r"avg_pool2d: count_include_pad must be True or False, got 'no'"),
])
def test_bad_arguments_of_dtype_mode_axis_and_slope_are_refused_clearly(backend, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(backend)


def test_numpy_integers_are_sizes_and_geometry_as_python_ints_are(backend):
    y, cache = F.max_pool2d_forward(_x(backend), np.int64(2), stride=np.int32(2), padding=np.int64(1))
    assert tuple(y.shape) == (2, 3, 4, 4)
    y, _ = F.conv2d_forward(_x(backend), _x(backend, (4, 3, 3, 3)), stride=np.int64(2), padding=(np.int8(1), 1))
    assert tuple(y.shape) == (2, 4, 3, 3)
    y, _ = F.softmax_forward(_x(backend, (2, 3)), axis=np.int64(0))
    assert tuple(y.shape) == (2, 3)
    with pytest.raises(TypeError, match=r"max_pool2d: kernel_size must be an int or a pair of ints, got True"):
        F.max_pool2d_forward(_x(backend), True)
