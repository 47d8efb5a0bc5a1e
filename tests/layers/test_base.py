"""xpcnn.layers.base: a layer builds itself when used alone, accumulates gradients until zero_grad, takes
sizes as Chainer does (the input size may be left to inference), belongs to one place of one model, and
freezes: a frozen layer trains as torch's requires_grad=False, recursively through blocks."""
import numpy as np
import pytest

import xpcnn
from xpcnn import functional as F, layers as L, optim
from xpcnn.testing import assert_close, on
from xpcnn.zoo import lenet


def _model(backend="numpy"):
    return lenet(image_size=8, width=3, dropout=0.0, seed=4, dtype="float64", backend=backend)


def test_conv2d_and_dense_follow_chainers_rule_and_refuse_ambiguous_sizes():
    assert (L.Conv2D(32, 3).in_channels, L.Conv2D(32, 3).out_channels) == (None, 32)
    assert (L.Conv2D(1, 32, 3).in_channels, L.Conv2D(1, 32, kernel_size=3).in_channels) == (1, 1)
    assert L.Conv2D(3, 8, 3, 2, 1).stride == (2, 2) and L.Conv2D(None, 8, 3).in_channels is None
    assert (L.Dense(10).in_features, L.Dense(5, 10).in_features, L.Dense(None, 10).in_features) == (None, 5, None)
    with pytest.raises(TypeError, match=r"Conv2D: ambiguous or missing sizes \(32,\)"):
        L.Conv2D(32, kernel_size=3)
    with pytest.raises(TypeError, match="Conv2D: got two values for out_channels"):
        L.Conv2D(1, 32, 3, out_channels=4)
    with pytest.raises(TypeError, match="Dense: takes at most 2 positional sizes"):
        L.Dense(1, 2, 3)
    with pytest.raises(ValueError, match=r"Dense\(\?->4\): activation must be one of relu, leaky_relu, sigmoid, "
                                         r"tanh, softmax, an activation layer or None, got 'nope'"):
        L.Dense(4, activation="nope")


def test_frozen_layers_match_torch_requires_grad_false(backend, torch_twin):
    import torch
    model = _model(backend)
    twin = torch_twin(model)
    model[0].freeze()
    for p in twin[0].parameters():
        p.requires_grad_(False)
    ours = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    theirs = torch.optim.SGD([p for p in twin.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    before = {k: np.array(xpcnn.to_numpy(v)) for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((4, 1, 8, 8)), rng.integers(0, 10, 4)
    for _ in range(5):
        model.zero_grad()
        model.backward(F.softmax_cross_entropy(model(x), xpcnn.to_backend(labels, backend))[1], need_dx=False)
        ours.step()
        theirs.zero_grad()
        torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(labels)).backward()
        theirs.step()
    assert model[0].weight.grad is None and model[0].bias.grad is None
    np.testing.assert_array_equal(xpcnn.to_numpy(model[0].weight.data), before["0.weight"])
    for key, p in twin.named_parameters():
        assert_close(dict(model.named_parameters())[key].data, p.detach().numpy(), backend, rtol=1e-9, atol=1e-11,
                     name=key)


def test_freeze_recurses_into_blocks_and_unfreeze_restores():
    model = xpcnn.zoo.resnet8(seed=0, dtype="float64")
    model[1].freeze()
    assert not model[1].trains() and model.trains()
    assert all(not p.requires_grad for p in model[1].parameters())
    model.unfreeze()
    assert all(p.requires_grad for p in model.parameters())


def test_layers_build_themselves_when_used_alone(backend):
    x = on(backend, np.random.default_rng(0).standard_normal((2, 3, 6, 6)))
    conv = L.Conv2D(3, 4, 3, padding=1)
    y = conv(x)
    assert tuple(y.shape) == (2, 4, 6, 6)
    assert xpcnn.backend.backend_of(conv.weight.data) == backend.name
    dx = conv.backward(y)
    assert tuple(dx.shape) == (2, 3, 6, 6) and conv.weight.grad is not None


def test_gradients_accumulate_until_zero_grad():
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 2)], seed=0, dtype="float64")
    x = np.ones((3, 1, 2, 2))
    model(x)
    model.backward(np.ones((3, 2)))
    once = model.layers[1].weight.grad.copy()
    model(x)
    model.backward(np.ones((3, 2)))
    np.testing.assert_allclose(model.layers[1].weight.grad, 2 * once)
    model.zero_grad()
    assert model.layers[1].weight.grad is None


@pytest.mark.parametrize("make,pattern", [
    (lambda relu: [L.Flatten(), L.Dense(4, 3), relu, L.Dense(3, 3), relu],
     r"^Sequential: layer 4 \(ReLU\) is the same object as layer 2; create a new ReLU\(\) for each place$"),
    (lambda relu: [L.Flatten(), relu, xpcnn.Sequential([L.Dense(4, 4), relu])],
     r"^Sequential: layer 2.1 \(ReLU\) is the same object as layer 1; create a new ReLU\(\) for each place$"),
    (lambda relu: [L.Flatten(), L.Residual(L.Dense(4, 4, activation=relu)), relu],
     r"^Sequential: layer 2 \(ReLU\) is the same object as layer 1.block.activation; create a new ReLU\(\)"),
    (lambda relu: [L.Flatten(), L.Dense(4, 4), L.Residual(relu, shortcut=relu)],
     r"^Residual: shortcut \(ReLU\) is the same object as block; create a new ReLU\(\) for each place$"),
])
def test_a_layer_object_in_two_places_of_one_model_is_refused(make, pattern):
    """Its cache would keep only the last place's input, so the first place's gradients would be wrong."""
    with pytest.raises(ValueError, match=pattern):
        xpcnn.Sequential(make(L.ReLU()), seed=0)


def test_a_layer_of_one_model_is_refused_by_another_and_its_weights_stay():
    dense = L.Dense(4, 3)
    first = xpcnn.Sequential([L.Flatten(), dense], seed=0)
    weight = dense.weight.data.copy()
    with pytest.raises(ValueError, match=r"^Sequential: layer 1 \(Dense\(4->3\)\) already belongs to another model "
                                         r"or layer; create new layers for this one"):
        xpcnn.Sequential([L.Flatten(), dense], seed=1)
    np.testing.assert_array_equal(dense.weight.data, weight)
    assert first.layers[1] is dense
    block = xpcnn.Sequential([L.Dense(3, 3)])
    outer = xpcnn.Sequential([first, L.Residual(block)], seed=0)    # nesting a model or a block is one owner each
    with pytest.raises(ValueError, match=r"^Residual: block \(Sequential\(\)\) already belongs to another model or layer"):
        L.Residual(block)
    relu = L.ReLU()
    conv = L.Conv2D(1, 2, 3, activation=relu)                       # kept: a layer that is gone owns nothing
    with pytest.raises(ValueError, match=r"Conv2D\(1->2\): activation \(ReLU\(\)\) already belongs to another model"):
        L.Conv2D(1, 2, 3, activation=relu)
    twice = L.ReLU()                                                 # a refused model claims nothing
    with pytest.raises(ValueError, match="is the same object as"):
        xpcnn.Sequential([twice, twice])
    xpcnn.Sequential([twice])
    late = L.Dense(3)
    with pytest.raises(ValueError, match="layer 0: Conv2D"):
        xpcnn.Sequential([L.Conv2D(1, 2, 5), late], input_shape=(1, 3, 3))
    xpcnn.Sequential([L.Flatten(), late], input_shape=(1, 3, 3))
