"""batch_norm2d_forward / batch_norm2d_backward against the plain-loop reference (xpcnn.reference), numerical
gradients and torch autograd, in training and evaluation, in both forms of the op (few_launches off and on)."""
import numpy as np
import pytest

from xpcnn import config, functional as F, gradcheck, reference as R
from xpcnn.testing import assert_close, on

# (N, C, H, W), with weight and bias (affine)
CONFIGS = [
    ((2, 3, 4, 5), True),
    ((1, 2, 3, 3), True),          # a batch of one: the statistics run over the pixels
    ((5, 4, 1, 1), True),          # one pixel: the statistics run over the batch
    ((3, 1, 2, 7), False),         # one channel, no weight or bias
    ((7, 3, 5, 3), True),          # sizes that are no multiple of any block
]
IDS = [f"{shape}-{'affine' if affine else 'plain'}" for shape, affine in CONFIGS]


@pytest.fixture(params=["off", "on"])
def form(request):
    """Each form of the op in turn: the loops NumPy's CPUs take, and the few-launch form of GPUs."""
    with config.using(few_launches=request.param):
        yield request.param


def _data(shape, affine, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.standard_normal(shape) * 2.0 + rng.standard_normal((1, c, 1, 1))     # per-channel offsets
    weight, bias = (rng.standard_normal(c), rng.standard_normal(c)) if affine else (None, None)
    return x, weight, bias, rng.standard_normal(c), rng.random(c) + 0.5


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape,affine", CONFIGS, ids=IDS)
def test_batch_norm2d_matches_reference(backend, dtype, shape, affine, training, form):
    x, weight, bias, mean, var = _data(shape, affine)
    y, cache = F.batch_norm2d_forward(*on(backend, x, weight, bias, mean, var, dtype=dtype), training=training)
    dy = np.random.default_rng(1).standard_normal(shape)
    dx, dweight, dbias = F.batch_norm2d_backward(on(backend, dy, dtype=dtype), cache)
    statistics = dict(running_mean=mean, running_var=var, training=training)
    dx_ref, dweight_ref, dbias_ref = R.batch_norm2d_backward(dy, x, weight, **statistics)
    assert_close(y, R.batch_norm2d(x, weight, bias, **statistics), backend, dtype, name="y")
    assert_close(dx, dx_ref, backend, dtype, name="dx")
    assert_close(dbias, dbias_ref, backend, dtype, name="dbias")
    if affine:
        assert_close(dweight, dweight_ref, backend, dtype, name="dweight")
    else:
        assert dweight is None
    if training:        # what the layer blends into its running averages: the batch's mean and biased variance
        assert_close(cache.batch_mean, x.mean(axis=(0, 2, 3)), backend, dtype, name="batch mean")
        assert_close(cache.batch_var, x.var(axis=(0, 2, 3)), backend, dtype, name="batch var")


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("shape,affine", CONFIGS, ids=IDS)
def test_batch_norm2d_numerical_gradient(backend, shape, affine, training, form):
    x, weight, bias, mean, var = _data(shape, affine, seed=2)
    report = gradcheck(F.batch_norm2d_forward, F.batch_norm2d_backward, on(backend, x, weight, bias, mean, var),
                       forward_kwargs=dict(training=training))
    assert set(report) == ({0, 1, 2} if affine else {0})


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_the_reference_agrees_with_its_own_numerical_gradient(training):
    x, weight, bias, mean, var = _data((3, 2, 3, 4), True, seed=4)
    statistics = dict(running_mean=mean, running_var=var, training=training)

    def forward(x, weight, bias):
        return R.batch_norm2d(x, weight, bias, **statistics), (x, weight)

    def backward(dy, cache):
        return R.batch_norm2d_backward(dy, *cache, **statistics)

    assert set(gradcheck(forward, backward, [x, weight, bias], mode="elementwise")) == {0, 1, 2}


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_batch_norm2d_matches_torch_autograd(backend, training):
    torch = pytest.importorskip("torch")
    x, weight, bias, mean, var = _data((4, 3, 5, 6), True, seed=3)
    y, cache = F.batch_norm2d_forward(*on(backend, x, weight, bias, mean, var), training=training)
    dy = np.random.default_rng(5).standard_normal(x.shape)
    grads = F.batch_norm2d_backward(on(backend, dy), cache)
    leaves = [torch.tensor(a, requires_grad=True) for a in (x, weight, bias)]
    ty = torch.nn.functional.batch_norm(leaves[0], torch.tensor(mean), torch.tensor(var), leaves[1], leaves[2],
                                        training=training, eps=1e-5)
    ty.backward(torch.tensor(dy))
    assert_close(y, ty.detach().numpy(), backend, name="y")
    for got, leaf, name in zip(grads, leaves, ("dx", "dweight", "dbias")):
        assert_close(got, leaf.grad.numpy(), backend, name=name)
