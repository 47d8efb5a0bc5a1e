"""xpcnn.layers.batchnorm: running statistics in evaluation, no parameters without affine, and
BatchNorm1D matching torch.nn.BatchNorm1d on features and on sequences."""
import numpy as np

from xpcnn import layers as L, to_numpy
from xpcnn.testing import assert_close, on


def test_batchnorm1d_matches_torch_on_features_and_sequences(torch_twin):
    import torch
    for shape in ((5, 3), (4, 3, 6)):
        x = np.random.default_rng(3).standard_normal(shape)
        layer = L.BatchNorm1D()
        y = layer(x)
        twin = torch.nn.BatchNorm1d(3, dtype=torch.float64)
        t = torch.from_numpy(x).requires_grad_()
        ty = twin(t)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        ty.backward(torch.ones_like(ty) * torch.arange(3.0, dtype=torch.float64).reshape((1, 3) + (1,) * (len(shape) - 2)))
        dy = np.ones(shape) * np.arange(3.0).reshape((1, 3) + (1,) * (len(shape) - 2))
        np.testing.assert_allclose(layer.backward(dy), t.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(layer.running_var, twin.running_var.numpy(), rtol=1e-12)


def test_batchnorm_uses_running_statistics_in_eval(backend):
    layer = L.BatchNorm2D(3, momentum=0.5)._materialize(backend, np.random.default_rng(0), "float64")
    x = np.random.default_rng(1).standard_normal((4, 3, 5, 5)) * 2 + 1
    layer(on(backend, x))
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3), ddof=1)
    assert_close(layer.running_mean, 0.5 * mean, backend)
    assert_close(layer.running_var, 0.5 + 0.5 * var, backend)
    layer.training = False
    y = layer(on(backend, x))
    expected = (x - 0.5 * mean[None, :, None, None]) / np.sqrt(0.5 + 0.5 * var[None, :, None, None] + 1e-5)
    assert_close(y, expected, backend)


def test_batchnorm_without_affine_has_no_parameters_and_the_unit_gamma_gradient(backend):
    x = on(backend, np.random.default_rng(2).standard_normal((4, 3, 5, 5)))
    dy = on(backend, np.random.default_rng(3).standard_normal((4, 3, 5, 5)))
    plain = L.BatchNorm2D(3, affine=False)._materialize(backend, None, "float64")
    unit = L.BatchNorm2D(3)._materialize(backend, None, "float64")          # gamma starts at 1, beta at 0
    assert plain.named_parameters() == []
    np.testing.assert_allclose(to_numpy(plain(x)), to_numpy(unit(x)), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(plain.backward(dy)), to_numpy(unit.backward(dy)), rtol=1e-12, atol=1e-14)
