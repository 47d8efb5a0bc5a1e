"""GPU readiness, proven on the CPU: device-to-host reads counted on the torch backend with a
TorchFunctionMode (xpcnn.testing.Transfers). A read is a GPU synchronisation; a training step makes none."""
import numpy as np
import pytest

import xpcnn
from xpcnn import layers as L, optim

torch = pytest.importorskip("torch")
from xpcnn.testing import KernelLaunches, Transfers  # noqa: E402  (needs torch)


def _every_layer_type():
    return xpcnn.Sequential([
        L.Conv2D(1, 4, 3, padding=1), L.BatchNorm2D(4), L.LeakyReLU(0.1), L.MaxPool2D(2),
        L.Conv2D(4, 4, 3, padding="same", groups=2), L.Sigmoid(), L.AvgPool2D(2, padding=1),
        L.Conv2D(4, 6, 1), L.Tanh(), L.GlobalAvgPool2D(), L.Dropout(0.3), L.Dense(6, 8), L.ReLU(),
        L.Dense(8, 3)], backend="torch", seed=0)


OPTIMIZERS = [
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
    lambda p: optim.Adagrad(p, lr=0.1, weight_decay=1e-4),
    lambda p: optim.RMSprop(p, lr=0.01, momentum=0.9, centered=True, weight_decay=1e-4),
    lambda p: optim.Adam(p, lr=1e-3, weight_decay=1e-4, amsgrad=True),
    lambda p: optim.AdamW(p, lr=1e-3),
]


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS, ids=["sgd", "adagrad", "rmsprop", "adam", "adamw"])
def test_a_training_step_reads_nothing_from_the_device(make_optimizer):
    from xpcnn.train.loop import _batch_loss, _accuracy_count
    from xpcnn import functional as F
    model = _every_layer_type()
    optimizer = make_optimizer(model.parameters())
    rng = np.random.default_rng(0)
    x = xpcnn.to_backend(rng.standard_normal((5, 1, 8, 8)).astype(np.float32), "torch")
    y = xpcnn.to_backend(rng.integers(0, 3, 5), "torch")
    step_loss = _batch_loss(F.softmax_cross_entropy)
    for _ in range(2):                                   # the first step creates the state; the second reuses it
        with Transfers() as reads:
            logits = model(x)
            loss, dlogits = step_loss(logits, y)
            model.zero_grad()
            model.backward(dlogits, input_grad=False)
            optimizer.step()
            _accuracy_count(logits, y)
        assert reads.read_calls == []


def test_fit_reads_once_every_log_every_steps_and_once_at_an_epochs_end():
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], backend="torch", seed=0)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((120, 1, 2, 2)).astype(np.float32), rng.integers(0, 3, 120)
    optimizer = optim.Adam(model.parameters())
    with Transfers() as reads:                           # 60 batches, log_every 50: reads after 50 and 60
        model.fit(x, y, optimizer=optimizer, epochs=1, batch_size=2, log_every=50, verbose=0)
    assert reads.reads == 2, reads.read_calls
    with Transfers() as reads:                           # 2 epochs, and validation read once per epoch
        model.fit(x, y, optimizer=optimizer, epochs=2, batch_size=2, log_every=50, verbose=0,
                  validation_data=(x[:10], y[:10]))
    assert reads.reads == 2 * (2 + 1), reads.read_calls
    assert reads.reads / 120 <= 0.25                    # per fit batch, the bound
    with Transfers() as reads:
        model.evaluate(x, y, batch_size=7)               # 18 batches, one read
    assert reads.reads == 1


def test_the_counter_counts():
    """The instrument itself: each kind of read is seen."""
    t = torch.ones(3)
    with Transfers() as reads:
        float(t.sum()), int(t[0]), bool(t[1]), t.tolist(), t.numpy(), t.sum().item(), np.asarray(t)
    assert reads.reads == 7


@pytest.mark.parametrize("dropout_rng", ["device", "host"])
def test_dropout_masks_are_drawn_on_the_device_unless_asked_for_host_masks(dropout_rng):
    """Host-to-device copies per step: none from dropout (the torch generator draws on the tensor's device);
    with dropout_rng="host", one mask per dropout layer."""
    model = xpcnn.Sequential([L.Flatten(), L.Dropout(0.5), L.Dense(4, 3)], backend="torch", seed=0,
                             dropout_rng=dropout_rng)
    x = xpcnn.to_backend(np.ones((4, 1, 2, 2), dtype=np.float32), "torch")
    with Transfers() as transfers:
        model(x)
    assert transfers.write_shapes == ([] if dropout_rng == "device" else [(4, 4)])


def test_kernel_launches_are_counted_exactly_and_views_are_free():
    a = torch.ones(4, 4)
    with KernelLaunches() as launches:
        b = a.reshape(16)[2:5]             # views: no kernel
        a.T.permute(1, 0)
        c = b * 2                          # one
        c.add_(1)                          # in place: one
        torch.cat([c, c])                  # one
        a.T.reshape(16)                    # a reshape that must copy: one (clone)
    assert launches.count == 4 and launches.by_op == {"mul": 1, "add_": 1, "cat": 1, "clone": 1}


def test_fit_with_the_data_on_the_device_copies_nothing_per_step():
    """x and y cross once per fit, the shuffled order (and shift offsets) once per epoch; no step copies."""
    from xpcnn.datasets import RandomShift
    model = xpcnn.Sequential([L.Flatten(), L.Dropout(0.5), L.Dense(4, 3)], backend="torch", seed=0)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((12, 1, 2, 2)).astype(np.float32), rng.integers(0, 3, 12)
    with Transfers() as transfers:
        model.fit(x, y, optimizer=optim.SGD(model.parameters(), lr=0.1), batch_size=4, epochs=2, verbose=0,
                  augment=RandomShift(1))
    assert sorted(transfers.write_shapes) == sorted([(12, 1, 2, 2), (12,)] + [(12,), (12, 2)] * 2)
    assert transfers.reads == 2                          # once at each epoch's end
