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
