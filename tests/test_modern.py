"""Modern CNNs: nested Sequentials, Residual blocks, inferred input sizes, activation=, BatchNorm1D and the
ResNets of the zoo, checked against PyTorch (outputs, every gradient, 20 optimizer steps)."""
import numpy as np
import pytest

import xpcnn
from xpcnn import layers as L, optim
from xpcnn.backend import to_numpy
from xpcnn.testing import assert_close, assert_same_gradients_as_twin, loss_and_grads
from xpcnn.zoo import resnet8, resnet20


def _nested(backend, seed=3):
    """Blocks inside blocks: a nested Sequential, an identity Residual, a Residual with a conv shortcut,
    BatchNorm1D and composed activations."""
    return xpcnn.Sequential([
        L.Conv2D(2, 4, 3, padding=1, activation="relu"),
        xpcnn.Sequential([L.Conv2D(4, 4, 3, padding=1), L.BatchNorm2D(4), L.ReLU()]),
        L.Residual(xpcnn.Sequential([L.Conv2D(4, 4, 3, padding=1), L.BatchNorm2D(4), L.Tanh()])),
        L.Residual(xpcnn.Sequential([L.Conv2D(4, 6, 3, stride=2, padding=1), L.BatchNorm2D(6)]),
                   shortcut=L.Conv2D(4, 6, 1, stride=2, bias=False)),
        L.Flatten(), L.Dense(6 * 3 * 3, 8, activation="leaky_relu"), L.BatchNorm1D(8), L.Dense(8, 10),
    ], backend=backend, seed=seed, dtype="float64")


@pytest.mark.parametrize("build,shape", [(_nested, (2, 6, 6)), (lambda backend, seed: resnet8(
    backend=backend, seed=seed, dtype="float64"), (3, 8, 8))], ids=["nested", "resnet8"])
def test_nested_and_residual_models_match_torch_for_twenty_steps(backend, torch_twin, build, shape):
    import torch
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


def _lenet_explicit(seed):
    from xpcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
    return xpcnn.Sequential([Conv2D(1, 16, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(16 * 14 * 14, 10)],
                            seed=seed)


def test_the_lazy_and_the_explicit_readme_lenet_get_identical_weights():
    from xpcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
    explicit = _lenet_explicit(0)
    lazy = xpcnn.Sequential([Conv2D(16, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(10)], seed=0,
                            input_shape=(1, 28, 28))
    first_call = xpcnn.Sequential([Conv2D(16, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(10)], seed=0)
    first_call(np.zeros((2, 1, 28, 28), np.float32))
    for model in (lazy, first_call):
        assert model.state_dict().keys() == explicit.state_dict().keys()
        for key, value in explicit.state_dict().items():
            np.testing.assert_array_equal(model.state_dict()[key], value, err_msg=key)
    assert lazy[0].in_channels == 1 and lazy[4].in_features == 16 * 14 * 14


def test_a_lazy_model_says_how_to_build_it_and_refuses_a_bad_input_shape():
    model = xpcnn.Sequential([L.Conv2D(8, 3), L.Flatten(), L.Dense(10)])
    with pytest.raises(RuntimeError, match=r"parameters\(\) needs the parameters, but some sizes are inferred .*"
                                           r"layer 0 Conv2D\(\?->8\): in_channels.*call model.build"):
        model.parameters()
    with pytest.raises(ValueError, match=r"input_shape must be positive ints without the batch axis, such as "
                                         r"\(1, 28, 28\), got \(1, 0, 8\)"):
        model.build((1, 0, 8))
    with pytest.raises(ValueError, match=r"layer 0: Conv2D\(\?->8\): expected a 4-D input"):
        model.build((28, 28))
    assert not model.built
    model.build((3, 8, 8))
    assert [p.shape for p in model.parameters()] == [(8, 3, 3, 3), (8,), (10, 288), (10,)]


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


def test_activation_is_the_composed_layers_forward_and_backward(backend):
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((2, 4, 5, 5))
    fused = xpcnn.Sequential([L.Conv2D(3, 4, 3, padding=1, activation="sigmoid")], seed=1, backend=backend,
                             dtype="float64")
    plain = xpcnn.Sequential([L.Conv2D(3, 4, 3, padding=1), L.Sigmoid()], seed=1, backend=backend, dtype="float64")
    assert_close(fused(x), to_numpy(plain(x)), backend)
    assert_close(fused.backward(dy), to_numpy(plain.backward(dy)), backend, name="dx")
    assert_close(fused[0].weight.grad, to_numpy(plain[0].weight.grad), backend, name="dweight")
    assert "Conv2D(3->4, k=3x3, p=1) + Sigmoid()" in fused.summary_text((3, 5, 5))


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


def test_nested_models_save_and_load_on_every_backend(backend, tmp_path):
    model = _nested("numpy")
    model.fit(np.random.default_rng(0).standard_normal((8, 2, 6, 6)), np.arange(8) % 10,
              optimizer=optim.Adam(model.parameters()), batch_size=4, verbose=0, seed=0)
    path = model.save(tmp_path / "nested.npz")
    loaded = xpcnn.load(path, backend=backend)
    assert isinstance(loaded[1], xpcnn.Sequential) and isinstance(loaded[3], L.Residual)
    assert loaded[0].activation is not None and isinstance(loaded[6], L.BatchNorm1D)
    x = np.random.default_rng(1).standard_normal((3, 2, 6, 6))
    model.eval(), loaded.eval()
    assert_close(loaded(x), model(x), backend)


def test_conveniences_index_length_iteration_and_summary_without_an_argument():
    model = xpcnn.Sequential([L.Conv2D(4, 3), L.Flatten(), L.Dense(10)], input_shape=(1, 6, 6))
    assert len(model) == 3 and isinstance(model[2], L.Dense) and [type(layer) for layer in model][1] is L.Flatten
    text = model.summary_text()
    assert "Dense(64->10)" in text and "total parameters: 690" in text
    with pytest.raises(ValueError, match=r"summary: pass the input shape"):
        xpcnn.Sequential([L.Flatten()]).summary_text()


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


def test_a_registered_custom_layer_saves_and_loads(tmp_path):
    """The documented recipe: forward, backward, parameters, config(), register."""
    from xpcnn.layers import Layer, register

    @register
    class Scale(Layer):
        """y = a * x with one trainable scalar per channel."""
        param_names = ("a",)

        def __init__(self, channels):
            super().__init__()
            self.channels = channels

        def init_parameters(self, rng):
            return {"a": np.ones(self.channels)}

        def forward(self, x):
            self.cache = x
            return x * self.a.data[None, :]

        def backward(self, dy, need_dx=True):
            self._accumulate(self.a, (dy * self.cache).sum(axis=0))
            return dy * self.a.data[None, :] if need_dx else None

        def config(self):
            return {"channels": self.channels}

    model = xpcnn.Sequential([L.Dense(3, 2), Scale(2)], seed=0)
    model[1].a.data = np.array([2.0, -1.0], dtype=np.float32)
    loaded = xpcnn.load(model.save(tmp_path / "custom.npz"))
    assert isinstance(loaded[1], Scale) and loaded.state_dict()["1.a"].tolist() == [2.0, -1.0]
