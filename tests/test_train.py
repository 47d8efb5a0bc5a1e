import csv
import json

import numpy as np
import pytest

import xpcnn
from xpcnn import optim
from xpcnn.datasets import images_to_float, load_mnist_sample, random_shift
from xpcnn.zoo import lenet
from xpcnn.train import EarlyStopping, MetricsLogger, ModelCheckpoint, TrainingDiverged


@pytest.fixture(scope="module")
def digits():
    (x, y), (xt, yt) = load_mnist_sample()
    x, mean, std = images_to_float(x[:600])
    xt, _, _ = images_to_float(xt[:200], mean, std)
    return x, y[:600].astype(np.int64), xt, yt[:200].astype(np.int64)


def _model(seed=0, backend="numpy"):
    return lenet(width=4, dropout=0.25, seed=seed, backend=backend)


def test_fit_learns_and_reports_metrics(digits):
    x, y, xt, yt = digits
    model = _model()
    before = model.evaluate(xt, yt)["accuracy"]
    history = model.fit(x, y, optimizer=optim.Adam(model.parameters(), lr=3e-3), epochs=3, batch_size=32,
                        validation_data=(xt, yt), seed=0, progress=False)
    assert history.epochs == [1, 2, 3]
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_accuracy"][-1] > max(0.6, before + 0.3)
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "images_per_s"}
    predictions = model.predict(xt)
    assert predictions.shape == (200, 10) and isinstance(predictions, np.ndarray)
    assert np.mean(predictions.argmax(axis=1) == yt) == pytest.approx(history["val_accuracy"][-1])
    assert model.training


def test_training_on_another_backend_gives_the_same_run(backend, digits):
    x, y, xt, yt = digits
    runs = []
    for name in ("numpy", backend.name):
        model = lenet(width=3, dropout=0.25, seed=1, backend=name, dtype="float64")
        model.noise.host = True                    # the same dropout masks on both backends
        history = model.fit(x[:128], y[:128], optimizer=optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                            epochs=2, batch_size=32, seed=2, progress=False,
                            augment=lambda xb, rng: random_shift(xb, rng, 1))
        runs.append((history["loss"], model.state_dict()))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-10)
    for key, value in runs[0][1].items():
        np.testing.assert_allclose(runs[1][1][key], value, rtol=1e-9, atol=1e-12, err_msg=key)


def _train(x, y, epochs, path=None, resume=None):
    model = _model(seed=5)
    opt = optim.Adam(model.parameters(), lr=2e-3)
    schedule = optim.CosineAnnealingLR(opt, T_max=4)
    callbacks = [ModelCheckpoint(path)] if path else []
    model.fit(x, y, optimizer=opt, scheduler=schedule, epochs=epochs, batch_size=50, seed=9, progress=False,
              callbacks=callbacks, augment=lambda xb, rng: random_shift(xb, rng, 2), resume=resume)
    return model


def test_two_plus_two_epochs_equal_four_epochs_bit_for_bit(digits, tmp_path):
    x, y = digits[0][:300], digits[1][:300]
    straight = _train(x, y, 4)
    _train(x, y, 2, path=tmp_path / "ckpt.npz")
    resumed = _train(x, y, 4, resume=tmp_path / "ckpt.npz")
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)
    assert xpcnn.load_checkpoint(tmp_path / "ckpt.npz").epoch == 2


def test_nan_loss_stops_with_the_epoch_and_batch_named_and_restores_weights(digits, tmp_path):
    from xpcnn import functional as F
    x, y = digits[0][:200], digits[1][:200]
    model = _model()
    calls = []

    def loss_turning_nan(logits, labels):          # 10 batches per epoch: call 13 is epoch 2, batch 3
        calls.append(1)
        loss, dlogits = F.softmax_cross_entropy(logits, labels)
        return (loss * float("nan"), dlogits) if len(calls) == 13 else (loss, dlogits)

    path = tmp_path / "last.npz"
    with pytest.raises(TrainingDiverged, match=r"the loss became nan by epoch 2, batch 3 \(losses are read every "
                                               r"step and at each epoch's end\); the model was restored to the end "
                                               r"of epoch 1"):
        model.fit(x, y, optimizer=optim.Adam(model.parameters()), loss=loss_turning_nan, epochs=3, batch_size=20,
                  seed=0, progress=False, callbacks=[ModelCheckpoint(path)], log_every=1)
    saved = xpcnn.load_checkpoint(path)
    assert saved.epoch == 1
    for key, value in saved.model.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key], value, err_msg=key)
    calls.clear()                                  # read every 50 steps: found at the end of epoch 2 (batch 10)
    with pytest.raises(TrainingDiverged, match=r"by epoch 2, batch 10 \(losses are read every 50 steps"):
        model.fit(x, y, optimizer=optim.Adam(model.parameters()), loss=loss_turning_nan, epochs=3, batch_size=20,
                  seed=0, progress=False, verbose=0)


def test_nan_inputs_are_refused_before_training(digits):
    x, y = digits[0][:20].copy(), digits[1][:20]
    x[3, 0, 1, 1] = np.nan
    model = _model()
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"fit: x contains NaN or infinity \(first in sample 3\)"):
        model.fit(x, y, optimizer=optim.SGD(model.parameters(), lr=0.1), progress=False)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_early_stopping_and_metrics_log(digits, tmp_path):
    x, y, xt, yt = digits
    model = _model()
    stopper = EarlyStopping(monitor="val_loss", patience=0, min_delta=10.0)
    history = model.fit(x[:100], y[:100], optimizer=optim.Adam(model.parameters()), epochs=5, batch_size=50,
                        validation_data=(xt[:50], yt[:50]), progress=False,
                        callbacks=[stopper, MetricsLogger(tmp_path / "m.csv"), MetricsLogger(tmp_path / "m.json")])
    assert history.epochs == [1, 2] and stopper.stopped_epoch == 2
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert json.loads((tmp_path / "m.json").read_text())["val_loss"] == history["val_loss"]


def test_fit_refuses_bad_arguments(digits):
    x, y = digits[0][:10], digits[1][:10]
    model = _model()
    with pytest.raises(TypeError, match="optimizer must be an xpcnn.optim optimizer or a name such as 'adam'"):
        model.fit(x, y, optimizer=model.parameters())
    with pytest.raises(ValueError, match="x has 10 samples but y has 9"):
        model.fit(x, y[:9], optimizer=optim.Adam(model.parameters()))
    with pytest.raises(ValueError, match="loss must be one of cross_entropy, mse"):
        model.fit(x, y, optimizer=optim.Adam(model.parameters()), loss="hinge")


def test_fit_prints_a_line_per_epoch_by_default_and_nothing_with_verbose_0(digits, capsys):
    x, y, xt, yt = digits
    model = _model()
    model.fit(x[:64], y[:64], optimizer=optim.SGD(model.parameters(), lr=0.01), epochs=2, batch_size=32,
              progress=False)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    model.fit(x[:64], y[:64], optimizer=optim.SGD(model.parameters(), lr=0.01), epochs=2, batch_size=32,
              progress=False, verbose=0)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="fit: verbose must be 0 .silent. or 1"):
        model.fit(x[:64], y[:64], optimizer=optim.SGD(model.parameters(), lr=0.01), verbose=2)


def test_early_stopping_says_when_and_why_it_stopped(digits, capsys):
    x, y, xt, yt = digits
    model = _model()
    stopper = EarlyStopping(monitor="val_loss", patience=1, min_delta=10.0)
    model.fit(x[:64], y[:64], optimizer=optim.Adam(model.parameters()), epochs=5, batch_size=32,
              validation_data=(xt[:32], yt[:32]), progress=False, callbacks=[stopper])
    out = capsys.readouterr().out
    assert ("early stopping after epoch 2: val_loss has not improved by more than 10 for 1 epoch (best "
            in out) and "at epoch 1)\nearly stopping: restored the weights of epoch 1" in out


def test_an_epoch_at_learning_rate_zero_is_announced(digits):
    x, y, _, _ = digits
    model = _model()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    schedule = optim.CosineAnnealingLR(optimizer, T_max=1)     # lr reaches 0 after epoch 1
    with pytest.warns(UserWarning, match="fit: epoch 2 runs at learning rate 0"):
        model.fit(x[:32], y[:32], optimizer=optimizer, scheduler=schedule, epochs=2, progress=False, verbose=0)


def test_default_initialisation_gives_pytorchs_output_scale(digits):
    """An untrained classifier starts near the uniform loss ln 10, and its outputs spread as PyTorch's defaults
    make them spread (He init gave losses of 4-5). One seed's spread varies 2.5x, so the medians of eight
    seeded networks on each side are compared, the PyTorch twin seeded before it is built."""
    torch = pytest.importorskip("torch")
    x, y, xt, yt = digits
    losses, spreads, references = [], [], []
    for seed in range(8):
        model = lenet(seed=seed)
        losses.append(model.evaluate(xt, yt)["loss"])
        spreads.append(float(np.std(model.predict(xt))))
        torch.manual_seed(seed)
        twin = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                   torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                   torch.nn.Flatten(), torch.nn.Linear(3136, 128), torch.nn.ReLU(),
                                   torch.nn.Linear(128, 10))
        with torch.no_grad():
            references.append(float(twin(torch.tensor(xt)).std()))
    assert all(abs(loss - np.log(10)) < 0.1 for loss in losses), losses
    ratio = np.median(spreads) / np.median(references)
    assert 1 / 1.5 < ratio < 1.5, (spreads, references)
