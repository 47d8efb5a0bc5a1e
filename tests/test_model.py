import numpy as np
import pytest

import xpcnn
from xpcnn import gradcheck, layers as L, to_numpy
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


def test_load_state_dict_lists_every_mismatch_and_changes_nothing():
    model = small_lenet(seed=0)
    before = model.state_dict()
    bad = dict(before)
    del bad["0.bias"]
    bad["0.weight"] = np.zeros((4, 1, 2, 2), dtype=np.float32)
    bad["9.weight"] = np.zeros((1, 2))
    bad["3.weight"] = bad.pop("3.bias").astype(np.int32)
    with pytest.raises(ValueError) as info:
        model.load_state_dict(bad)
    message = str(info.value)
    for fragment in ("'0.weight': expected shape (4, 1, 3, 3), got (4, 1, 2, 2)", "unexpected key '9.weight'",
                     "missing key '0.bias'", "missing key '3.bias'", "'3.weight'"):
        assert fragment in message
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


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


def test_summary_prints_the_table_once_and_summary_text_returns_it(capsys):
    model = lenet(seed=0)
    assert model.summary((1, 28, 28)) is None          # a notebook shows nothing more than the printed table
    assert capsys.readouterr().out == model.summary_text((1, 28, 28)) + "\n"


def test_summary_lists_shapes_and_parameter_counts():
    text = lenet(seed=0).summary_text((1, 28, 28))
    assert "Dense(3136->128)" in text and "(N, 64, 7, 7)" in text
    expected = 1 * 32 * 9 + 32 + 32 * 64 * 9 + 64 + 3136 * 128 + 128 + 128 * 10 + 10
    assert f"total parameters: {expected:,}" in text


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
