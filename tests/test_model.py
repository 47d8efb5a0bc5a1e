import numpy as np
import pytest

import xpcnn
from xpcnn import functional as F, gradcheck, layers as L, to_numpy
from xpcnn.zoo import lenet, vgg_small
from xpcnn.testing import assert_close, assert_same_gradients_as_twin, loss_and_grads


def small_lenet(**kwargs):
    return lenet(image_size=12, width=4, dropout=0.0, **kwargs)


def small_vgg(dropout=0.0, **kwargs):
    return vgg_small(image_size=8, widths=(4, 6), dropout=dropout, **kwargs)


BUILDERS = {"lenet": (small_lenet, (1, 12, 12)), "vgg": (small_vgg, (3, 8, 8))}


def _batch(shape, n=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + shape), rng.integers(0, 10, size=n)


@pytest.mark.parametrize("name", BUILDERS)
def test_same_seed_same_model_same_gradients_on_every_backend(backend, name):
    build, shape = BUILDERS[name]
    x, labels = _batch(shape)
    reference = build(seed=7, dtype="float64", backend="numpy")
    model = build(seed=7, dtype="float64", backend=backend)
    for (key, p), (_, q) in zip(reference.named_parameters(), model.named_parameters()):
        np.testing.assert_array_equal(to_numpy(q.data), to_numpy(p.data), err_msg=f"initial {key}")
    loss_ref, grads_ref = loss_and_grads(reference, x, labels)
    loss, grads = loss_and_grads(model, x, labels)
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    for key, p in model.named_parameters():
        assert_close(p.grad, grads_ref[key], backend, name=key)


def test_host_dropout_masks_are_the_same_on_every_backend(backend):
    build = lambda b: xpcnn.Sequential([L.Flatten(), L.Dropout(0.5), L.Dense(12, 3)], seed=3, backend=b,
                                       dtype="float64", dropout_rng="host")
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2))
    assert_close(build(backend)(x), to_numpy(build("numpy")(x)), backend)


def _masks(backend, dropout_rng="device", seed=3, draws=2):
    model = xpcnn.Sequential([L.Dropout(0.5)], seed=seed, backend=backend, dropout_rng=dropout_rng)
    x = np.ones((6, 50), dtype=np.float32)
    return [to_numpy(model(x)) != 0 for _ in range(draws)]


def test_device_dropout_masks_are_reproducible_on_each_backend(backend):
    first, second = _masks(backend), _masks(backend)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])                # each forward draws a new mask
    assert 0.35 < first[0].mean() < 0.65
    assert not np.array_equal(_masks(backend, seed=4)[0], first[0])


def test_numpy_draws_the_same_masks_in_both_modes_and_libraries_draw_their_own():
    device, host = _masks("numpy"), _masks("numpy", "host")
    for a, b in zip(device, host):
        np.testing.assert_array_equal(a, b)
    pytest.importorskip("torch")
    assert not np.array_equal(_masks("torch")[0], device[0])     # PyTorch's own generator
    np.testing.assert_array_equal(_masks("torch", "host")[0], device[0])


def test_dropout_rng_is_checked_and_kept_in_the_spec():
    with pytest.raises(ValueError, match="dropout_rng must be 'device' or 'host', got 'gpu'"):
        xpcnn.Sequential([L.Dropout(0.5)], dropout_rng="gpu")
    model = xpcnn.Sequential([L.Dropout(0.5)], dropout_rng="host")
    assert xpcnn.Sequential.from_spec(model.spec()).noise.host


@pytest.mark.parametrize("name", BUILDERS)
def test_model_matches_torch_forward_and_gradients(backend, torch_twin, name):
    import torch
    build, shape = BUILDERS[name]
    x, labels = _batch(shape, seed=1)
    model = build(seed=11, dtype="float64", backend=backend)
    twin = torch_twin(model)
    assert_same_gradients_as_twin(model, twin, torch, x, labels, backend)
    # BatchNorm's running statistics moved the same way, and evaluation mode agrees too
    for key, value in twin.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[key], value.numpy(), rtol=1e-12, atol=1e-14, err_msg=key)
    model.eval(), twin.eval()
    assert_close(model(x), twin(torch.from_numpy(x)).detach().numpy(), backend, name="eval logits")


@pytest.mark.parametrize("name", BUILDERS)
def test_whole_model_numerical_gradient(backend, name):
    build, shape = BUILDERS[name]
    x, labels = _batch(shape, seed=2)
    model = build(seed=5, dtype="float64", backend=backend)
    params = model.parameters()
    xs = model.prepare_input(x)

    def forward(*values):
        for p, value in zip(params, values):
            p.data = value
        return model(xs), None

    def backward(dout, _):
        model.zero_grad()
        model.backward(dout)
        return [p.grad for p in params]

    report = gradcheck(forward, backward, [p.data for p in params])
    assert len(report) == len(params)


def test_state_dict_round_trip_from_torch_is_exact(torch_twin):
    import torch
    model = small_vgg(seed=0, dtype="float64", backend="numpy")
    twin = torch_twin(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(torch.randn_like(p))
        twin(torch.randn(4, 3, 8, 8, dtype=torch.float64))        # moves BatchNorm's running statistics
    fresh = small_vgg(seed=1, dtype="float64", backend="numpy")
    fresh.load_state_dict(twin.state_dict())
    for key, value in twin.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value.numpy(), err_msg=key)
    back = torch_twin(fresh)
    for key, value in back.state_dict().items():
        assert torch.equal(value, twin.state_dict()[key]), key


def test_to_moves_the_model_and_keeps_its_outputs(backend):
    model = small_vgg(seed=2, dtype="float64", backend="numpy").eval()
    x, _ = _batch((3, 8, 8))
    expected = to_numpy(model(x))
    model.to(backend)
    assert all(xpcnn.backend.backend_of(p.data) == backend.name for p in model.parameters())
    assert_close(model(x), expected, backend)


def test_shape_error_names_the_layer_before_any_state_changes():
    model = xpcnn.Sequential([L.Conv2D(1, 4, 3), L.ReLU(), L.Flatten(), L.Dense(3136, 128)], seed=0)
    with pytest.raises(ValueError, match=r"layer 3: Dense\(3136->128\): expected \(N, 3136\), got \(64, 2704\)"):
        model(np.zeros((64, 1, 28, 28), dtype=np.float32))
    assert all(layer.cache is None for layer in model.layers)
    with pytest.raises(ValueError, match=r"layer 0: Conv2D\(1->4\): expected input with 1 channels, got shape \(2, 3, 9, 9\)"):
        model(np.zeros((2, 3, 9, 9), dtype=np.float32))


def test_inputs_from_another_backend_or_of_integer_dtype_are_refused():
    torch = pytest.importorskip("torch")
    model = small_lenet(seed=0)
    with pytest.raises(TypeError, match=r"x is a torch array but the model is on numpy"):
        model(torch.zeros(2, 1, 12, 12))
    with pytest.raises(TypeError, match=r"x must have dtype float32 or float64 .* got dtype uint8"):
        model(np.zeros((2, 1, 12, 12), dtype=np.uint8))


def test_evaluating_switches_to_eval_and_restores_the_mode_even_after_an_error():
    model = small_vgg(seed=0, dropout=0.5)
    with model.evaluating() as same:
        assert same is model and not model.training
        assert all(not layer.training for layer in model.layers)
    assert model.training and all(layer.training for layer in model.layers)
    with pytest.raises(ValueError):
        with model.evaluating():
            model(np.zeros((1, 1, 8, 8)))             # wrong channel count
    assert model.training
    model.eval()
    with model.evaluating():
        pass
    assert not model.training                         # a model already in eval mode stays there


@pytest.mark.parametrize("wrong", ["numpy", xpcnn.get_backend()])
def test_build_takes_an_input_shape_and_refuses_a_backend_by_name(wrong):
    model = xpcnn.Sequential([L.Flatten(), L.Dense(3)], seed=0)
    with pytest.raises(TypeError, match=r"Sequential.build: input_shape must be a shape without the batch axis, "
                                        r"such as \(1, 28, 28\), got .*numpy"):
        model.build(wrong)
    assert not model.built and model.input_shape is None          # nothing was drawn or recorded
    assert model.build((2, 3)) is model and model.input_shape == (2, 3) and model[1].weight.shape == (3, 6)


def test_backward_takes_need_dx_the_name_layers_use():
    model = xpcnn.Sequential([L.Dense(4, 3), L.ReLU(), L.Dense(3, 2)], seed=0)
    dy = np.ones((5, 2))
    model(np.ones((5, 4)))
    assert model.backward(dy, need_dx=False) is None
    assert model.backward(dy, False) is None and model.backward(dy).shape == (5, 4)
    with pytest.raises(TypeError):
        model.backward(dy, input_grad=False)


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


def test_conveniences_index_length_iteration_and_summary_without_an_argument():
    model = xpcnn.Sequential([L.Conv2D(4, 3), L.Flatten(), L.Dense(10)], input_shape=(1, 6, 6))
    assert len(model) == 3 and isinstance(model[2], L.Dense) and [type(layer) for layer in model][1] is L.Flatten
    text = model.summary_text()
    assert "Dense(64->10)" in text and "total parameters: 690" in text
    with pytest.raises(ValueError, match=r"summary: pass the input shape"):
        xpcnn.Sequential([L.Flatten()]).summary_text()


def test_backward_stops_below_the_lowest_trainable_layer(monkeypatch):
    model = lenet(image_size=8, width=3, dropout=0.0, seed=4, dtype="float64")
    model.freeze()
    model[-1].unfreeze()                      # only the classifier trains
    calls = []
    for index, layer in enumerate(model.layers):
        original = layer.backward
        monkeypatch.setattr(layer, "backward", lambda dy, need_dx=True, _i=index, _f=original:
                            calls.append((_i, need_dx)) or _f(dy, need_dx=need_dx))
    x, labels = _batch((1, 8, 8), n=4)
    _, dlogits = F.softmax_cross_entropy(model(x), labels)
    assert model.backward(dlogits, need_dx=False) is None
    assert calls == [(len(model) - 1, False)]
    calls.clear()
    model.backward(dlogits)                   # the input gradient still runs every layer
    assert [i for i, _ in calls] == list(range(len(model) - 1, -1, -1))
