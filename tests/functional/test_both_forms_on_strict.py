"""Both forms of every op are portable: under few_launches="auto" array_api_strict always takes the
few-launch forms, so here each op's forward and backward runs on array_api_strict with the loops
(few_launches="off") and with the few-launch forms ("on"), and each form is compared with xpcnn.reference
(or, for what the reference does not compute, with the other form)."""
import numpy as np
import pytest

from xpcnn import config, functional as F, reference as R
from xpcnn.backend import to_numpy
from xpcnn.functional._launch import launch_bound
from xpcnn.testing import assert_close, on, tie_free

pytest.importorskip("array_api_strict")
STRICT = "array_api_strict"
FORMS = ("off", "on")


def _forms(run):
    """``run()`` under each form on array_api_strict: {"off": loops' results, "on": few-launch results}."""
    results = {}
    for form in FORMS:
        with config.using(few_launches=form):
            assert launch_bound(on(STRICT, np.ones(1))) == (form == "on")     # the form asked for is the one taken
            results[form] = run()
    return results


def _assert_each_form_is(results, expected, names):
    for form, got in results.items():
        assert len(got) == len(expected) == len(names)
        for name, actual, desired in zip(names, got, expected):
            assert_close(actual, desired, STRICT, name=f"{name} (few_launches={form!r})")


@pytest.mark.parametrize("c_in,c_out,kwargs", [
    (4, 6, dict(padding=1)),                           # few input channels: the channel-major loops
    (8, 6, dict(stride=2, padding=1)),                 # the channels-last loops
    (4, 6, dict(padding=1, groups=2)),
    (4, 6, dict(stride=2, padding=(1, 0), groups=2)),
    (4, 8, dict(stride=2, padding=1, groups=4)),       # depthwise
], ids=["groups1-s1", "groups1-s2", "groups2-s1", "groups2-s2", "depthwise-s2"])
def test_conv2d(c_in, c_out, kwargs):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, c_in, 7, 6))
    w, b = rng.standard_normal((c_out, c_in // kwargs.get("groups", 1), 3, 3)), rng.standard_normal(c_out)
    y = R.conv2d(x, w, b, **kwargs)
    dy = rng.standard_normal(y.shape)

    def run():
        out, cache = F.conv2d_forward(*on(STRICT, x, w, b), **kwargs)
        return (out,) + tuple(F.conv2d_backward(on(STRICT, dy), cache))

    _assert_each_form_is(_forms(run), (y,) + tuple(R.conv2d_backward(dy, x, w, **kwargs)), ["y", "dx", "dw", "db"])


@pytest.mark.parametrize("kwargs", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                    dict(kernel_size=(2, 3), stride=(1, 2))],
                         ids=["tiling-2x2", "overlapping-3x3-s2-p1", "2x3-s1x2"])
def test_max_pool2d(kwargs):
    x = tie_free((2, 3, 8, 8), seed=1)
    y = R.max_pool2d(x, **kwargs)
    dy = np.random.default_rng(1).standard_normal(y.shape)

    def run():
        out, cache = F.max_pool2d_forward(on(STRICT, x), **kwargs)
        return out, F.max_pool2d_backward(on(STRICT, dy), cache)

    _assert_each_form_is(_forms(run), (y, R.max_pool2d_backward(dy, x, **kwargs)), ["y", "dx"])


@pytest.mark.parametrize("kwargs", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)],
                         ids=["tiling-2x2", "overlapping-3x3-s2-p1", "without-padding-counted"])
def test_avg_pool2d(kwargs):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 8, 8))
    y = R.avg_pool2d(x, **kwargs)
    dy = rng.standard_normal(y.shape)

    def run():
        out, cache = F.avg_pool2d_forward(on(STRICT, x), **kwargs)
        return out, F.avg_pool2d_backward(on(STRICT, dy), cache)

    _assert_each_form_is(_forms(run), (y, R.avg_pool2d_backward(dy, x, **kwargs)), ["y", "dx"])


@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_batch_norm2d(training):
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal((4, 3, 5, 6)) * 2 + 1, rng.standard_normal((4, 3, 5, 6))
    weight, bias, mean, var = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3), rng.random(3) + 0.5

    def run():
        out, cache = F.batch_norm2d_forward(*on(STRICT, x, weight, bias, mean, var), training=training)
        return (out,) + tuple(F.batch_norm2d_backward(on(STRICT, dy), cache)), cache

    results = _forms(run)
    expected = (R.batch_norm2d(x, weight, bias, mean, var, training=training),) + tuple(
        R.batch_norm2d_backward(dy, x, weight, mean, var, training=training))
    _assert_each_form_is({form: got for form, (got, _) in results.items()}, expected, ["y", "dx", "dweight", "dbias"])
    if training:                                     # the batch statistics the running averages are fed
        (_, loops), (_, fused) = results["off"], results["on"]
        assert_close(loops.batch_mean, x.mean(axis=(0, 2, 3)), STRICT, name="batch mean (loops)")
        assert_close(fused.batch_mean, x.mean(axis=(0, 2, 3)), STRICT, name="batch mean (few launches)")
        assert_close(fused.batch_var, to_numpy(loops.batch_var), STRICT, name="batch var")


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax"])
def test_activations(name):
    rng = np.random.default_rng(4)
    x, dy = rng.standard_normal((3, 7)), rng.standard_normal((3, 7))
    forward, backward = getattr(F, f"{name}_forward"), getattr(F, f"{name}_backward")

    def run():
        out, cache = forward(on(STRICT, x))
        return out, backward(on(STRICT, dy), cache)

    expected = (getattr(R, name)(x), getattr(R, f"{name}_backward")(dy, x))
    _assert_each_form_is(_forms(run), expected, ["y", "dx"])


def test_linear():
    rng = np.random.default_rng(5)
    x, w, b, dy = rng.standard_normal((4, 5)), rng.standard_normal((3, 5)), rng.standard_normal(3), \
        rng.standard_normal((4, 3))

    def run():
        out, cache = F.linear_forward(*on(STRICT, x, w, b))
        return (out,) + tuple(F.linear_backward(on(STRICT, dy), cache))

    _assert_each_form_is(_forms(run), (R.linear(x, w, b),) + tuple(R.linear_backward(dy, x, w)),
                         ["y", "dx", "dw", "db"])


@pytest.mark.parametrize("mask_dtype", [bool, np.float64])
def test_dropout(mask_dtype):
    rng = np.random.default_rng(6)
    x, dy, keep = rng.standard_normal((4, 6)), rng.standard_normal((4, 6)), rng.random((4, 6)) > 0.3

    def run():
        out, cache = F.dropout_forward(on(STRICT, x), on(STRICT, keep.astype(mask_dtype)), 0.3)
        return out, F.dropout_backward(on(STRICT, dy), cache)

    _assert_each_form_is(_forms(run), (x * keep / 0.7, dy * keep / 0.7), ["y", "dx"])


@pytest.mark.parametrize("targets", ["indices", "probabilities"])
def test_softmax_cross_entropy(targets):
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((4, 5))
    labels = rng.integers(0, 5, 4) if targets == "indices" else rng.dirichlet(np.ones(5), 4)

    def run():
        return F.softmax_cross_entropy(on(STRICT, logits), on(STRICT, labels))

    _assert_each_form_is(_forms(run), R.softmax_cross_entropy(logits, labels), ["loss", "dlogits"])


def test_mse_loss():
    rng = np.random.default_rng(8)
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    _assert_each_form_is(_forms(lambda: F.mse_loss(*on(STRICT, pred, target))), R.mse_loss(pred, target),
                         ["loss", "dpred"])
