"""Stride-1 convolutions from row shifts of the padded input (functional/_shifted.py), taken when the
columns would be built in blocks: the forward pass and every gradient against the plain loops, numerical
gradients and torch autograd, on every backend, and against the columns they replace."""
import numpy as np
import pytest

from xpcnn import config, functional as F, gradcheck, reference as R
from xpcnn.functional import _shifted, conv as conv_module
from xpcnn.testing import assert_close, on, torch_conv2d_grads

# (N, C_in, H, W), C_out, kernel, padding (int or (top, bottom, left, right))
CONFIGS = [
    ((3, 4, 7, 5), 5, (3, 3), 1),              # odd sizes
    ((2, 3, 6, 6), 2, (3, 3), 0),              # no padding
    ((2, 2, 5, 8), 3, (5, 5), 2),              # a 5x5 kernel
    ((3, 3, 6, 7), 4, (2, 3), (0, 1, 1, 2)),   # a non-square kernel, asymmetric padding
    ((2, 2, 3, 3), 1, (3, 3), 0),              # one output pixel per sample
    ((2, 3, 4, 5), 2, (1, 1), 1),              # 1x1: no offset reaches past a block
]
IDS = [f"{x}-{o}-k{k[0]}x{k[1]}-p{p}" for x, o, k, p in CONFIGS]


@pytest.fixture
def shifted(monkeypatch):
    """Columns never kept and built in blocks of about one sample (so the forward pass and the gradients
    take the shifted rows, in several blocks), channels-last even for these few channels; the gradients'
    calls are counted (their block sizes), and the forward's in ``calls.forward``."""
    calls = Calls()
    monkeypatch.setattr(conv_module, "CHANNEL_MAJOR_BELOW", 0)
    real_gradients, real_forward = _shifted.gradients, _shifted.forward

    def gradients(*args, **kwargs):
        calls.append(args[1].shape[0])
        return real_gradients(*args, **kwargs)

    def forward(xp, x_pad, block, *args):
        calls.forward.append(block.stop - block.start)
        return real_forward(xp, x_pad, block, *args)
    monkeypatch.setattr(_shifted, "gradients", gradients)
    monkeypatch.setattr(_shifted, "forward", forward)
    with config.using(conv_whole_bytes=1, conv_block_bytes=100, few_launches="off"):   # strict too: loops
        yield calls


class Calls(list):
    """The gradients' block sizes, and the forward passes' in ``forward``."""

    def __init__(self):
        super().__init__()
        self.forward = []

    def clear(self):
        super().clear()
        self.forward.clear()


def _data(x_shape, c_out, kernel, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(x_shape), rng.standard_normal((c_out, x_shape[1]) + kernel),
            rng.standard_normal(c_out))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("x_shape,c_out,kernel,padding", CONFIGS, ids=IDS)
def test_shifted_gradients_match_the_reference(backend, shifted, dtype, x_shape, c_out, kernel, padding):
    if backend.name == "jax" and (dtype, (x_shape, c_out, kernel, padding)) not in (
            ("float64", CONFIGS[0]), ("float32", CONFIGS[3])):
        pytest.skip("JAX compiles every shape (seconds each): two cases cover it (odd sizes, asymmetric padding)")
    x, w, b = _data(x_shape, c_out, kernel)
    y, cache = F.conv2d_forward(*on(backend, x, w, b, dtype=dtype), padding=padding)
    assert cache.cols is None
    assert sum(shifted.forward) == x_shape[0] and len(shifted.forward) > 1     # block by block, whole batch
    dy = np.random.default_rng(1).standard_normal(tuple(y.shape))
    dx, dw, db = F.conv2d_backward(on(backend, dy, dtype=dtype), cache)
    assert shifted and sum(shifted) == x_shape[0]             # taken, block by block, over the whole batch
    dx_ref, dw_ref, db_ref = R.conv2d_backward(dy, x, w, padding=padding)
    loose = {} if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    assert_close(y, R.conv2d(x, w, b, padding=padding), backend, dtype, name="y", **loose)
    assert_close(dx, dx_ref, backend, dtype, name="dx", **loose)
    assert_close(dw, dw_ref, backend, dtype, name="dweight", **loose)
    assert_close(db, db_ref, backend, dtype, name="dbias", **loose)
    no_dx, dw_only, _ = F.conv2d_backward(on(backend, dy, dtype=dtype), cache, need_dx=False)
    assert no_dx is None
    assert_close(dw_only, dw_ref, backend, dtype, name="dweight without dx", **loose)
    dx_only, no_dw, no_db = F.conv2d_backward(on(backend, dy, dtype=dtype), cache, need_params=False)
    assert no_dw is None and no_db is None
    assert_close(dx_only, dx_ref, backend, dtype, name="dx without parameters", **loose)


@pytest.mark.parametrize("x_shape,c_out,kernel,padding", CONFIGS, ids=IDS)
def test_shifted_numerical_gradient(compiles_once, shifted, x_shape, c_out, kernel, padding):
    x, w, b = _data(x_shape, c_out, kernel, seed=2)
    report = gradcheck(F.conv2d_forward, F.conv2d_backward, on(compiles_once, x, w, b),
                       forward_kwargs={"padding": padding})
    assert set(report) == {0, 1, 2} and shifted


@pytest.mark.parametrize("x_shape,c_out,kernel,padding", CONFIGS[:3], ids=IDS[:3])
def test_shifted_matches_torch_autograd(compiles_once, shifted, x_shape, c_out, kernel, padding):
    torch = pytest.importorskip("torch")
    x, w, b = _data(x_shape, c_out, kernel, seed=3)
    y, cache = F.conv2d_forward(*on(compiles_once, x, w, b), padding=padding)
    dy = np.random.default_rng(4).standard_normal(tuple(y.shape))
    _, *expected = torch_conv2d_grads(torch, x, w, b, dy, padding=padding)
    for got, want, name in zip(F.conv2d_backward(on(compiles_once, dy), cache), expected, ("dx", "dweight", "dbias")):
        assert_close(got, want, compiles_once, name=name)
    assert shifted


def test_shifted_and_rebuilt_columns_agree_and_the_rule_picks_few_channels(shifted):
    rng = np.random.default_rng(5)
    for c_in, takes in ((conv_module.SHIFTED_BELOW - 1, True), (conv_module.SHIFTED_BELOW, False)):
        x, w = rng.standard_normal((2, c_in, 5, 5)), rng.standard_normal((3, c_in, 3, 3))
        shifted.clear()
        y, cache = F.conv2d_forward(x, w, padding=1)
        dy = rng.standard_normal(tuple(y.shape))
        got = F.conv2d_backward(dy, cache)
        assert bool(shifted) == takes and bool(shifted.forward) == takes
        below = conv_module.SHIFTED_BELOW
        conv_module.SHIFTED_BELOW = 0                                   # the columns, rebuilt
        try:
            rebuilt = F.conv2d_backward(dy, cache)
            y_columns = F.conv2d_forward(x, w, padding=1)[0]
        finally:
            conv_module.SHIFTED_BELOW = below
        np.testing.assert_allclose(y, y_columns, rtol=1e-10, atol=1e-12)
        for a, b in zip(got[:2], rebuilt[:2]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    for kwargs in (dict(stride=2, padding=1), dict(dilation=2, padding=2)):   # stride or dilation: columns
        x, w = rng.standard_normal((2, 4, 7, 7)), rng.standard_normal((3, 4, 3, 3))
        shifted.clear()
        y, cache = F.conv2d_forward(x, w, **kwargs)
        F.conv2d_backward(rng.standard_normal(tuple(y.shape)), cache)
        assert not shifted and not shifted.forward


@pytest.mark.parametrize("x_shape,c_out,kernel,padding", [CONFIGS[0], CONFIGS[2], CONFIGS[3]],
                         ids=[IDS[0], IDS[2], IDS[3]])
def test_shifted_blocks_of_several_samples(backend, shifted, x_shape, c_out, kernel, padding):
    """Blocks of two samples over a batch of five (the last one of one sample), then of two and three: every
    block but the last reads on into the next one's rows, the last stops short of the batch's end."""
    n = 5
    x, w, b = _data((n,) + x_shape[1:], c_out, kernel, seed=9)
    pads = conv_module.conv_padding("t", padding, kernel, (1, 1), (1, 1))
    grid = (x_shape[2] + pads[0] + pads[1]) * (x_shape[3] + pads[2] + pads[3]) * max(x_shape[1], c_out) * 8
    dy = None
    for samples, blocks in ((2, [2, 2, 1]), (3, [3, 2])):
        shifted.clear()
        with config.using(conv_whole_bytes=1, conv_block_bytes=2 * samples * grid, few_launches="off"):
            y, cache = F.conv2d_forward(*on(backend, x, w, b), padding=padding)
            dy = np.random.default_rng(10).standard_normal(tuple(y.shape)) if dy is None else dy
            dx, dw, db = F.conv2d_backward(on(backend, dy), cache)
        assert shifted.forward == blocks and list(shifted) == blocks
        dx_ref, dw_ref, db_ref = R.conv2d_backward(dy, x, w, padding=padding)
        for got, want, name in ((y, R.conv2d(x, w, b, padding=padding), "y"), (dx, dx_ref, "dx"),
                                (dw, dw_ref, "dweight"), (db, db_ref, "dbias")):
            assert_close(got, want, backend, name=name)
