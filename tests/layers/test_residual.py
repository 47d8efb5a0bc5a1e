"""xpcnn.layers.residual: Residual blocks (identity and conv shortcuts, nested in Sequentials) match PyTorch
for outputs, every gradient and 20 optimizer steps; branches that disagree are refused; the identity
gradient is the sum of both paths."""
import numpy as np
import pytest

import xpcnn
from xpcnn import layers as L, optim
from xpcnn.testing import assert_close, assert_same_gradients_as_twin, loss_and_grads
from xpcnn.zoo import resnet8


@pytest.mark.parametrize("name,shape", [("nested", (2, 6, 6)), ("resnet8", (3, 8, 8))], ids=["nested", "resnet8"])
def test_nested_and_residual_models_match_torch_for_twenty_steps(backend, torch_twin, nested_model, name, shape):
    import torch
    build = nested_model if name == "nested" else (
        lambda backend, seed: resnet8(backend=backend, seed=seed, dtype="float64"))
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((3,) + shape), rng.integers(0, 10, 3)
    model = build(backend=backend, seed=5)
    twin = torch_twin(model)
    assert set(twin.state_dict()) == set(model.state_dict())
    assert_same_gradients_as_twin(model, twin, torch, x, labels, backend)
    ours = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    theirs = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    for _ in range(20):
        loss_and_grads(model, x, labels)
        ours.step()
        theirs.zero_grad()
        torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(labels)).backward()
        theirs.step()
    for key, value in twin.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[key], value.numpy(), rtol=1e-9, atol=1e-11, err_msg=key)
    model.eval(), twin.eval()
    assert_close(model(x), twin(torch.from_numpy(x)).detach().numpy(), backend, name="eval logits")


def test_residual_branches_that_disagree_are_refused_before_running():
    block = xpcnn.Sequential([L.Conv2D(3, 5, 3, padding=1)])
    model = xpcnn.Sequential([L.Conv2D(3, 3, 1), L.Residual(block)])
    with pytest.raises(ValueError, match=r"layer 1: Residual: the block gives shape \(1, 5, 4, 4\) but the "
                                         r"input \(identity shortcut\) gives \(1, 3, 4, 4\); the two branches must agree"):
        model(np.zeros((1, 3, 4, 4), np.float32))
    assert model[0].cache is None                            # nothing ran


def test_identity_residual_gradient_is_the_sum_of_both_paths():
    """dL/dx = block'(x)^T δ + δ: the sum rule, on numbers small enough to check by hand."""
    block = L.Dense(2, 2, bias=False)
    residual = xpcnn.Sequential([L.Residual(block)], dtype="float64")
    block.weight.data = np.array([[1.0, 2.0], [3.0, 4.0]])
    x, dy = np.array([[1.0, -1.0]]), np.array([[1.0, 0.5]])
    np.testing.assert_array_equal(residual(x), [[0.0, -2.0]])          # W x + x, docs/math.md section 8
    np.testing.assert_array_equal(residual.backward(dy), [[3.5, 4.5]])  # Wᵀ δ + δ
