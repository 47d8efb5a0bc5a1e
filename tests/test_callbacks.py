"""EarlyStopping's patience and mode (one rule with xpcnn.checks.monitor_mode), and checkpoints that say
what they hold when EarlyStopping restores the best weights."""
import numpy as np
import pytest

import xpcnn
from xpcnn import layers as L, optim
from xpcnn.callbacks import Callback, EarlyStopping, ModelCheckpoint
from xpcnn.checks import monitor_mode


class _Feed(Callback):
    """Replaces the logged value of a metric by a scripted sequence (before EarlyStopping sees it)."""

    def __init__(self, name, values):
        self.name, self.values = name, list(values)

    def on_epoch_end(self, trainer, epoch, logs):
        logs[self.name] = self.values[epoch - 1]


def _fit(values, stopper, name="loss", epochs=8):
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0)
    rng = np.random.default_rng(0)
    history = model.fit(rng.standard_normal((6, 1, 2, 2)), rng.integers(0, 3, 6), optimizer="sgd", epochs=epochs,
                        verbose=0, callbacks=[_Feed(name, values), stopper])
    return history.epochs


@pytest.mark.parametrize("patience,stops_after", [(0, 2), (1, 2), (2, 3), (3, 4)])
def test_patience_counts_epochs_without_improvement_as_keras_does(patience, stops_after):
    stopper = EarlyStopping(monitor="loss", patience=patience)
    assert _fit([1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0], stopper) == list(range(1, stops_after + 1))
    assert stopper.stopped_epoch == stops_after and stopper.best_epoch == 1


def test_mode_says_which_way_is_better_and_auto_reads_the_name():
    rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    assert _fit(rising, EarlyStopping(monitor="loss", patience=1)) == [1, 2]                  # auto: min
    assert _fit(rising, EarlyStopping(monitor="loss", patience=1, mode="max")) == list(range(1, 9))
    assert _fit(rising, EarlyStopping(monitor="accuracy", patience=1), "accuracy") == list(range(1, 9))  # max
    assert _fit(rising, EarlyStopping(monitor="accuracy", patience=1, mode="min"), "accuracy") == [1, 2]
    assert [monitor_mode("x", m) for m in ("val_loss", "val_acc", "val_accuracy", "loss")] == ["min", "max", "max",
                                                                                             "min"]
    with pytest.raises(ValueError, match="EarlyStopping: mode must be 'auto', 'min' or 'max', got 'up'"):
        EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="EarlyStopping: patience must be an int >= 0, got -1"):
        EarlyStopping(patience=-1)


def test_an_early_stopping_instance_starts_afresh_in_each_fit():
    stopper = EarlyStopping(monitor="loss", patience=1)
    assert _fit([1.0, 2.0, 2.0, 2.0], stopper, epochs=4) == [1, 2]
    assert _fit([5.0, 4.0, 3.0, 2.0], stopper, epochs=4) == [1, 2, 3, 4]   # 5.0 is not worse than the old 1.0


def test_a_checkpoint_after_early_stopping_holds_the_epoch_it_names(tmp_path):
    """Stopping after epoch 2 with the best at epoch 1: each epoch's checkpoint holds that epoch's weights
    and optimizer state, and the model handed back holds epoch 1's."""
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 1, 2, 2)), rng.integers(0, 3, 6)
    opt = optim.Adam(model.parameters(), lr=0.1)
    model.fit(x, y, optimizer=opt, epochs=5, batch_size=3, verbose=0,
              callbacks=[_Feed("loss", [1.0, 2.0, 3.0, 4.0, 5.0]), EarlyStopping(monitor="loss", patience=1),
                         ModelCheckpoint(tmp_path / "e{epoch}.npz"), ModelCheckpoint(tmp_path / "last.npz")])
    first, second, last = (xpcnn.load_checkpoint(tmp_path / name) for name in ("e1.npz", "e2.npz", "last.npz"))
    assert (first.epoch, second.epoch, last.epoch) == (1, 2, 2)
    assert second.optimizer.step_count == 4 and first.optimizer.step_count == 2
    weights = [c.model.state_dict()["1.weight"] for c in (first, second, last)]
    assert not np.array_equal(weights[0], weights[1])               # epoch 2's weights, as the file says
    np.testing.assert_array_equal(weights[2], weights[1])
    np.testing.assert_array_equal(model.state_dict()["1.weight"], weights[0])    # the best, handed back


def test_early_stopping_model_checkpoint_and_reduce_lr_on_plateau_share_one_mode_rule():
    from xpcnn.callbacks import ModelCheckpoint
    opt = optim.SGD([xpcnn.Parameter(np.zeros(2))], lr=1.0)
    for monitor in ("loss", "val_loss", "accuracy", "val_accuracy"):
        for mode in ("auto", "min", "max"):
            expected = monitor_mode("x", monitor, mode)
            sign = 1.0 if expected == "max" else -1.0
            assert EarlyStopping(monitor=monitor, mode=mode).sign == sign
            assert ModelCheckpoint("c.npz", monitor=monitor, mode=mode).sign == sign
            assert optim.ReduceLROnPlateau(opt, monitor=monitor, mode=mode).mode == expected
    for owner, make in (("ModelCheckpoint", lambda: ModelCheckpoint("c.npz", monitor="loss", mode="up")),
                        ("ReduceLROnPlateau", lambda: optim.ReduceLROnPlateau(opt, mode="up"))):
        with pytest.raises(ValueError, match=f"{owner}: mode must be 'auto', 'min' or 'max', got 'up'"):
            make()


@pytest.mark.parametrize("monitor,mode,saved", [("loss", "auto", [1, 3]), ("loss", "max", [1, 2, 4]),
                                                ("accuracy", "auto", [1, 2, 4])])
def test_a_checkpoint_with_a_monitor_saves_only_the_best_epochs(tmp_path, monitor, mode, saved):
    """Keras' save_best_only: an epoch is written when its value beats every earlier one, the mode's way."""
    values = [1.0, 2.0, 0.5, 3.0, 0.7]
    _fit(values, ModelCheckpoint(tmp_path / "e{epoch}.npz", monitor=monitor, mode=mode), name=monitor, epochs=5)
    assert sorted(int(p.stem[1:]) for p in tmp_path.glob("e*.npz")) == saved
    with pytest.raises(ValueError, match=r"ModelCheckpoint: metric 'val_loss' is not logged; have \["):
        _fit(values, ModelCheckpoint(tmp_path / "v.npz", monitor="val_loss"), epochs=1)


def test_a_resumed_checkpoint_with_a_monitor_does_not_overwrite_a_better_epoch(tmp_path):
    """The best so far starts from the resumed run's history, not from scratch (the first epoch after a resume
    would otherwise overwrite a better file at a fixed path)."""
    saves = []

    class Resumed:                                   # what ModelCheckpoint sees of a trainer resumed at epoch 2
        is_main = True
        history = xpcnn.train.History({"epoch": [1, 2], "loss": [1.0, 0.5]})

        def save(self, path, metadata=None):
            saves.append(path)

    checkpoint, trainer = ModelCheckpoint(tmp_path / "best.npz", monitor="loss"), Resumed()
    checkpoint.on_train_begin(trainer)
    checkpoint.on_epoch_end(trainer, 3, {"loss": 0.9})
    assert saves == []
    checkpoint.on_epoch_end(trainer, 4, {"loss": 0.4})
    assert saves == [str(tmp_path / "best.npz")]


def test_a_schedule_callback_steps_its_schedule_each_epoch_and_refuses_a_non_schedule():
    from xpcnn.callbacks import LRSchedule
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0)
    opt = optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(0)
    history = model.fit(rng.standard_normal((6, 1, 2, 2)), rng.integers(0, 3, 6), optimizer=opt, epochs=3,
                        verbose=0, callbacks=[LRSchedule(optim.StepLR(opt, step_size=1, gamma=0.5))])
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.025]) and opt.lr == pytest.approx(0.0125)
    with pytest.raises(TypeError, match="LRSchedule: expected an xpcnn.optim schedule, got SGD"):
        LRSchedule(opt)


def test_reduce_lr_on_plateau_also_works_through_a_keras_style_callback():
    from xpcnn.callbacks import LRSchedule
    from xpcnn.optim import ReduceLROnPlateau
    from xpcnn.zoo import lenet

    def small_lenet():
        return lenet(image_size=8, width=3, dropout=0.0, seed=4, dtype="float64")

    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((32, 1, 8, 8)), rng.integers(0, 10, 32)
    runs = []
    for as_callback in (False, True):
        model = small_lenet()
        opt = optim.SGD(model.parameters(), lr=0.5)
        schedule = ReduceLROnPlateau(opt, monitor="loss", patience=0, factor=0.5, threshold=0.5)
        kwargs = {"callbacks": [LRSchedule(schedule)]} if as_callback else {"scheduler": schedule}
        runs.append(model.fit(x, labels, optimizer=opt, epochs=4, verbose=0, seed=0, **kwargs)["lr"])
    assert runs[0] == runs[1] and len(set(runs[0])) > 1           # the rate did drop
    with pytest.raises(ValueError, match="ReduceLROnPlateau monitors 'val_loss', which needs validation_data"):
        model = small_lenet()
        opt = optim.SGD(model.parameters(), lr=0.5)
        model.fit(x, labels, optimizer=opt, callbacks=[LRSchedule(ReduceLROnPlateau(opt))], verbose=0)
    with pytest.raises(TypeError, match=r"fit: callbacks\[0\] is a ReduceLROnPlateau schedule; pass it as scheduler="):
        model.fit(x, labels, optimizer=opt, callbacks=[ReduceLROnPlateau(opt, monitor="loss")], verbose=0)
