"""xpcnn.optim.clipping: clip_grad_norm scales the gradients as torch.nn.utils.clip_grad_norm_ does and
makes no device read."""
import numpy as np
import pytest

import xpcnn
from xpcnn import functional as F, optim
from xpcnn.testing import assert_close
from xpcnn.zoo import lenet


def _model(backend="numpy", dtype="float64"):
    return lenet(image_size=8, width=3, dropout=0.0, seed=4, dtype=dtype, backend=backend)


def _batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)), rng.integers(0, 10, n)


def test_clip_grad_norm_matches_torch_and_reads_nothing(backend, torch_twin):
    import torch
    model = _model(backend)
    twin = torch_twin(model)
    x, labels = _batch()
    _, dlogits = F.softmax_cross_entropy(model(x), xpcnn.to_backend(labels, backend))
    model.backward(dlogits)
    torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(labels)).backward()
    expected = torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.05)
    norm = optim.clip_grad_norm(model.parameters(), 0.05)
    assert float(xpcnn.to_numpy(norm)) == pytest.approx(float(expected), rel=1e-10)
    assert float(expected) > 0.05                               # the clipping did happen
    for key, p in twin.named_parameters():
        assert_close(dict(model.named_parameters())[key].grad, p.grad.numpy(), backend, rtol=1e-9, atol=1e-12,
                     name=f"clipped {key}.grad")


def test_clip_grad_norm_makes_no_device_read():
    torch = pytest.importorskip("torch")
    from xpcnn.testing import Transfers
    model = _model("torch", dtype="float32")
    x, labels = _batch()
    _, dlogits = F.softmax_cross_entropy(model(x), xpcnn.to_backend(labels, "torch"))
    model.backward(dlogits)
    with Transfers() as transfers:
        norm = optim.clip_grad_norm(model.parameters(), 1.0)
    assert transfers.reads == 0 and isinstance(norm, torch.Tensor)
