import numpy as np
import pytest

from xpcnn import functional as F, gradcheck, reference as R
from xpcnn.testing import assert_close, on

# name, (forward, backward), (reference forward, reference backward), kwargs
OPS = [
    ("relu", (F.relu_forward, F.relu_backward), (R.relu, R.relu_backward), {}),
    ("leaky_relu", (F.leaky_relu_forward, F.leaky_relu_backward), (R.leaky_relu, R.leaky_relu_backward),
     {"negative_slope": 0.2}),
    ("sigmoid", (F.sigmoid_forward, F.sigmoid_backward), (R.sigmoid, R.sigmoid_backward), {}),
    ("tanh", (F.tanh_forward, F.tanh_backward), (R.tanh, R.tanh_backward), {}),
    ("softmax", (F.softmax_forward, F.softmax_backward), (R.softmax, R.softmax_backward), {}),
    ("log_softmax", (F.log_softmax_forward, F.log_softmax_backward), (R.log_softmax, R.log_softmax_backward), {}),
]
IDS = [op[0] for op in OPS]


def _input(shape=(4, 6), seed=0):
    # keep values away from 0 so relu's kink is not hit by the finite differences
    x = np.random.default_rng(seed).standard_normal(shape) * 2
    return np.where(np.abs(x) < 1e-3, 0.5, x)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,ops,refs,kwargs", OPS, ids=IDS)
def test_activation_matches_reference(backend, dtype, name, ops, refs, kwargs):
    x = _input()
    dy = np.random.default_rng(1).standard_normal(x.shape)
    y, cache = ops[0](on(backend, x, dtype=dtype), **kwargs)
    dx = ops[1](on(backend, dy, dtype=dtype), cache)
    assert_close(y, refs[0](x, **kwargs), backend, dtype, name="y")
    assert_close(dx, refs[1](dy, x, **kwargs), backend, dtype, name="dx")


@pytest.mark.parametrize("name,ops,refs,kwargs", OPS, ids=IDS)
def test_activation_numerical_gradient(backend, name, ops, refs, kwargs):
    gradcheck(ops[0], ops[1], (on(backend, _input(seed=2)),), forward_kwargs=kwargs, mode="elementwise")


@pytest.mark.parametrize("name,ops,refs,kwargs", OPS, ids=IDS)
def test_activation_matches_torch_autograd(backend, name, ops, refs, kwargs):
    torch = pytest.importorskip("torch")
    functions = {"relu": torch.relu, "leaky_relu": lambda t, negative_slope: torch.nn.functional.leaky_relu(t, negative_slope),
                 "sigmoid": torch.sigmoid, "tanh": torch.tanh,
                 "softmax": lambda t: torch.softmax(t, -1), "log_softmax": lambda t: torch.log_softmax(t, -1)}
    x, dy = _input(seed=3), np.random.default_rng(4).standard_normal((4, 6))
    y, cache = ops[0](on(backend, x), **kwargs)
    dx = ops[1](on(backend, dy), cache)
    tx = torch.tensor(x, requires_grad=True)
    ty = functions[name](tx, **kwargs)
    ty.backward(torch.tensor(dy))
    assert_close(y, ty.detach().numpy(), backend, name="y")
    assert_close(dx, tx.grad.numpy(), backend, name="dx")


def test_activations_keep_4d_shapes_and_softmax_axis(backend):
    x = _input((2, 3, 4, 5))
    y, _ = F.relu_forward(on(backend, x))
    assert tuple(y.shape) == x.shape
    y, cache = F.softmax_forward(on(backend, x), axis=1)
    expected = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    assert_close(y, expected, backend, name="softmax axis 1")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sigmoid_and_log_softmax_are_finite_for_huge_inputs(backend, dtype):
    x = np.array([[-1e3, -50.0, 0.0, 50.0, 1e3]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        y, _ = F.sigmoid_forward(on(backend, x, dtype=dtype))
        assert_close(y, [[0.0, 1.9287498479639178e-22, 0.5, 1.0, 1.0]], backend, dtype, name="sigmoid")
        logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
        y, _ = F.log_softmax_forward(on(backend, logits, dtype=dtype))
        assert_close(y, [[0.0, -2e4, -1e4], [-np.log(3)] * 3], backend, dtype, name="log_softmax")
