"""fit / evaluate / predict at their boundary: divergence caught before anything is saved, one dtype rule,
targets checked before the first batch, the entry mode kept on failure, one-line argument errors,
schedules by name, History as a mapping, the NHWC hint, and seeded runs that repeat."""
import warnings

import numpy as np
import pytest

import xpcnn
from xpcnn import functional as F, layers as L, optim
from xpcnn.callbacks import ModelCheckpoint
from xpcnn.train import History, TrainingDiverged


def _tiny(seed=0, **kwargs):
    return xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=seed, **kwargs)


def _bn_tiny():
    return xpcnn.Sequential([L.Flatten(), L.Dense(4, 3), L.BatchNorm1D(3)], seed=0)


def _data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 2, 2)), rng.integers(0, 3, n)


def _state_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ---------------------------------------------------------------------------- divergence
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_an_overflow_in_an_epochs_last_step_is_caught_before_the_checkpoint_is_replaced(tmp_path):
    """The loss of a batch is computed before its step: only the weights show that the epoch's last update
    overflowed. fit must stop there, keep epoch 1's checkpoint, and restore epoch 1's (finite) weights."""
    x, y = _data(12)
    model = _tiny()
    calls = []

    def loss_with_a_huge_last_gradient(logits, labels):       # 3 batches an epoch: call 6 ends epoch 2
        calls.append(1)
        value, grad = F.softmax_cross_entropy(logits, labels)
        return (value, grad * float("inf")) if len(calls) == 6 else (value, grad)

    path = tmp_path / "last.npz"
    with pytest.raises(TrainingDiverged, match=r"fit: the weights became NaN or infinite by epoch 2, batch 3 "
                                               r".*restored to the end of epoch 1"):
        model.fit(x, y, optimizer=optim.SGD(model.parameters(), lr=0.1), loss=loss_with_a_huge_last_gradient,
                  epochs=2, batch_size=4, verbose=0, callbacks=[ModelCheckpoint(path)])
    saved = xpcnn.load_checkpoint(path)
    assert saved.epoch == 1
    _state_equal(model.state_dict(), saved.model.state_dict())
    assert all(np.isfinite(value).all() for value in model.state_dict().values())


def test_a_divergence_in_the_first_epoch_says_the_model_is_as_before_training():
    x, y = _data(8)
    model = _tiny()
    before = model.state_dict()

    def nan_loss(logits, labels):
        value, grad = F.softmax_cross_entropy(logits, labels)
        return value * float("nan"), grad

    with pytest.raises(TrainingDiverged, match="restored to its state before training"):
        model.fit(x, y, optimizer="sgd", loss=nan_loss, verbose=0)
    _state_equal(model.state_dict(), before)


# ---------------------------------------------------------------------------- what fit accepts
def test_an_optimizer_over_another_models_parameters_is_refused_and_a_frozen_subset_trains():
    x, y = _data()
    model, other = _tiny(), _tiny(seed=1)
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"fit: the optimizer holds 2 parameter\(s\) that are not this model's"):
        model.fit(x, y, optimizer=optim.SGD(other.parameters(), lr=0.1), verbose=0)
    _state_equal(model.state_dict(), before)
    model.fit(x, y, optimizer=optim.SGD(model.parameters()[:1], lr=0.1), verbose=0)    # the bias left out
    after = model.state_dict()
    assert not np.array_equal(after["1.weight"], before["1.weight"])
    np.testing.assert_array_equal(after["1.bias"], before["1.bias"])


@pytest.mark.parametrize("dtype", [np.uint8, np.bool_, np.float16, np.complex64, np.int64])
def test_every_entry_point_refuses_the_dtypes_the_model_refuses(dtype):
    x, y = _data(4)
    bad = x.astype(dtype) if dtype is not np.bool_ else x > 0
    model = _tiny()
    before = model.state_dict()
    with pytest.raises(TypeError) as direct:
        model(bad)
    assert "x must have dtype float32 or float64" in str(direct.value)
    for name, call in [("fit", lambda: model.fit(bad, y, optimizer="sgd", verbose=0)),
                       ("evaluate", lambda: model.evaluate(bad, y)), ("predict", lambda: model.predict(bad)),
                       ("fit (validation_data)", lambda: model.fit(x, y, optimizer="sgd", verbose=0,
                                                                  validation_data=(bad, y)))]:
        with pytest.raises(TypeError, match=rf"^{name.replace('(', '.').replace(')', '.')}: x must have dtype "
                                            rf"float32 or float64 \(the model computes in float32\), got dtype"):
            call()
    _state_equal(model.state_dict(), before)


def test_mse_targets_are_checked_before_any_batch_changes_batchnorm():
    x, y = _data(8)
    model = _bn_tiny()
    before = model.state_dict()
    for targets in (y, np.zeros((8, 4)), np.zeros((8, 3), np.int64)):
        with pytest.raises(ValueError, match=r"fit: loss 'mse' needs float targets of the output's shape \(8, 3\)"):
            model.fit(x, targets, optimizer="sgd", loss="mse", verbose=0)
    _state_equal(model.state_dict(), before)
    model.fit(x, np.zeros((8, 3)), optimizer="sgd", loss="mse", verbose=0)              # float targets train


def test_a_failed_fit_leaves_the_model_in_the_mode_it_came_in():
    x, y = _data(8)
    model = _bn_tiny()
    model.eval()
    with pytest.raises(ValueError, match="loss 'mse' needs float targets"):
        model.fit(x, y, optimizer="sgd", loss="mse", verbose=0)
    assert not model.training

    def failing(logits, labels):                               # fails inside the loop, after model.train()
        raise RuntimeError("a loss that fails")

    with pytest.raises(RuntimeError, match="a loss that fails"):
        model.fit(x, y, optimizer="sgd", loss=failing, verbose=0)
    assert not model.training
    model.fit(x, y, optimizer="sgd", verbose=0)                # a fit that completes ends in training mode
    assert model.training


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(batch_size=0), ValueError, r"fit: batch_size must be a positive int, got 0$"),
    (dict(batch_size=2.5), ValueError, r"fit: batch_size must be a positive int, got 2.5$"),
    (dict(batch_size=None), ValueError, r"fit: batch_size must be a positive int, got None$"),
    (dict(batch_size=-1), ValueError, r"fit: batch_size must be a positive int, got -1$"),
    (dict(epochs=True), ValueError, r"fit: epochs must be a positive int, got True$"),
    (dict(seed=-1), ValueError, r"fit: seed must be None or an int >= 0, got -1$"),
    (dict(seed=1.5), ValueError, r"fit: seed must be None or an int >= 0, got 1.5$"),
    (dict(validation_data=(np.zeros((2, 1, 2, 2)),)), ValueError,
     r"fit: validation_data must be a pair \(x, y\), got a tuple of 1$"),
    (dict(callbacks=[lambda *a: None]), TypeError, r"fit: callbacks\[0\] must be an xpcnn.callbacks.Callback"),
    (dict(callbacks=ModelCheckpoint("c.npz")), TypeError, r"fit: callbacks must be a list of Callback objects"),
    (dict(scheduler="linear"), ValueError,
     r"fit: scheduler must be an xpcnn.optim schedule or one of cosine, step, plateau, got 'linear'$"),
    (dict(scheduler=0.5), TypeError, r"fit: scheduler must be an xpcnn.optim schedule .*, got float$"),
])
def test_bad_fit_arguments_are_one_line_errors_naming_the_argument(kwargs, error, message):
    x, y = _data(4)
    model = _tiny()
    before = model.state_dict()
    with pytest.raises(error, match=message) as info:
        model.fit(x, y, optimizer="sgd", verbose=0, **kwargs)
    assert "\n" not in str(info.value)
    _state_equal(model.state_dict(), before)


def test_numpy_integers_are_ints_and_a_scalar_y_or_an_empty_predict_is_refused():
    x, y = _data(8)
    model = _tiny()
    history = model.fit(x, y, optimizer="sgd", epochs=np.int64(2), batch_size=np.int64(4), seed=np.int64(1),
                        log_every=np.int32(1), verbose=0)
    assert history.epochs == [1, 2]
    assert model.evaluate(x, y, batch_size=np.int64(3))["loss"] > 0
    assert model.predict(x, batch_size=np.int64(3)).shape == (8, 3)
    with pytest.raises(TypeError, match=r"fit: y must be an array of labels or targets, one per sample, got 1$"):
        model.fit(x, 1, optimizer="sgd", verbose=0)
    with pytest.raises(ValueError, match=r"predict: x must be a non-empty batch of samples \(or one sample\), "
                                         r"got shape \(0, 1, 2, 2\)"):
        model.predict(x[:0])


def test_a_scheduler_over_another_optimizer_is_refused():
    x, y = _data(4)
    model = _tiny()
    schedule = optim.StepLR(optim.SGD(model.parameters(), lr=0.1), step_size=1)
    with pytest.raises(ValueError, match="fit: the scheduler's optimizer is not the optimizer fit trains with"):
        model.fit(x, y, optimizer=optim.SGD(model.parameters(), lr=0.1), scheduler=schedule, verbose=0)


# ---------------------------------------------------------------------------- schedules by name
@pytest.mark.parametrize("name,expected", [
    ("cosine", lambda lr, epoch, epochs: lr * (1 + np.cos(np.pi * epoch / epochs)) / 2),
    ("step", lambda lr, epoch, epochs: lr * 0.1 ** (epoch // 2)),                      # step_size epochs // 3
])
def test_fit_takes_a_schedule_by_name(name, expected):
    x, y = _data(8)
    history = _tiny().fit(x, y, optimizer="sgd", lr=0.1, scheduler=name, epochs=6, verbose=0)
    assert history["lr"] == pytest.approx([expected(0.1, epoch, 6) for epoch in range(6)])


def test_fit_takes_plateau_by_name_watching_val_loss_when_there_is_validation_data():
    x, y = _data(16)
    history = _tiny().fit(x, y, optimizer="sgd", lr=0.1, scheduler="plateau", epochs=2, verbose=0,
                          validation_split=0.25)
    assert isinstance(history.optimizer, optim.SGD) and len(history["lr"]) == 2
    history = _tiny().fit(x, y, optimizer="sgd", lr=0.1, scheduler="plateau", epochs=2, verbose=0)
    assert len(history["lr"]) == 2                               # monitors "loss" without validation data


# ---------------------------------------------------------------------------- History
def test_history_is_a_read_only_mapping_that_plot_history_takes(tmp_path):
    x, y = _data(8)
    model = _tiny()
    history = model.fit(x, y, optimizer="sgd", epochs=2, verbose=0)
    assert isinstance(history, History)
    assert "loss" in history and len(history) == len(history.history) and list(history) == list(history.history)
    assert dict(history) == history.history and history.epochs == [1, 2] and history.optimizer is not None
    with pytest.raises(TypeError):
        history["loss"] = []                                     # read-only
    from xpcnn.plots import plot_history
    assert plot_history(history, tmp_path / "curves.png").exists()


# ---------------------------------------------------------------------------- layouts and seeds
def test_channels_last_data_for_a_lazy_model_gets_the_nchw_hint():
    rng = np.random.default_rng(0)
    nhwc, labels = rng.standard_normal((4, 8, 8, 3)), rng.integers(0, 3, 4)

    def lazy():
        return xpcnn.Sequential([L.Conv2D(2, 3), L.Flatten(), L.Dense(3)], seed=0)

    with pytest.warns(UserWarning, match=r"fit: x has shape \(4, 8, 8, 3\), which looks like NHWC \(channels "
                                         r"last\); xpcnn takes NCHW .*x.transpose\(0, 3, 1, 2\)"):
        lazy().fit(nhwc, labels, optimizer="sgd", verbose=0)
    with pytest.warns(UserWarning, match=r"predict: x has shape \(4, 8, 8, 3\), which looks like NHWC"):
        lazy().predict(nhwc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lazy().fit(nhwc.transpose(0, 3, 1, 2), labels, optimizer="sgd", verbose=0)


def test_a_seeded_model_trains_alike_on_every_run_without_a_fit_seed():
    """The README's example: Sequential(seed=0), then fit without seed= shuffles from the model's generator."""
    x, y = _data(24)
    runs = [_tiny(seed=0).fit(x, y, optimizer="adam", epochs=2, batch_size=5, verbose=0)["loss"] for _ in range(2)]
    assert runs[0] == runs[1]
    other = _tiny(seed=0).fit(x, y, optimizer="adam", epochs=2, batch_size=5, verbose=0, seed=123)["loss"]
    assert other != runs[0]                                      # the order did change with another seed


def test_resuming_a_file_of_an_optimizer_over_some_parameters_sizes_its_state_by_those_parameters(tmp_path):
    """The state entries of a file are numbered by the optimizer's own parameters: an optimizer over the
    last layer only has entry 0 as large as that layer's weight, larger than the model's first parameter."""
    x, y = _data()
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 2), L.ReLU(), L.Dense(2, 8)], seed=0)
    head = model.layers[3]                                    # weight (8, 2): twice the first layer's (2, 4)
    model.fit(x, y, optimizer=optim.Adam([head.weight, head.bias]), epochs=1, batch_size=4, verbose=0,
              callbacks=[ModelCheckpoint(tmp_path / "ck.npz")])
    again = xpcnn.Sequential([L.Flatten(), L.Dense(4, 2), L.ReLU(), L.Dense(2, 8)], seed=1)
    resumed = optim.Adam([again.layers[3].weight, again.layers[3].bias])
    again.fit(x, y, optimizer=resumed, epochs=2, batch_size=4, verbose=0, resume=tmp_path / "ck.npz")
    assert resumed.state[0]["exp_avg"].shape == (8, 2)


def test_fit_clips_through_the_optimizer_for_that_fit_only():
    """fit(clip_grad_norm=c) trains as an optimizer made with clip_grad_norm=c, and hands the optimizer back
    with its own setting, after a completed fit and after a failed one."""
    x, y = _data(8)
    runs = []
    for given, own in ((0.01, None), (None, 0.01)):
        model = _tiny()
        opt = optim.SGD(model.parameters(), lr=0.5, clip_grad_norm=own)
        model.fit(x, y, optimizer=opt, epochs=2, batch_size=4, verbose=0, clip_grad_norm=given)
        assert opt.clip_grad_norm == own
        runs.append(model.state_dict())
    _state_equal(runs[0], runs[1])

    def failing(logits, labels):
        raise RuntimeError("a loss that fails")

    model = _tiny()
    opt = optim.SGD(model.parameters(), lr=0.5)
    with pytest.raises(RuntimeError, match="a loss that fails"):
        model.fit(x, y, optimizer=opt, loss=failing, clip_grad_norm=0.01, verbose=0)
    assert opt.clip_grad_norm is None

    # a checkpoint of a clipping fit holds its clip; resuming it without one hands the optimizer back as it came
    model = _tiny()
    opt = optim.SGD(model.parameters(), lr=0.5)
    model.fit(x, y, optimizer=opt, epochs=1, batch_size=4, verbose=0, clip_grad_norm=0.01,
              callbacks=[xpcnn.callbacks.ModelCheckpoint("clipped.npz")])
    model.fit(x, y, optimizer=opt, epochs=2, batch_size=4, verbose=0, resume="clipped.npz")
    assert opt.clip_grad_norm is None


# ---------------------------------------------------------------------------- fit and predict conveniences
def _lenet8(backend="numpy", dtype="float64"):
    return xpcnn.zoo.lenet(image_size=8, width=3, dropout=0.0, seed=4, dtype=dtype, backend=backend)


def _images(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)), rng.integers(0, 10, n)


def test_fit_clips_to_the_given_norm():
    x, labels = _images(16)
    a, b = _lenet8(), _lenet8()
    a.fit(x, labels, optimizer=optim.SGD(a.parameters(), lr=0.1), batch_size=16, shuffle=False, verbose=0,
          clip_grad_norm=0.01)
    opt = optim.SGD(b.parameters(), lr=0.1)
    b.zero_grad()
    b.backward(F.softmax_cross_entropy(b(x), labels)[1], need_dx=False)
    optim.clip_grad_norm(b.parameters(), 0.01)
    opt.step()
    for key, value in b.state_dict().items():
        np.testing.assert_allclose(a.state_dict()[key], value, rtol=1e-12, err_msg=key)


def test_fit_steps_reduce_lr_on_plateau_with_the_monitored_value_and_resumes(tmp_path):
    x, labels = _images(32)
    model = _lenet8()
    opt = optim.SGD(model.parameters(), lr=0.5)
    schedule = optim.ReduceLROnPlateau(opt, monitor="val_loss", patience=0, factor=0.5)
    history = model.fit(x, labels, optimizer=opt, scheduler=schedule, epochs=4, validation_split=0.25, verbose=0)
    replay = optim.ReduceLROnPlateau(optim.SGD(_lenet8().parameters(), lr=0.5), monitor="val_loss", patience=0,
                                     factor=0.5)
    expected = [0.5] + [replay.step(v) for v in history["val_loss"][:-1]]
    assert history["lr"] == pytest.approx(expected)
    path = model.save(tmp_path / "c.npz", optimizer=opt, scheduler=schedule)
    restored = xpcnn.load_checkpoint(path).scheduler
    assert (restored.best, restored.num_bad_epochs, restored.optimizer.lr) == (schedule.best, schedule.num_bad_epochs,
                                                                              opt.lr)
    with pytest.raises(ValueError, match="monitors 'val_loss', which needs validation_data"):
        model.fit(x, labels, optimizer=opt, scheduler=schedule, verbose=0)


def test_fit_takes_an_optimizer_by_name():
    x, labels = _images(16)
    a, b = _lenet8(), _lenet8()
    history = a.fit(x, labels, optimizer="adam", lr=0.01, epochs=2, seed=1, verbose=0)
    b.fit(x, labels, optimizer=optim.Adam(b.parameters(), lr=0.01), epochs=2, seed=1, verbose=0)
    assert isinstance(history.optimizer, optim.Adam) and history.optimizer.lr == 0.01
    for key, value in b.state_dict().items():
        np.testing.assert_array_equal(a.state_dict()[key], value, err_msg=key)
    assert _lenet8().fit(x, labels, optimizer="sgd", verbose=0).optimizer.lr == 0.01


def test_fit_builds_a_lazy_model_before_making_its_optimizer():
    model = xpcnn.Sequential([L.Conv2D(2, 3), L.MaxPool2D(2), L.Flatten(), L.Dense(10)], seed=0)
    x, labels = _images(8)
    model.fit(x, labels, optimizer="sgd", lr=0.1, verbose=0)
    assert model.built and model[3].in_features == 18


def test_validation_split_is_the_last_fraction():
    x, labels = _images(20)
    a, b = _lenet8(), _lenet8()
    split = a.fit(x, labels, optimizer="sgd", lr=0.1, epochs=2, seed=0, verbose=0, validation_split=0.25)
    explicit = b.fit(x[:15], labels[:15], optimizer="sgd", lr=0.1, epochs=2, seed=0, verbose=0,
                     validation_data=(x[15:], labels[15:]))
    assert split["val_loss"] == explicit["val_loss"] and split["loss"] == explicit["loss"]


@pytest.mark.parametrize("kwargs,message", [
    (dict(optimizer="nope"), "optimizer must be an xpcnn.optim optimizer or one of sgd, adagrad, rmsprop, adam"),
    (dict(optimizer="adam", lr=-1), "lr must be a positive number, got -1"),
    (dict(optimizer="adam", validation_split=1.0), r"validation_split must be a fraction in \(0, 1\), got 1.0"),
    (dict(optimizer="adam", validation_split=0.001), "leaves no validation samples"),
    (dict(optimizer="adam", validation_split=0.5, validation_data=_images(4)), "not both"),
    (dict(optimizer="adam", clip_grad_norm=0), "clip_grad_norm must be a positive number"),
])
def test_bad_fit_conveniences_change_nothing(kwargs, message):
    model = _lenet8()
    before = model.state_dict()
    x, labels = _images(8)
    with pytest.raises(ValueError, match=message):
        model.fit(x, labels, verbose=0, **kwargs)
    for key, value in before.items():
        np.testing.assert_array_equal(model.state_dict()[key], value)


def test_lr_with_an_optimizer_object_is_refused():
    model = _lenet8()
    with pytest.raises(ValueError, match="lr= goes with an optimizer given by name"):
        model.fit(*_images(4), optimizer=optim.SGD(model.parameters(), lr=0.1), lr=0.5, verbose=0)


def test_predict_probabilities_and_single_samples(backend):
    model = _lenet8(backend, dtype="float32")
    x, _ = _images(5)
    logits = model.predict(x)
    probabilities = model.predict(x, probabilities=True)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probabilities, shifted / shifted.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
    single = model.predict(x[2])
    assert single.shape == (10,)
    np.testing.assert_allclose(single, logits[2], rtol=1e-5, atol=1e-6)
    known = xpcnn.Sequential([L.Flatten(), L.Dense(10)], seed=0, input_shape=(1, 8, 8))
    assert known.predict(x[0]).shape == (10,) and known.predict(x[:2]).shape == (2, 10)
