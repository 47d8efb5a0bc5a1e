import numpy as np
import pytest

from xpcnn import functional as F, gradcheck, reference as R
from xpcnn.testing import assert_close, on

SHAPES = [(4, 5, 3, True), (1, 7, 2, True), (3, 6, 6, False), (5, 1, 4, True)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n,fan_in,fan_out,with_bias", SHAPES)
def test_linear_matches_reference_and_gradients(backend, dtype, n, fan_in, fan_out, with_bias):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((n, fan_in)), rng.standard_normal((fan_out, fan_in))
    b = rng.standard_normal(fan_out) if with_bias else None
    y, cache = F.linear_forward(*on(backend, x, w, b, dtype=dtype))
    dy = rng.standard_normal((n, fan_out))
    dx, dw, db = F.linear_backward(on(backend, dy, dtype=dtype), cache)
    dx_ref, dw_ref, db_ref = R.linear_backward(dy, x, w)
    assert_close(y, R.linear(x, w, b), backend, dtype, name="y")
    assert_close(dx, dx_ref, backend, dtype, name="dx")
    assert_close(dw, dw_ref, backend, dtype, name="dweight")
    if with_bias:
        assert_close(db, db_ref, backend, dtype, name="dbias")
    else:
        assert db is None
    if dtype == "float64":
        gradcheck(F.linear_forward, F.linear_backward, on(backend, x, w, b))


def test_linear_matches_torch_autograd(backend):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x, w, b, dy = rng.standard_normal((4, 6)), rng.standard_normal((3, 6)), rng.standard_normal(3), rng.standard_normal((4, 3))
    y, cache = F.linear_forward(*on(backend, x, w, b))
    grads = F.linear_backward(on(backend, dy), cache)
    leaves = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    ty = torch.nn.functional.linear(*leaves)
    ty.backward(torch.tensor(dy))
    assert_close(y, ty.detach().numpy(), backend)
    for got, leaf in zip(grads, leaves):
        assert_close(got, leaf.grad.numpy(), backend)
