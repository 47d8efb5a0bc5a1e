import numpy as np
import pytest

from xpcnn import config, functional as F, gradcheck, reference as R, to_numpy
from xpcnn.functional import conv as conv_module
from xpcnn.testing import assert_close, on

# (N, C_in, H, W), (C_out, C_in/groups, kH, kW), keyword arguments
CONFIGS = [
    ((2, 3, 7, 7), (4, 3, 3, 3), dict()),
    ((1, 2, 6, 5), (3, 2, 2, 3), dict(padding=1)),                       # batch of 1, non-square kernel, odd size
    ((2, 3, 9, 8), (4, 3, 3, 3), dict(stride=2, padding=1)),
    ((2, 2, 8, 9), (2, 2, 3, 2), dict(stride=(2, 3), padding=(2, 0))),
    ((2, 2, 9, 9), (3, 2, 3, 3), dict(dilation=2, padding=2)),
    ((2, 4, 6, 6), (6, 2, 3, 3), dict(groups=2, padding=1)),
    ((2, 4, 7, 5), (4, 1, 3, 3), dict(groups=4, stride=2)),              # depthwise
    ((2, 3, 6, 7), (5, 3, 1, 1), dict()),                                # 1x1
    ((2, 2, 7, 6), (3, 2, 4, 2), dict(padding="same")),                  # even kernel: asymmetric padding
    ((2, 2, 6, 6), (3, 2, 3, 3), dict(padding="valid", bias=False)),
    ((1, 1, 5, 5), (1, 1, 5, 5), dict()),                                # kernel covers the input
    ((3, 2, 10, 7), (2, 2, 3, 3), dict(stride=3, dilation=(1, 2), padding=(1, 2))),
    ((2, 6, 9, 9), (4, 3, 3, 3), dict(groups=2, stride=2, padding=(1, 2))),   # groups, stride 2, padding
    ((2, 6, 7, 6), (6, 2, 2, 3), dict(groups=3, bias=False)),                 # groups without padding
    ((2, 5, 8, 7), (5, 1, 3, 3), dict(groups=5, stride=2, padding=1)),        # depthwise, stride 2
    ((2, 4, 7, 6), (8, 1, 3, 3), dict(groups=4, padding=1)),                  # depthwise, channel multiplier 2
    ((1, 3, 8, 8), (6, 1, 3, 3), dict(groups=3, dilation=2, padding="same")),  # depthwise, dilated
    ((2, 4, 7, 7), (4, 2, 3, 3), dict(groups=2, dilation=2, padding=(1, 3, 0, 2))),  # groups, dilated, asymmetric
    ((2, 6, 6, 5), (3, 2, 3, 3), dict(groups=3, padding=1)),                   # one output channel per group
    ((2, 4, 5, 5), (4, 2, 1, 1), dict(groups=2, padding=1)),                   # groups, padding past the kernel
]
IDS = [f"{x}-{w}-{kw}" for x, w, kw in CONFIGS]


def _data(x_shape, w_shape, kwargs, seed=0):
    rng = np.random.default_rng(seed)
    kwargs = dict(kwargs)
    with_bias = kwargs.pop("bias", True)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0]) if with_bias else None
    return x, w, b, kwargs


def _reference_padding(kwargs, w_shape):
    padding = kwargs.get("padding", 0)
    if padding == "valid":
        return 0
    if padding == "same":
        th, tw = w_shape[2] - 1, w_shape[3] - 1
        d = kwargs.get("dilation", 1)
        d = (d, d) if isinstance(d, int) else d
        th, tw = th * d[0], tw * d[1]
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    return padding


def _reference(x, w, b, kwargs, dy):
    geometry = dict(stride=kwargs.get("stride", 1), padding=_reference_padding(kwargs, w.shape),
                    dilation=kwargs.get("dilation", 1), groups=kwargs.get("groups", 1))
    y = R.conv2d(x, w, b, **geometry)
    dx, dw, db = R.conv2d_backward(dy, x, w, **geometry)
    return y, dx, dw, db


@pytest.fixture(params=["channels-last", "channel-major"])
def unrolling(request, monkeypatch):
    """Each column layout in turn: conv2d unrolls inputs with few channels (per group) channel-major, others
    channels-last."""
    below = 0 if request.param == "channels-last" else 10**6
    monkeypatch.setattr(conv_module, "CHANNEL_MAJOR_BELOW", below)
    monkeypatch.setattr(conv_module, "GROUPED_CHANNEL_MAJOR_BELOW", below)
    return request.param


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("x_shape,w_shape,kwargs", CONFIGS, ids=IDS)
def test_conv2d_matches_reference(backend, dtype, x_shape, w_shape, kwargs, unrolling):
    x, w, b, kwargs = _data(x_shape, w_shape, kwargs)
    y, cache = F.conv2d_forward(*on(backend, x, w, b, dtype=dtype), **kwargs)
    # the few-launch forms gather their columns from channels-last rows whatever the channels; depthwise
    # convolutions on CPU libraries take the direct form
    assert cache.channel_major == (unrolling == "channel-major" and cache.gather is None and not cache.depthwise)
    assert cache.depthwise == (w_shape[1] == 1 and kwargs.get("groups", 1) > 1 and cache.gather is None)
    dy = np.random.default_rng(1).standard_normal(tuple(y.shape))
    dx, dw, db = F.conv2d_backward(on(backend, dy, dtype=dtype), cache)
    y_ref, dx_ref, dw_ref, db_ref = _reference(x, w, b, kwargs, dy)
    assert_close(y, y_ref, backend, dtype, name="y")
    assert_close(dx, dx_ref, backend, dtype, name="dx")
    assert_close(dw, dw_ref, backend, dtype, name="dweight")
    if b is None:
        assert db is None
    else:
        assert_close(db, db_ref, backend, dtype, name="dbias")


@pytest.mark.parametrize("x_shape,w_shape,kwargs", CONFIGS, ids=IDS)
def test_conv2d_numerical_gradient(backend, x_shape, w_shape, kwargs, unrolling):
    x, w, b, kwargs = _data(x_shape, w_shape, kwargs, seed=2)
    report = gradcheck(F.conv2d_forward, F.conv2d_backward, on(backend, x, w, b), forward_kwargs=kwargs)
    assert set(report) == ({0, 1} if b is None else {0, 1, 2})


@pytest.mark.parametrize("x_shape,w_shape,kwargs", CONFIGS, ids=IDS)
def test_conv2d_matches_torch_autograd(backend, x_shape, w_shape, kwargs):
    torch = pytest.importorskip("torch")
    x, w, b, kwargs = _data(x_shape, w_shape, kwargs, seed=3)
    y, cache = F.conv2d_forward(*on(backend, x, w, b), **kwargs)
    dy = np.random.default_rng(4).standard_normal(tuple(y.shape))
    grads = F.conv2d_backward(on(backend, dy), cache)

    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    padding, tx_padded = kwargs.get("padding", 0), tx
    if isinstance(padding, tuple) and len(padding) == 4:        # (top, bottom, left, right): torch pads pairs only
        tx_padded, padding = torch.nn.functional.pad(tx, (padding[2], padding[3], padding[0], padding[1])), 0
    ty = torch.nn.functional.conv2d(tx_padded, tw, tb, stride=kwargs.get("stride", 1), padding=padding,
                                    dilation=kwargs.get("dilation", 1), groups=kwargs.get("groups", 1))
    ty.backward(torch.tensor(dy))
    assert_close(y, ty.detach().numpy(), backend, name="y")
    for got, leaf, name in zip(grads, (tx, tw, tb), ("dx", "dweight", "dbias")):
        if leaf is not None:
            assert_close(got, leaf.grad.numpy(), backend, name=name)


def test_conv2d_without_input_gradient(backend):
    x, w, b, _ = _data((2, 3, 6, 6), (4, 3, 3, 3), {})
    y, cache = F.conv2d_forward(*on(backend, x, w, b), padding=1)
    dy = on(backend, np.ones(tuple(y.shape)))
    dx, dw, db = F.conv2d_backward(dy, cache, need_dx=False)
    full = F.conv2d_backward(dy, cache)
    assert dx is None
    np.testing.assert_array_equal(to_numpy(dw), to_numpy(full[1]))
    np.testing.assert_array_equal(to_numpy(db), to_numpy(full[2]))


def test_conv2d_leaves_inputs_unchanged_and_takes_views(backend):
    x, w, b, _ = _data((2, 3, 8, 8), (4, 3, 3, 3), {})
    wide = np.random.default_rng(5).standard_normal((2, 6, 8, 16))
    view = wide[:, ::2, :, ::-2]                                        # non-contiguous, negative stride
    xs, ws, bs = on(backend, view, w, b)
    before = [to_numpy(a).copy() for a in (xs, ws, bs)]
    y, cache = F.conv2d_forward(xs, ws, bs, padding=1)
    F.conv2d_backward(on(backend, np.ones(tuple(y.shape))), cache)
    for array, saved in zip((xs, ws, bs), before):
        np.testing.assert_array_equal(to_numpy(array), saved)
    y_ref = R.conv2d(view, w, b, padding=1)
    assert_close(y, y_ref, backend, name="y")


@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("need", [(True, True), (False, True), (True, False)])
def test_depthwise_in_blocks_equals_the_reference(backend, multiplier, need):
    """The direct depthwise form over several batch blocks, with and without each gradient."""
    x, w, b, _ = _data((5, 3, 7, 6), (3 * multiplier, 1, 3, 3), {}, seed=6)
    with config.using(conv_block_bytes=4 * 7 * 6 * 3 * multiplier * 8 * 2):        # two samples a block
        y, cache = F.conv2d_forward(*on(backend, x, w, b), padding=1, groups=3)
        dy = np.random.default_rng(7).standard_normal(tuple(y.shape))
        dx, dw, db = F.conv2d_backward(on(backend, dy), cache, need_dx=need[0], need_params=need[1])
    if cache.gather is None:
        assert cache.depthwise and cache.chunk == 2
    y_ref, dx_ref, dw_ref, db_ref = _reference(x, w, b, dict(padding=1, groups=3), dy)
    assert_close(y, y_ref, backend, name="y")
    for got, want, wanted, name in ((dx, dx_ref, need[0], "dx"), (dw, dw_ref, need[1], "dweight"),
                                    (db, db_ref, need[1], "dbias")):
        if wanted:
            assert_close(got, want, backend, name=name)
        else:
            assert got is None


def test_grouped_columns_are_contiguous_per_group():
    """Channel-major grouped columns come out of one stacking copy, laid out (G, kH*kW*Cg, N*OH*OW)."""
    x = np.ascontiguousarray(np.random.default_rng(8).standard_normal((2, 5, 5, 6))).transpose(0, 3, 1, 2)
    _, cache = F.conv2d_forward(x, np.ones((4, 3, 3, 3)), groups=2, padding=1)
    assert cache.channel_major and cache.cols.shape == (2, 27, 50) and cache.cols.flags.c_contiguous


GROUPED = [c for c in CONFIGS if c[2].get("groups", 1) > 1 and c[1][1] > 1]          # not depthwise


@pytest.mark.parametrize("x_shape,w_shape,kwargs", GROUPED, ids=[IDS[CONFIGS.index(c)] for c in GROUPED])
def test_grouped_input_gradient_by_correlation_equals_the_per_offset_form(x_shape, w_shape, kwargs, monkeypatch):
    """Grouped stride-1 convolutions take δ_prev as a grouped convolution of δ with the flipped kernel; the
    per-offset col2im form (taken for strides and for padding past the kernel's reach) gives the same, with
    the columns kept and rebuilt in blocks."""
    x, w, b, kwargs = _data(x_shape, w_shape, kwargs, seed=5)
    for whole in (1, 2**30):
        with config.using(conv_whole_bytes=whole, conv_block_bytes=100):
            y, cache = F.conv2d_forward(x, w, b, **kwargs)
        dy = np.random.default_rng(6).standard_normal(tuple(y.shape))
        pads = conv_module.conv_padding("t", kwargs.get("padding", 0), w_shape[2:], cache.stride, cache.dilation)
        (dh, dw), (kh, kw) = cache.dilation, w_shape[2:]
        reach = max(pads[:2]) <= dh * (kh - 1) and max(pads[2:]) <= dw * (kw - 1)
        assert conv_module._dx_by_correlation(cache) == (cache.stride == (1, 1) and reach)
        by_correlation = F.conv2d_backward(dy, cache)
        with monkeypatch.context() as patch:
            patch.setattr(conv_module, "_dx_by_correlation", lambda cache: False)
            per_offset = F.conv2d_backward(dy, cache)
        assert (by_correlation[2] is None) == (b is None)
        for got, want in zip(by_correlation[:2 if b is None else 3], per_offset):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        dx_only = F.conv2d_backward(dy, cache, need_params=False)
        assert dx_only[1] is None and dx_only[2] is None
        np.testing.assert_allclose(dx_only[0], per_offset[0], rtol=1e-12, atol=1e-12)
