import numpy as np
import pytest

from xpcnn import functional as F, gradcheck, reference as R
from xpcnn.testing import assert_close, on


def _probabilities(n, k, seed):
    p = np.random.default_rng(seed).random((n, k))
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cross_entropy_with_integer_labels(backend, dtype):
    z = np.random.default_rng(0).standard_normal((6, 4))
    labels = np.array([0, 3, 1, 1, 2, 0])
    loss, dz = F.softmax_cross_entropy(on(backend, z, dtype=dtype), on(backend, labels))
    loss_ref, dz_ref = R.softmax_cross_entropy(z, labels)
    assert_close(loss, loss_ref, backend, dtype, name="loss")
    assert_close(dz, dz_ref, backend, dtype, name="dlogits")


def test_cross_entropy_with_probability_targets(backend):
    z, t = np.random.default_rng(1).standard_normal((5, 3)), _probabilities(5, 3, 2)
    loss, dz = F.softmax_cross_entropy(*on(backend, z, t))
    loss_ref, dz_ref = R.softmax_cross_entropy(z, t)
    assert_close(loss, loss_ref, backend, name="loss")
    assert_close(dz, dz_ref, backend, name="dlogits")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cross_entropy_is_stable_for_huge_logits(backend, dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, 0.0]])
    labels = np.array([0, 0, 2])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        loss, dz = F.softmax_cross_entropy(on(backend, z, dtype=dtype), on(backend, labels))
    # row 1 puts all mass on classes 1 and 2 equally: -log p_0 = 2e4 + log 2
    expected = (0.0 + 2e4 + np.log(2) + np.log(3)) / 3
    assert_close(loss, expected, backend, dtype, name="loss")
    assert_close(dz, [[0, 0, 0], [-1 / 3, 1 / 6, 1 / 6], [1 / 9, 1 / 9, -2 / 9]], backend, dtype, name="dlogits")


def test_losses_numerical_gradient(backend):
    z, labels, t = np.random.default_rng(3).standard_normal((4, 5)), np.array([4, 0, 2, 2]), _probabilities(4, 5, 4)
    ce_labels, ce_probs = on(backend, labels), on(backend, t)
    for target in (ce_labels, ce_probs):
        gradcheck(lambda logits: F.softmax_cross_entropy(logits, target), lambda d, dz: d * dz,
                  (on(backend, z),), mode="elementwise")
    y = on(backend, np.random.default_rng(5).standard_normal((4, 5)))
    gradcheck(lambda p: F.mse_loss(p, y), lambda d, dp: d * dp, (on(backend, z),), mode="elementwise")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mse_loss(backend, dtype):
    p, t = np.random.default_rng(6).standard_normal((2, 3, 4)), np.random.default_rng(7).standard_normal((2, 3, 4))
    loss, dp = F.mse_loss(*on(backend, p, t, dtype=dtype))
    loss_ref, dp_ref = R.mse_loss(p, t)
    assert_close(loss, loss_ref, backend, dtype, name="loss")
    assert_close(dp, dp_ref, backend, dtype, name="dpred")


def test_losses_match_torch(backend):
    torch = pytest.importorskip("torch")
    z, labels, t = np.random.default_rng(8).standard_normal((4, 3)), np.array([2, 0, 1, 1]), _probabilities(4, 3, 9)
    for target, torch_target in ((labels, torch.tensor(labels)), (t, torch.tensor(t))):
        loss, dz = F.softmax_cross_entropy(*on(backend, z, target))
        tz = torch.tensor(z, requires_grad=True)
        tl = torch.nn.functional.cross_entropy(tz, torch_target)
        tl.backward()
        assert_close(loss, tl.item(), backend, name="loss")
        assert_close(dz, tz.grad.numpy(), backend, name="dlogits")
    y = np.random.default_rng(10).standard_normal((4, 3))
    loss, dp = F.mse_loss(*on(backend, z, y))
    tz = torch.tensor(z, requires_grad=True)
    tl = torch.nn.functional.mse_loss(tz, torch.tensor(y))
    tl.backward()
    assert_close(loss, tl.item(), backend, name="mse")
    assert_close(dp, tz.grad.numpy(), backend, name="dmse")
