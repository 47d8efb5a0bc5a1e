"""xpcnn.zoo: the ResNets of the zoo have the published sizes and match their PyTorch twins."""
import numpy as np

from xpcnn.testing import loss_and_grads
from xpcnn.zoo import resnet20


def test_resnet20_matches_torch_once_on_numpy(torch_twin):
    import torch
    model = resnet20(seed=0, dtype="float64")
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) == 272_474
    rng = np.random.default_rng(1)
    x, labels = rng.standard_normal((2, 3, 16, 16)), rng.integers(0, 10, 2)
    twin = torch_twin(model)
    loss, grads = loss_and_grads(model, x, labels)
    torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(labels)).backward()
    for key, p in twin.named_parameters():
        np.testing.assert_allclose(grads[key], p.grad.numpy(), rtol=1e-8, atol=1e-11, err_msg=key)
