"""The CPU stand-in for a second GPU: the whole pipeline on array_api_strict.Device("device1"), which refuses
to mix devices and to convert implicitly to NumPy. Every array xpcnn creates is recorded: all must be on
device1 (an array made on the default device, even one never mixed, would be a bug on a second GPU)."""
import collections

import numpy as np
import pytest

import xpcnn
from xpcnn import functional as F, layers as L, optim, teach
from xpcnn.callbacks import EarlyStopping, MetricsLogger, ModelCheckpoint

strict = pytest.importorskip("array_api_strict")
from array_api_strict._array_object import Array  # noqa: E402  (the class that records each array's device)

DEVICE = strict.Device("device1")
SECOND = xpcnn.Backend("array_api_strict", strict, DEVICE)


@pytest.fixture
def devices(monkeypatch):
    """A Counter of the devices of every array_api_strict array created while the test runs."""
    seen = collections.Counter()
    original = Array._new.__func__

    def recording(cls, x, /, device):
        seen[str(device)] += 1
        return original(cls, x, device=device)

    monkeypatch.setattr(Array, "_new", classmethod(recording))
    return seen


def _only_device1(seen):
    assert set(seen) == {str(DEVICE)}, dict(seen)
    seen.clear()


def _model():
    return xpcnn.Sequential([L.Conv2D(1, 4, 3, padding=1), L.BatchNorm2D(4), L.ReLU(), L.MaxPool2D(2),
                             L.Conv2D(4, 4, 3, padding="same", groups=2), L.Tanh(), L.AvgPool2D(2),
                             L.Flatten(), L.Dropout(0.3), L.Dense(16, 8), L.Sigmoid(), L.Dense(8, 3)],
                            backend=SECOND, seed=0)


OPTIMIZERS = [
    lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda p: optim.Adagrad(p, lr=0.05, weight_decay=1e-3),
    lambda p: optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True, weight_decay=1e-3),
    lambda p: optim.Adam(p, weight_decay=1e-3, amsgrad=True),
    lambda p: optim.AdamW(p),
]


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS, ids=["sgd", "adagrad", "rmsprop", "adam", "adamw"])
def test_training_with_every_optimizer_and_schedule_stays_on_the_second_device(devices, make_optimizer, tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 20)
    model = _model()
    optimizer = make_optimizer(model.parameters())
    for schedule in (optim.StepLR(optimizer, 1, gamma=0.5), optim.CosineAnnealingLR(optimizer, T_max=4)):
        model.fit(x, y, optimizer=optimizer, scheduler=schedule, epochs=2, batch_size=6, validation_data=(x, y),
                  callbacks=[ModelCheckpoint(tmp_path / "c.npz"), MetricsLogger(tmp_path / "m.csv"),
                             EarlyStopping(patience=5)], verbose=0)
    _only_device1(devices)


def test_the_whole_pipeline_stays_on_the_second_device(devices, tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((20, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 20)
    model = _model()
    logits = model(x)                                              # forward and backward by hand
    _, dlogits = F.softmax_cross_entropy(logits, xpcnn.to_backend(y, SECOND))
    model.backward(dlogits)
    assert all(p.grad.device == DEVICE for p in model.parameters())
    _only_device1(devices)

    optimizer = optim.Adam(model.parameters())                     # fit, evaluate, predict, save
    model.fit(x, y, optimizer=optimizer, epochs=1, batch_size=8, verbose=0,
              callbacks=[ModelCheckpoint(tmp_path / "c.npz")])
    model.evaluate(x, y)
    model.predict(x)
    model.save(tmp_path / "m.npz", optimizer=optimizer, epoch=1)
    _only_device1(devices)

    checkpoint = xpcnn.load_checkpoint(tmp_path / "c.npz", SECOND)  # load and resume
    checkpoint.model.fit(x, y, optimizer=checkpoint.optimizer, epochs=2, resume=checkpoint, verbose=0)
    again = xpcnn.load(tmp_path / "m.npz", backend=SECOND)
    again.load_state_dict(model.state_dict())                       # state_dict round trip
    np.testing.assert_array_equal(xpcnn.to_numpy(again.predict(x)), xpcnn.to_numpy(model.predict(x)))
    _only_device1(devices)

    xs = xpcnn.to_backend(rng.standard_normal((2, 2, 5, 5)), SECOND)     # gradcheck, float64
    ws = xpcnn.to_backend(rng.standard_normal((3, 2, 3, 3)), SECOND)
    xpcnn.gradcheck(F.conv2d_forward, F.conv2d_backward, (xs, ws, None), forward_kwargs={"padding": 1})
    _only_device1(devices)


@pytest.mark.parametrize("name", list(teach.EXAMPLES))
def test_every_teaching_example_stays_on_the_second_device(devices, name, tmp_path):
    options = {"out": str(tmp_path / "o.png")} if name == "optimizers" else {}
    teach.run(name, backend=SECOND, **options)
    _only_device1(devices)
