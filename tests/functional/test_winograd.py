"""Winograd F(2x2, 3x3) and F(4x4, 3x3) convolution: every value and gradient against the plain loops,
numerical gradients and torch autograd, on every backend; the rule that chooses it and the knob."""
import numpy as np
import pytest

import xpcnn
from xpcnn import functional as F, gradcheck, reference as R
from xpcnn.functional import winograd
from xpcnn.functional._launch import launch_bound
from xpcnn.testing import assert_close, on, torch_conv2d_grads

# (N, C_in, H, W), C_out, padding (int or (top, bottom, left, right)), bias
CONFIGS = [
    ((2, 3, 7, 5), 4, 1, True),              # odd sizes: the last tiles are cut
    ((1, 2, 6, 6), 3, 0, True),              # no padding, whole tiles of 2
    ((2, 3, 5, 8), 2, 2, False),             # padding 2 (the input gradient's own is 0), no bias
    ((3, 2, 4, 9), 3, (0, 1, 2, 1), True),   # asymmetric padding
    ((1, 1, 3, 3), 1, 0, True),              # one output pixel
]
IDS = [f"{x}-{o}-p{p}-{'b' if b else 'nob'}" for x, o, p, b in CONFIGS]


def _data(x_shape, c_out, with_bias, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((c_out, x_shape[1], 3, 3))
    b = rng.standard_normal(c_out) if with_bias else None
    return x, w, b


@pytest.fixture(params=[2, 4], ids=["F2x2", "F4x4"])
def tile(request, monkeypatch):
    """Winograd forced on, with each output tile in turn."""
    monkeypatch.setattr(winograd, "TILE", request.param)
    with xpcnn.config.using(winograd="on"):
        yield request.param


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("x_shape,c_out,padding,with_bias", CONFIGS, ids=IDS)
def test_winograd_matches_reference(backend, tile, dtype, x_shape, c_out, padding, with_bias):
    if backend.name == "jax" and (dtype, (x_shape, c_out, padding, with_bias)) not in (
            ("float64", CONFIGS[0]), ("float32", CONFIGS[3])):
        pytest.skip("JAX compiles every shape (seconds each): two cases cover it (odd sizes, asymmetric padding)")
    x, w, b = _data(x_shape, c_out, with_bias)
    y, cache = F.conv2d_forward(*on(backend, x, w, b, dtype=dtype), padding=padding)
    assert isinstance(cache, winograd.WinogradCache) and cache.tile == tile
    dy = np.random.default_rng(1).standard_normal(tuple(y.shape))
    dx, dw, db = F.conv2d_backward(on(backend, dy, dtype=dtype), cache)
    expected = R.conv2d(x, w, b, padding=padding), *R.conv2d_backward(dy, x, w, padding=padding)
    loose = {} if dtype == "float64" else dict(rtol=1e-4, atol=1e-4 if tile == 4 else 1e-5)
    for got, want, name in zip((y, dx, dw), expected, ("y", "dx", "dweight")):
        assert_close(got, want, backend, dtype, name=name, **loose)
    if b is None:
        assert db is None
    else:
        assert_close(db, expected[3], backend, dtype, name="dbias", **loose)


@pytest.mark.parametrize("x_shape,c_out,padding,with_bias", CONFIGS, ids=IDS)
def test_winograd_numerical_gradient(compiles_once, tile, x_shape, c_out, padding, with_bias):
    backend = compiles_once
    x, w, b = _data(x_shape, c_out, with_bias, seed=2)
    report = gradcheck(F.conv2d_forward, F.conv2d_backward, on(backend, x, w, b), forward_kwargs={"padding": padding})
    assert set(report) == ({0, 1, 2} if with_bias else {0, 1})


@pytest.mark.parametrize("x_shape,c_out,padding,with_bias", CONFIGS[:3], ids=IDS[:3])
def test_winograd_matches_torch_autograd(compiles_once, tile, x_shape, c_out, padding, with_bias):
    torch = pytest.importorskip("torch")
    backend = compiles_once
    x, w, b = _data(x_shape, c_out, with_bias, seed=3)
    y, cache = F.conv2d_forward(*on(backend, x, w, b), padding=padding)
    dy = np.random.default_rng(4).standard_normal(tuple(y.shape))
    got = (y, *F.conv2d_backward(on(backend, dy), cache))
    for value, want, name in zip(got, torch_conv2d_grads(torch, x, w, b, dy, padding=padding),
                                 ("y", "dx", "dweight", "dbias")):
        if want is not None:
            assert_close(value, want, backend, name=name)


def _forward_backward(backend, x, w, b, dy, **kwargs):
    y, cache = F.conv2d_forward(*on(backend, x, w, b), padding=1, **kwargs)
    return (y, *F.conv2d_backward(on(backend, dy), cache)), cache


def test_knob_on_and_off_give_the_same_values(backend):
    x, w, b = _data((2, 4, 9, 6), 5, True)
    dy = np.random.default_rng(5).standard_normal((2, 5, 9, 6))
    with xpcnn.config.using(winograd="off"):
        plain, plain_cache = _forward_backward(backend, x, w, b, dy)
    with xpcnn.config.using(winograd="on"):
        fast, fast_cache = _forward_backward(backend, x, w, b, dy)
    assert isinstance(fast_cache, winograd.WinogradCache)
    assert not isinstance(plain_cache, winograd.WinogradCache)
    for got, want, name in zip(fast, plain, ("y", "dx", "dweight", "dbias")):
        assert_close(got, xpcnn.to_numpy(want), backend, name=name)


def test_batch_blocks_evaluation_and_partial_gradients_agree(backend, tile):
    """Blocks of one sample (a tiny block size), evaluation mode (tiles rebuilt in the backward pass),
    and each gradient alone give the whole batch's values."""
    x, w, b = _data((5, 3, 7, 6), 4, True)
    dy = np.random.default_rng(6).standard_normal((5, 4, 7, 6))
    whole, _ = _forward_backward(backend, x, w, b, dy)
    with xpcnn.config.using(conv_block_bytes=64):
        blocked, cache = _forward_backward(backend, x, w, b, dy)
        evaluated, eval_cache = _forward_backward(backend, x, w, b, dy, training=False)
    if not launch_bound(on(backend, x)):
        assert len(cache.blocks) == 5
    assert eval_cache.v is None
    for values in (blocked, evaluated):
        for got, want in zip(values, whole):
            assert_close(got, xpcnn.to_numpy(want), backend)
    y, cache = F.conv2d_forward(*on(backend, x, w, b), padding=1)
    dx_only = F.conv2d_backward(on(backend, dy), cache, need_params=False)
    params_only = F.conv2d_backward(on(backend, dy), cache, need_dx=False)
    assert dx_only[1] is None and dx_only[2] is None and params_only[0] is None
    assert_close(dx_only[0], xpcnn.to_numpy(whole[1]), backend)
    assert_close(params_only[1], xpcnn.to_numpy(whole[2]), backend)
    assert_close(params_only[2], xpcnn.to_numpy(whole[3]), backend)


def test_float32_error_against_float64_is_bounded():
    """The measured error (docs/performance.md): largest |float32 - float64| over the largest |float64|, for
    the output and each gradient: im2col and F(2x2) about 1e-6, F(4x4) about 1e-5 (its 1/6, 1/24 constants)."""
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((4, 32, 12, 12)), rng.standard_normal((32, 32, 3, 3)) / 17
    dy = rng.standard_normal((4, 32, 12, 12))
    exact = R.conv2d(x, w, padding=1), *R.conv2d_backward(dy, x, w, padding=1)[:2]
    bounds = {("off", 2): 2e-6, ("on", 2): 3e-6, ("on", 4): 5e-5}
    errors = {}
    for (mode, m), bound in bounds.items():
        with xpcnn.config.using(winograd=mode):
            saved, winograd.TILE = winograd.TILE, m
            try:
                y, cache = F.conv2d_forward(x.astype(np.float32), w.astype(np.float32), padding=1)
                dx, dw, _ = F.conv2d_backward(dy.astype(np.float32), cache)
            finally:
                winograd.TILE = saved
        errors[mode, m] = max(float(np.abs(got - want).max() / np.abs(want).max())
                              for got, want in zip((y, dx, dw), exact))
        assert errors[mode, m] < bound, (mode, m, errors[mode, m])
    assert errors["on", 4] > errors["on", 2]      # the bound is about F(4x4)'s constants, not noise


@pytest.mark.parametrize("channels,size,kwargs,expected", [
    (64, 16, {}, True),
    (8, 16, {}, False),                      # few channels: im2col
    (64, 16, {"groups": 2}, False),          # grouped
    (64, 16, {"stride": 2}, False),
    (64, 16, {"dilation": 2}, False),
    (64, 16, {"padding": 3}, False),         # the input gradient would need cropping, not padding
    (64, 8, {}, False),                      # small images: im2col below 128 channels
    (128, 8, {}, True),
])
def test_the_automatic_rule(channels, size, kwargs, expected, monkeypatch):
    kwargs = {"padding": 1, **kwargs}
    x = np.zeros((2, channels, size, size), np.float32)
    w = np.zeros((channels, channels // kwargs.get("groups", 1), 3, 3), np.float32)
    monkeypatch.setattr(xpcnn.cores, "_threads_in_force", [1])     # the rule is measured with one BLAS thread
    _, cache = F.conv2d_forward(x, w, **kwargs)
    assert isinstance(cache, winograd.WinogradCache) == expected
    if expected:                             # float64, the checking dtype, keeps im2col
        assert not isinstance(F.conv2d_forward(x.astype(np.float64), w.astype(np.float64), **kwargs)[1],
                              winograd.WinogradCache)
    monkeypatch.setattr(xpcnn.cores, "_threads_in_force", [2])     # with two, im2col's threaded product wins
    assert not isinstance(F.conv2d_forward(x, w, **kwargs)[1], winograd.WinogradCache)


def test_launch_bound_libraries_keep_their_forms_unless_forced():
    xp = pytest.importorskip("array_api_strict")
    x, w = xp.zeros((2, 64, 16, 16), dtype=xp.float32), xp.zeros((64, 64, 3, 3), dtype=xp.float32)
    assert not isinstance(F.conv2d_forward(x, w, padding=1)[1], winograd.WinogradCache)
    with xpcnn.config.using(winograd="on"):
        assert isinstance(F.conv2d_forward(x, w, padding=1)[1], winograd.WinogradCache)
    with xpcnn.config.using(few_launches="off"):
        assert isinstance(F.conv2d_forward(x, w, padding=1)[1], winograd.WinogradCache) == \
            (xpcnn.cores.threads_in_force() == 1)


def test_knob_values_and_environment(monkeypatch):
    with pytest.raises(ValueError, match="winograd must be 'auto', 'on' or 'off', got 'yes'"):
        xpcnn.config.using(winograd="yes").__enter__()
    monkeypatch.setenv("XPCNN_WINOGRAD", "Off")
    assert xpcnn.config._from_environment().winograd == "off"
    monkeypatch.setenv("XPCNN_WINOGRAD", "maybe")
    with pytest.raises(ValueError, match=r"\$XPCNN_WINOGRAD must be auto, on or off, got 'maybe'"):
        xpcnn.config._from_environment()


def test_a_model_trains_through_winograd(backend):
    """A Conv2D layer in a model gives the im2col form's output and gradients through the Winograd form."""
    x = np.random.default_rng(8).standard_normal((3, 16, 6, 6))
    results = []
    for mode in ("off", "on"):
        model = xpcnn.Sequential([xpcnn.layers.Conv2D(16, 16, 3, padding=1)], backend=backend, seed=0,
                                 input_shape=(16, 6, 6))
        with xpcnn.config.using(winograd=mode):
            y = model(on(backend, x, dtype="float32"))
            dx = model.backward(y)
        assert isinstance(model.layers[0].cache, winograd.WinogradCache) == (mode == "on")
        results.append((xpcnn.to_numpy(y), xpcnn.to_numpy(dx), xpcnn.to_numpy(model.layers[0].weight.grad)))
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
