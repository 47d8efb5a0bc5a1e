"""Fine-tuning and conveniences: frozen parameters, parameter groups, gradient clipping, ReduceLROnPlateau,
optimizers by name, validation_split and predict's probabilities and single samples."""
import numpy as np
import pytest

import xpcnn
from xpcnn import functional as F, optim
from xpcnn.layers import Conv2D, Dense, Flatten, MaxPool2D
from xpcnn.testing import assert_close
from xpcnn.zoo import lenet


def _model(backend="numpy", dtype="float64"):
    return lenet(image_size=8, width=3, dropout=0.0, seed=4, dtype=dtype, backend=backend)


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)), rng.integers(0, 10, n)


def _step(model, opt, x, labels, backend):
    model.zero_grad()
    _, dlogits = F.softmax_cross_entropy(model(x), xpcnn.to_backend(labels, backend))
    model.backward(dlogits, input_grad=False)
    opt.step()


# ---------------------------------------------------------------------------- freezing
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
    x, labels = _data(4)
    for _ in range(5):
        _step(model, ours, x, labels, backend)
        theirs.zero_grad()
        torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(labels)).backward()
        theirs.step()
    assert model[0].weight.grad is None and model[0].bias.grad is None
    np.testing.assert_array_equal(xpcnn.to_numpy(model[0].weight.data), before["0.weight"])
    for key, p in twin.named_parameters():
        assert_close(dict(model.named_parameters())[key].data, p.detach().numpy(), backend, rtol=1e-9, atol=1e-11,
                     name=key)


def test_backward_stops_below_the_lowest_trainable_layer(monkeypatch):
    model = _model()
    model.freeze()
    model[-1].unfreeze()                      # only the classifier trains
    calls = []
    for index, layer in enumerate(model.layers):
        original = layer.backward
        monkeypatch.setattr(layer, "backward", lambda dy, need_dx=True, _i=index, _f=original:
                            calls.append((_i, need_dx)) or _f(dy, need_dx=need_dx))
    x, labels = _data(4)
    _, dlogits = F.softmax_cross_entropy(model(x), labels)
    assert model.backward(dlogits, input_grad=False) is None
    assert calls == [(len(model) - 1, False)]
    calls.clear()
    model.backward(dlogits)                   # the input gradient still runs every layer
    assert [i for i, _ in calls] == list(range(len(model) - 1, -1, -1))


def test_functional_backward_without_parameter_gradients_gives_the_same_dx(backend):
    x, _ = _data(2)
    conv = Conv2D(1, 3, 3, padding=1)
    y = conv(xpcnn.to_backend(x, backend, dtype="float64"))
    dy = xpcnn.to_backend(np.ones(tuple(y.shape)), backend, dtype="float64")
    full = F.conv2d_backward(dy, conv.cache)
    frozen = F.conv2d_backward(dy, conv.cache, need_params=False)
    assert frozen[1] is None and frozen[2] is None
    assert_close(frozen[0], xpcnn.to_numpy(full[0]), backend, name="dx")
    dense = Dense(5, 3)
    dense(xpcnn.to_backend(np.ones((2, 5)), backend, dtype="float64"))
    dx, dw, db = F.linear_backward(xpcnn.to_backend(np.ones((2, 3)), backend, dtype="float64"), dense.cache,
                                   need_params=False)
    assert dw is None and db is None and tuple(dx.shape) == (2, 5)


def test_freeze_recurses_into_blocks_and_unfreeze_restores():
    model = xpcnn.zoo.resnet8(seed=0, dtype="float64")
    model[1].freeze()
    assert not model[1].trains() and model.trains()
    assert all(not p.requires_grad for p in model[1].parameters())
    model.unfreeze()
    assert all(p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------------------- parameter groups
@pytest.mark.parametrize("name,kwargs,group", [
    ("SGD", dict(lr=0.01, momentum=0.9), dict(lr=0.1, momentum=0.5)),
    ("Adam", dict(lr=0.01), dict(lr=0.001, betas=(0.8, 0.99))),
    ("RMSprop", dict(lr=0.005), dict(weight_decay=0.1)),
])
def test_parameter_groups_match_torch_optim(backend, torch_twin, name, kwargs, group):
    import torch
    model = _model(backend)
    twin = torch_twin(model)
    head = [p for _, p in model[-1].named_parameters()]
    rest = [p for p in model.parameters() if all(p is not h for h in head)]
    twin_head = list(twin[len(twin) - 1].parameters())
    twin_rest = [p for p in twin.parameters() if all(p is not h for h in twin_head)]
    ours = getattr(optim, name)([{"params": rest}, {"params": head, **group}], **kwargs)
    theirs = getattr(torch.optim, name)([{"params": twin_rest}, {"params": twin_head, **group}], **kwargs)
    assert ours.param_groups[1]["lr"] == theirs.param_groups[1]["lr"]
    for step in range(10):
        x, labels = _data(4, seed=step)
        _step(model, ours, x, labels, backend)
        theirs.zero_grad()
        torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(labels)).backward()
        theirs.step()
    for key, p in twin.named_parameters():
        assert_close(dict(model.named_parameters())[key].data, p.detach().numpy(), backend, rtol=1e-9, atol=1e-11,
                     name=f"{key} after 10 steps")


def test_group_state_and_checkpoint_round_trip(tmp_path):
    model = _model()
    opt = optim.Adam([{"params": model.parameters()[:4], "lr": 0.05}, {"params": model.parameters()[4:]}], lr=0.01)
    schedule = optim.CosineAnnealingLR(opt, T_max=4)
    x, labels = _data(8)
    _step(model, opt, x, labels, "numpy")
    schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(schedule.lr_at(1, 0.05))
    assert opt.param_groups[1]["lr"] == pytest.approx(schedule.lr_at(1, 0.01))
    path = model.save(tmp_path / "run.npz", optimizer=opt, scheduler=schedule)
    restored = xpcnn.load_checkpoint(path)
    assert [g["lr"] for g in restored.optimizer.param_groups] == [g["lr"] for g in opt.param_groups]
    assert restored.optimizer.state_dict()["groups"] == opt.state_dict()["groups"]
    for model_, opt_ in ((model, opt), (restored.model, restored.optimizer)):
        _step(model_, opt_, x, labels, "numpy")
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(restored.model.state_dict()[key], value, err_msg=key)


def test_bad_parameter_groups_are_refused_naming_the_group():
    params = _model().parameters()
    with pytest.raises(ValueError, match="parameter group 1: SGD: momentum must be in"):
        optim.SGD([{"params": params[:2]}, {"params": params[2:], "momentum": 2.0}], lr=0.1)
    with pytest.raises(ValueError, match="parameter group 0 sets betas, which SGD does not have"):
        optim.SGD([{"params": params, "betas": (0.9, 0.9)}], lr=0.1)
    with pytest.raises(ValueError, match="appears twice"):
        optim.SGD([{"params": params}, {"params": params[:1]}], lr=0.1)
    with pytest.raises(ValueError, match="parameter group 1 has no parameters"):
        optim.SGD([{"params": params}, {"params": []}], lr=0.1)


# ---------------------------------------------------------------------------- clipping
def test_clip_grad_norm_matches_torch_and_reads_nothing(backend, torch_twin):
    import torch
    model = _model(backend)
    twin = torch_twin(model)
    x, labels = _data(4)
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
    x, labels = _data(4)
    _, dlogits = F.softmax_cross_entropy(model(x), xpcnn.to_backend(labels, "torch"))
    model.backward(dlogits)
    with Transfers() as transfers:
        norm = optim.clip_grad_norm(model.parameters(), 1.0)
    assert transfers.reads == 0 and isinstance(norm, torch.Tensor)


def test_fit_clips_to_the_given_norm():
    x, labels = _data(16)
    a, b = _model(), _model()
    a.fit(x, labels, optimizer=optim.SGD(a.parameters(), lr=0.1), batch_size=16, shuffle=False, verbose=0,
          clip_grad_norm=0.01)
    opt = optim.SGD(b.parameters(), lr=0.1)
    b.zero_grad()
    b.backward(F.softmax_cross_entropy(b(x), labels)[1], input_grad=False)
    optim.clip_grad_norm(b.parameters(), 0.01)
    opt.step()
    for key, value in b.state_dict().items():
        np.testing.assert_allclose(a.state_dict()[key], value, rtol=1e-12, err_msg=key)


# ---------------------------------------------------------------------------- ReduceLROnPlateau
@pytest.mark.parametrize("kwargs", [dict(patience=1), dict(mode="max", factor=0.5, patience=0, cooldown=1),
                                    dict(threshold=0.1, threshold_mode="abs", patience=0, min_lr=0.02)])
def test_reduce_lr_on_plateau_follows_torch(kwargs):
    torch = pytest.importorskip("torch")
    metrics = [1.0, 0.9, 0.95, 0.92, 0.91, 0.5, 0.6, 0.6, 0.49, 0.7, 0.8]
    model = _model()
    ours = optim.SGD(model.parameters(), lr=0.1)
    schedule = optim.ReduceLROnPlateau(ours, monitor="loss", **kwargs)
    weight = torch.nn.Parameter(torch.zeros(1))
    theirs = torch.optim.SGD([weight], lr=0.1)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, **kwargs)
    ours_lrs, their_lrs = [], []
    for value in metrics:
        ours_lrs.append(schedule.step(value))
        reference.step(value)
        their_lrs.append(theirs.param_groups[0]["lr"])
    assert ours_lrs == pytest.approx(their_lrs)
    assert len(set(ours_lrs)) > 1                                # the rate did change


def test_fit_steps_reduce_lr_on_plateau_with_the_monitored_value_and_resumes(tmp_path):
    x, labels = _data(32)
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.5)
    schedule = optim.ReduceLROnPlateau(opt, monitor="val_loss", patience=0, factor=0.5)
    history = model.fit(x, labels, optimizer=opt, scheduler=schedule, epochs=4, validation_split=0.25, verbose=0)
    replay = optim.ReduceLROnPlateau(optim.SGD(_model().parameters(), lr=0.5), monitor="val_loss", patience=0,
                                     factor=0.5)
    expected = [0.5] + [replay.step(v) for v in history["val_loss"][:-1]]
    assert history["lr"] == pytest.approx(expected)
    path = model.save(tmp_path / "c.npz", optimizer=opt, scheduler=schedule)
    restored = xpcnn.load_checkpoint(path).scheduler
    assert (restored.best, restored.num_bad_epochs, restored.optimizer.lr) == (schedule.best, schedule.num_bad_epochs,
                                                                              opt.lr)
    with pytest.raises(ValueError, match="monitors 'val_loss', which needs validation_data"):
        model.fit(x, labels, optimizer=opt, scheduler=schedule, verbose=0)


# ---------------------------------------------------------------------------- fit and predict conveniences
def test_fit_takes_an_optimizer_by_name():
    x, labels = _data(16)
    a, b = _model(), _model()
    history = a.fit(x, labels, optimizer="adam", lr=0.01, epochs=2, seed=1, verbose=0)
    b.fit(x, labels, optimizer=optim.Adam(b.parameters(), lr=0.01), epochs=2, seed=1, verbose=0)
    assert isinstance(history.optimizer, optim.Adam) and history.optimizer.lr == 0.01
    for key, value in b.state_dict().items():
        np.testing.assert_array_equal(a.state_dict()[key], value, err_msg=key)
    assert _model().fit(x, labels, optimizer="sgd", verbose=0).optimizer.lr == 0.01


def test_fit_builds_a_lazy_model_before_making_its_optimizer():
    model = xpcnn.Sequential([Conv2D(2, 3), MaxPool2D(2), Flatten(), Dense(10)], seed=0)
    x, labels = _data(8)
    model.fit(x, labels, optimizer="sgd", lr=0.1, verbose=0)
    assert model.built and model[3].in_features == 18


def test_validation_split_is_the_last_fraction():
    x, labels = _data(20)
    a, b = _model(), _model()
    split = a.fit(x, labels, optimizer="sgd", lr=0.1, epochs=2, seed=0, verbose=0, validation_split=0.25)
    explicit = b.fit(x[:15], labels[:15], optimizer="sgd", lr=0.1, epochs=2, seed=0, verbose=0,
                     validation_data=(x[15:], labels[15:]))
    assert split["val_loss"] == explicit["val_loss"] and split["loss"] == explicit["loss"]


@pytest.mark.parametrize("kwargs,message", [
    (dict(optimizer="nope"), "optimizer must be an xpcnn.optim optimizer or one of sgd, adagrad, rmsprop, adam"),
    (dict(optimizer="adam", lr=-1), "lr must be a positive number, got -1"),
    (dict(optimizer="adam", validation_split=1.0), r"validation_split must be a fraction in \(0, 1\), got 1.0"),
    (dict(optimizer="adam", validation_split=0.001), "leaves no validation samples"),
    (dict(optimizer="adam", validation_split=0.5, validation_data=_data(4)), "not both"),
    (dict(optimizer="adam", clip_grad_norm=0), "clip_grad_norm must be a positive number"),
])
def test_bad_fit_conveniences_change_nothing(kwargs, message):
    model = _model()
    before = model.state_dict()
    x, labels = _data(8)
    with pytest.raises(ValueError, match=message):
        model.fit(x, labels, verbose=0, **kwargs)
    for key, value in before.items():
        np.testing.assert_array_equal(model.state_dict()[key], value)


def test_lr_with_an_optimizer_object_is_refused():
    model = _model()
    with pytest.raises(ValueError, match="lr= goes with an optimizer given by name"):
        model.fit(*_data(4), optimizer=optim.SGD(model.parameters(), lr=0.1), lr=0.5, verbose=0)


def test_predict_probabilities_and_single_samples(backend):
    model = _model(backend, dtype="float32")
    x, _ = _data(5)
    logits = model.predict(x)
    probabilities = model.predict(x, probabilities=True)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probabilities, shifted / shifted.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
    single = model.predict(x[2])
    assert single.shape == (10,)
    np.testing.assert_allclose(single, logits[2], rtol=1e-5, atol=1e-6)
    known = xpcnn.Sequential([Flatten(), Dense(10)], seed=0, input_shape=(1, 8, 8))
    assert known.predict(x[0]).shape == (10,) and known.predict(x[:2]).shape == (2, 10)


def test_reduce_lr_on_plateau_also_works_as_a_keras_style_callback():
    from xpcnn.callbacks import ReduceLROnPlateau
    x, labels = _data(32)
    runs = []
    for as_callback in (False, True):
        model = _model()
        opt = optim.SGD(model.parameters(), lr=0.5)
        schedule = ReduceLROnPlateau(opt, monitor="loss", patience=0, factor=0.5, threshold=0.5)
        kwargs = {"callbacks": [schedule]} if as_callback else {"scheduler": schedule}
        runs.append(model.fit(x, labels, optimizer=opt, epochs=4, verbose=0, seed=0, **kwargs)["lr"])
    assert runs[0] == runs[1] and len(set(runs[0])) > 1           # the rate did drop
    with pytest.raises(ValueError, match="ReduceLROnPlateau monitors 'val_loss', which needs validation_data"):
        model = _model()
        opt = optim.SGD(model.parameters(), lr=0.5)
        model.fit(x, labels, optimizer=opt, callbacks=[ReduceLROnPlateau(opt)], verbose=0)
