import numpy as np
import pytest

from xpcnn import config, functional as F, gradcheck, reference as R
from xpcnn.testing import assert_close, on, tie_free

# input shape, kernel_size, stride, padding
CONFIGS = [
    ((2, 3, 8, 8), 2, None, 0),
    ((1, 2, 7, 7), 3, 2, 1),              # overlapping, padded, odd size, batch of 1
    ((2, 2, 7, 9), 3, 1, 1),              # heavy overlap
    ((2, 3, 9, 8), (3, 2), (2, 1), (1, 0)),
    ((2, 1, 5, 5), 5, 1, 0),              # window covers the input
    ((3, 2, 6, 7), (2, 3), (3, 2), (1, 1)),
]
IDS = [f"{s}-k{k}-s{st}-p{p}" for s, k, st, p in CONFIGS]


def _case(shape, seed):
    x = tie_free(shape, seed)
    return x


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape,kernel,stride,padding", CONFIGS, ids=IDS)
def test_max_pool2d_matches_reference(backend, dtype, shape, kernel, stride, padding):
    x = _case(shape, 0)
    y, cache = F.max_pool2d_forward(on(backend, x, dtype=dtype), kernel, stride, padding)
    dy = np.random.default_rng(1).standard_normal(tuple(y.shape))
    dx = F.max_pool2d_backward(on(backend, dy, dtype=dtype), cache)
    assert_close(y, R.max_pool2d(x, kernel, stride, padding), backend, dtype, name="y")
    assert_close(dx, R.max_pool2d_backward(dy, x, kernel, stride, padding), backend, dtype, name="dx")


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape,kernel,stride,padding", CONFIGS, ids=IDS)
def test_avg_pool2d_matches_reference(backend, dtype, shape, kernel, stride, padding, count_include_pad):
    x = np.random.default_rng(2).standard_normal(shape)
    y, cache = F.avg_pool2d_forward(on(backend, x, dtype=dtype), kernel, stride, padding, count_include_pad)
    dy = np.random.default_rng(3).standard_normal(tuple(y.shape))
    dx = F.avg_pool2d_backward(on(backend, dy, dtype=dtype), cache)
    assert_close(y, R.avg_pool2d(x, kernel, stride, padding, count_include_pad), backend, dtype, name="y")
    assert_close(dx, R.avg_pool2d_backward(dy, x, kernel, stride, padding, count_include_pad),
                 backend, dtype, name="dx")


@pytest.mark.parametrize("shape,kernel,stride,padding", CONFIGS, ids=IDS)
def test_pooling_numerical_gradient(backend, shape, kernel, stride, padding):
    x = on(backend, _case(shape, 4))
    gradcheck(F.max_pool2d_forward, F.max_pool2d_backward, (x,),
              forward_kwargs=dict(kernel_size=kernel, stride=stride, padding=padding), eps=1e-7)
    for include in (True, False):
        gradcheck(F.avg_pool2d_forward, F.avg_pool2d_backward, (x,),
                  forward_kwargs=dict(kernel_size=kernel, stride=stride, padding=padding,
                                      count_include_pad=include))


@pytest.mark.parametrize("shape,kernel,stride,padding", CONFIGS, ids=IDS)
def test_pooling_matches_torch_autograd(backend, shape, kernel, stride, padding):
    torch = pytest.importorskip("torch")
    x = _case(shape, 5)
    dy_shape = R.max_pool2d(x, kernel, stride, padding).shape
    dy = np.random.default_rng(6).standard_normal(dy_shape)
    for name, ours, theirs in [
        ("max", (F.max_pool2d_forward, F.max_pool2d_backward), torch.nn.functional.max_pool2d),
        ("avg", (F.avg_pool2d_forward, F.avg_pool2d_backward), torch.nn.functional.avg_pool2d),
    ]:
        y, cache = ours[0](on(backend, x), kernel, stride, padding)
        dx = ours[1](on(backend, dy), cache)
        tx = torch.tensor(x, requires_grad=True)
        ty = theirs(tx, kernel, stride, padding)
        ty.backward(torch.tensor(dy))
        assert_close(y, ty.detach().numpy(), backend, name=f"{name} y")
        assert_close(dx, tx.grad.numpy(), backend, name=f"{name} dx")


@pytest.mark.parametrize("per_block", [1, 2])
@pytest.mark.parametrize("shape,kernel,stride,padding", CONFIGS, ids=IDS)
def test_pooling_backward_in_blocks_of_samples_matches_reference(backend, monkeypatch, per_block, shape, kernel,
                                                                 stride, padding):
    """The CPU fold in blocks of one or two samples (a batch of 5: the last block is shorter) gives the
    reference's dx for max and average pooling, the loop forms forced on every backend."""
    from xpcnn.functional import pool
    x = _case((5,) + shape[1:], 7)
    out_hw = R.max_pool2d(x, kernel, stride, padding).shape[2:]
    monkeypatch.setattr(pool, "FOLD_BLOCK_BYTES", per_block * out_hw[0] * out_hw[1] * shape[1] * 8)
    dy = np.random.default_rng(8).standard_normal((5, shape[1]) + out_hw)
    with config.using(few_launches="off"):
        _, cache = F.max_pool2d_forward(on(backend, x), kernel, stride, padding)
        dx_max = F.max_pool2d_backward(on(backend, dy), cache)
        _, cache = F.avg_pool2d_forward(on(backend, x), kernel, stride, padding, False)
        dx_avg = F.avg_pool2d_backward(on(backend, dy), cache)
    assert_close(dx_max, R.max_pool2d_backward(dy, x, kernel, stride, padding), backend, name="max dx")
    assert_close(dx_avg, R.avg_pool2d_backward(dy, x, kernel, stride, padding, False), backend, name="avg dx")


def test_max_pool2d_tie_goes_to_first_maximum_in_row_major_order(backend):
    # every window of 2x2 holds its maximum twice: at (0,1) and (1,0) -> (0,1) comes first
    x = np.array([[[[0.0, 5.0, 1.0, 1.0],
                    [5.0, 2.0, 1.0, 0.5],
                    [3.0, 3.0, 7.0, 7.0],
                    [3.0, 3.0, 7.0, 7.0]]]])
    y, cache = F.max_pool2d_forward(on(backend, x), 2)
    dx = F.max_pool2d_backward(on(backend, np.array([[[[1.0, 2.0], [3.0, 4.0]]]])), cache)
    expected = np.array([[[[0.0, 1.0, 2.0, 0.0],
                           [0.0, 0.0, 0.0, 0.0],
                           [3.0, 0.0, 4.0, 0.0],
                           [0.0, 0.0, 0.0, 0.0]]]])
    assert_close(y, [[[[5.0, 1.0], [3.0, 7.0]]]], backend, name="y")
    assert_close(dx, expected, backend, name="dx")
    assert_close(dx, R.max_pool2d_backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), x, 2), backend, name="ref")


def test_max_pool2d_padding_never_wins_for_negative_inputs(backend):
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    y, _ = F.max_pool2d_forward(on(backend, x), 2, 2, 1)
    assert_close(y, [[[[-1.0, -2.0], [-4.0, -5.0]]]], backend, name="y")


def _extreme_inputs(dtype):
    """Windows of -inf, of the dtype's lowest finite value, and with one or two NaNs, beside padding."""
    low, inf, nan = float(np.finfo(dtype).min), np.inf, np.nan
    x = np.array([[[[-inf, -inf, -inf, 1.0, 2.0],
                    [-inf, -inf, low, low, nan],
                    [low, low, low, -inf, 3.0],
                    [0.5, nan, 4.0, nan, -inf],
                    [nan, 0.0, low, -inf, low]]]])
    return np.concatenate([x, -np.abs(x[:, :, ::-1])], axis=1)    # a second channel: the mirror, all <= 0


@pytest.mark.parametrize("few_launches", ["off", "on"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kernel,stride,padding", [(2, 1, 1), (3, 2, 1), (3, 1, 1), ((2, 3), (1, 2), (1, 1)), (2, 2, 0)])
def test_max_pool2d_matches_torch_on_infinities_lowest_values_and_nan(backend, dtype, kernel, stride, padding,
                                                                       few_launches):
    """-inf and finfo.min never lose to the padding and the gradient never goes into it; a NaN is the
    maximum and takes the gradient (the last NaN of a window, as torch's kernels choose); both forms."""
    torch = pytest.importorskip("torch")
    from xpcnn import config
    x = _extreme_inputs(dtype)
    tx = torch.tensor(x, dtype=getattr(torch, dtype), requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, kernel, stride, padding)
    dy = np.random.default_rng(7).standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(dy, dtype=tx.dtype))
    with config.using(few_launches=few_launches):
        y, cache = F.max_pool2d_forward(on(backend, x, dtype=dtype), kernel, stride, padding)
        dx = F.max_pool2d_backward(on(backend, dy, dtype=dtype), cache)
    assert_close(y, ty.detach().double().numpy(), backend, dtype, rtol=0, atol=0, name="y")
    assert_close(dx, tx.grad.double().numpy(), backend, dtype, name="dx")
    if dtype == "float64":
        assert_close(y, R.max_pool2d(x, kernel, stride, padding), backend, dtype, rtol=0, atol=0, name="ref y")
        assert_close(dx, R.max_pool2d_backward(dy, x, kernel, stride, padding), backend, dtype, name="ref dx")


def test_max_pool2d_with_padding_copies_and_reads_nothing_on_torch():
    torch = pytest.importorskip("torch")
    from xpcnn import config
    from xpcnn.testing import Transfers
    x = torch.tensor(_extreme_inputs("float32"))
    for few_launches in ("off", "on"):
        with config.using(few_launches=few_launches):
            y, cache = F.max_pool2d_forward(x, 3, 1, 1)         # warm the cached constants
            F.max_pool2d_backward(torch.ones_like(y), cache)
            with Transfers() as transfers:
                y, cache = F.max_pool2d_forward(x, 3, 1, 1)
                F.max_pool2d_backward(torch.ones_like(y), cache)
        assert transfers.read_calls == [] and transfers.write_calls == [], few_launches
