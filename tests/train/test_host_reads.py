"""GPU readiness, proven on the CPU: device-to-host reads counted on the torch backend with a
TorchFunctionMode (xpcnn.testing.Transfers). A read is a GPU synchronisation; a training step makes none."""
import numpy as np
import pytest

import xpcnn
from xpcnn import layers as L, optim

torch = pytest.importorskip("torch")
from xpcnn.testing import KernelLaunches, MaskIndexSyncs, Transfers  # noqa: E402  (needs torch)


def _every_layer_type(backend="torch"):
    block = xpcnn.Sequential([L.Conv2D(4, 4, 3, padding=1), L.BatchNorm2D(4), L.ReLU()])
    return xpcnn.Sequential([
        L.Conv2D(1, 4, 3, padding=1, activation="relu"), L.BatchNorm2D(4), L.LeakyReLU(0.1), L.MaxPool2D(2),
        L.Residual(block), L.Residual(L.Conv2D(4, 4, 1), shortcut=L.Conv2D(4, 4, 1)),
        L.Conv2D(4, 4, 3, padding="same", groups=2), L.Sigmoid(), L.AvgPool2D(2, padding=1),
        L.Conv2D(4, 6, 1), L.Tanh(), L.GlobalAvgPool2D(), L.Dropout(0.3), L.Dense(6, 8, activation="tanh"),
        L.BatchNorm1D(8), L.ReLU(), L.Dense(8, 3), L.Softmax()], backend=backend, seed=0)


OPTIMIZERS = [
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
    lambda p: optim.Adagrad(p, lr=0.1, weight_decay=1e-4),
    lambda p: optim.RMSprop(p, lr=0.01, momentum=0.9, centered=True, weight_decay=1e-4),
    lambda p: optim.Adam(p, lr=1e-3, weight_decay=1e-4, amsgrad=True),
    lambda p: optim.AdamW(p, lr=1e-3),
]


@pytest.mark.parametrize("few_launches", ["off", "on"])
@pytest.mark.parametrize("make_optimizer", OPTIMIZERS, ids=["sgd", "adagrad", "rmsprop", "adam", "adamw"])
def test_a_training_step_reads_nothing_copies_nothing_and_indexes_no_mask(make_optimizer, few_launches):
    """After a warm-up step (which creates the optimizer's state): no device read, no tensor made from host
    data (a Python number or list becoming a tensor: on a GPU a blocking copy), no boolean-mask indexing,
    through every layer type, both losses, gradient clipping, a schedule's new learning rate and
    RandomShift on the device; in the CPU forms and the GPU (few-launch) forms."""
    from xpcnn import config, functional as F
    from xpcnn.datasets import RandomShift
    from xpcnn.train.metrics import accuracy_count as _accuracy_count, batch_loss as _batch_loss
    model = _every_layer_type()
    optimizer = make_optimizer(model.parameters())
    schedule = optim.StepLR(optimizer, 1, gamma=0.5)
    rng = np.random.default_rng(0)
    x = xpcnn.to_backend(rng.standard_normal((5, 1, 8, 8)).astype(np.float32), "torch")
    y = xpcnn.to_backend(rng.integers(0, 3, 5), "torch")
    shift = RandomShift(2)
    offsets = xpcnn.to_backend(shift.draw(rng, 5), "torch")
    targets = xpcnn.to_backend(rng.standard_normal((5, 3)).astype(np.float32), "torch")
    step_loss = _batch_loss(F.softmax_cross_entropy)
    for step in range(3):                               # the first step creates the state; the others reuse it
        with Transfers() as transfers, MaskIndexSyncs() as masks, config.using(few_launches=few_launches):
            logits = model(shift.apply(x, offsets))
            loss, dlogits = step_loss(logits, y) if step != 2 else F.mse_loss(logits, targets)
            model.zero_grad()
            model.backward(dlogits, need_dx=False)
            optim.clip_grad_norm(model.parameters(), 1.0)
            optimizer.step()
            _accuracy_count(logits, y)
        assert transfers.read_calls == []
        if step:
            assert transfers.write_calls == [] and masks.calls == []
        schedule.step()


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


def test_the_counters_count_tensors_made_from_host_data_and_mask_indexing():
    x = torch.ones(3)
    with Transfers() as transfers, MaskIndexSyncs() as masks:
        torch.asarray(0.0), torch.tensor([1.0, 2.0]), torch.as_tensor(np.ones(2)), torch.from_numpy(np.ones(4))
        torch.scalar_tensor(1.0), torch.where(x > 0, x, 0.0)
        x * 0.5, x + 1, torch.zeros(2), torch.full((2,), 3.0), torch.where(x > 0, x, x)   # none of these
        x[x > 1], torch.nonzero(x), torch.masked_select(x, x > 0), x[torch.arange(2)]
        x[x > 2] = 0.0                                     # the mask, and the 0.0 made a tensor
    assert transfers.write_calls == ["lift_fresh"] * 4 + ["scalar_tensor"] * 2 + ["lift_fresh"]
    assert transfers.write_shapes == [(), (2,), (2,), (4,), (), (), ()]
    assert masks.calls == ["index", "nonzero", "masked_select", "index_put_"]


@pytest.mark.parametrize("dropout_rng", ["device", "host"])
def test_dropout_masks_are_drawn_on_the_device_unless_asked_for_host_masks(dropout_rng):
    """Host-to-device copies per step: none from dropout (the torch generator draws on the tensor's device);
    with dropout_rng="host", one mask per dropout layer. (The first call makes the 0-d constants of the
    mask's select, once per place: it is not counted.)"""
    model = xpcnn.Sequential([L.Flatten(), L.Dropout(0.5), L.Dense(4, 3)], backend="torch", seed=0,
                             dropout_rng=dropout_rng)
    x = xpcnn.to_backend(np.ones((4, 1, 2, 2), dtype=np.float32), "torch")
    model(x)
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
    with Transfers() as transfers, MaskIndexSyncs() as masks:
        model.fit(x, y, optimizer=optim.SGD(model.parameters(), lr=0.1), batch_size=4, epochs=2, verbose=0,
                  augment=RandomShift(1))
    assert sorted(transfers.write_shapes) == sorted([(12, 1, 2, 2), (12,)] + [(12,), (12, 2)] * 2)
    assert masks.calls == []
    assert transfers.reads == 2                          # once at each epoch's end


def test_random_shift_with_cupys_clip_indexes_no_mask_and_makes_no_host_tensor(monkeypatch):
    """CuPy's namespace gets array-api-compat's generic clip, which assigns through boolean masks (CuPy reads
    each mask's count back to the host) and makes its bounds from Python numbers; torch's has its own clamp.
    The stand-in: the shift on torch tensors with torch's clip replaced by the generic one, as CuPy has it."""
    import functools
    import array_api_compat.torch as compat_torch
    from array_api_compat.common import _aliases
    from xpcnn.datasets import RandomShift
    monkeypatch.setattr(compat_torch, "clip", functools.partial(_aliases.clip, xp=torch))
    with MaskIndexSyncs() as masks:                      # the stand-in counts what CuPy would sync on
        compat_torch.clip(torch.arange(5), 1, 3)
    assert masks.calls == ["index", "index_put_"] * 2     # out[mask] = bound[mask], per bound
    shift = RandomShift(2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 5, 6)).astype(np.float32)
    offsets = shift.draw(rng, 3)
    expected = shift.apply(x, offsets)                   # NumPy, the same formula
    xs, device_offsets = xpcnn.to_backend(x, "torch"), xpcnn.to_backend(offsets, "torch")
    shift.apply(xs, device_offsets)
    with Transfers() as transfers, MaskIndexSyncs() as masks:
        shifted = shift.apply(xs, device_offsets)
    assert masks.calls == [] and transfers.write_calls == []
    np.testing.assert_array_equal(xpcnn.to_numpy(shifted), expected)
