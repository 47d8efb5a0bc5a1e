"""xpcnn.train.trainer: the loop a reader can hold. A custom callback list sees every hook in order, a
CallbackList calls its callbacks in the order given, a step is the chain rule written out, and the
model Protocol names exactly the members the train floor uses."""
import ast
import pathlib

import numpy as np
import pytest

import xpcnn
from xpcnn import functional as F, layers as L, optim
from xpcnn.callbacks import Callback, CallbackList
from xpcnn.train import Batch, History, Trainer, TrainingFeed, train_step
from xpcnn.train.batches import feed
from xpcnn.train.protocol import TrainableModel

TRAIN = pathlib.Path(xpcnn.__file__).parent / "train"


class Recorder(Callback):
    """Writes every hook call into ``calls`` as a tuple, tagged with ``name``."""

    def __init__(self, calls, name="r"):
        self.calls, self.name = calls, name

    def on_train_begin(self, trainer):
        self.calls.append((self.name, "train_begin"))

    def on_epoch_begin(self, trainer, epoch):
        self.calls.append((self.name, "epoch_begin", epoch))

    def on_batch_end(self, trainer, batch, logs):
        self.calls.append((self.name, "batch_end", batch, tuple(sorted(logs))))

    def on_epoch_end(self, trainer, epoch, logs):
        self.calls.append((self.name, "epoch_end", epoch, logs["loss"] > 0, len(trainer.history.epochs)))

    def on_train_end(self, trainer):
        self.calls.append((self.name, "train_end"))


def _run(n=10, batch_size=4, epochs=2, log_every=2, callbacks=()):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((n, 1, 2, 2)), rng.integers(0, 3, n)
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0)
    data = TrainingFeed(feed(x, y, backend=model.backend, dtype=model.dtype), batch_size, rng=np.random.default_rng(1))
    history = History()
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1), F.softmax_cross_entropy, data,
                      [history, *callbacks], history=history, log_every=log_every)
    return trainer, trainer.run(epochs)


def test_a_trainer_runs_a_custom_callback_list_hook_by_hook_in_order():
    calls = []
    trainer, history = _run(callbacks=[Recorder(calls)])
    read, quiet = ("r", "batch_end"), ("accuracy", "loss", "size", "weights_finite")
    epoch = lambda e: [("r", "epoch_begin", e), read + (0, ("size",)), read + (1, ("accuracy", "loss", "size")),
                       read + (2, quiet), ("r", "epoch_end", e, True, e)]      # 3 batches, read after 2 and at the end
    assert calls == [("r", "train_begin")] + epoch(1) + epoch(2) + [("r", "train_end")]
    assert history is trainer.history and history.epochs == [1, 2] and trainer.epoch == 2
    assert list(history) == ["epoch", "loss", "accuracy", "lr", "seconds", "images_per_s"]


def test_a_callback_that_stops_ends_the_run_after_its_epoch():
    class Stop(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            trainer.stop_training = epoch == 2

    calls = []
    _, history = _run(epochs=5, callbacks=[Stop(), Recorder(calls)])
    assert history.epochs == [1, 2] and calls[-1] == ("r", "train_end")


def test_a_callback_list_calls_its_callbacks_in_the_order_given_at_every_hook():
    calls = []
    hooks = CallbackList([Recorder(calls, "a"), Recorder(calls, "b"), Recorder(calls, "c")])
    trainer, _ = _run(epochs=1)
    trainer.history.append({"epoch": 1})
    hooks.on_train_begin(trainer)
    hooks.on_epoch_begin(trainer, 1)
    hooks.on_batch_end(trainer, 0, {"size": 4})
    hooks.on_epoch_end(trainer, 1, {"loss": 1.0})
    hooks.on_train_end(trainer)
    assert [name for name, *_ in calls] == list("abc") * 5
    assert [hook for _, hook, *_ in calls[::3]] == ["train_begin", "epoch_begin", "batch_end", "epoch_end", "train_end"]


def test_a_step_is_forward_loss_backward_update_and_weights_the_loss_gradient():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 1, 2, 2)), rng.integers(0, 3, 4)
    models = [xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0, dtype="float64") for _ in range(2)]
    ours, by_hand = (optim.SGD(m.parameters(), lr=0.1) for m in models)
    loss, logits = train_step(models[0], ours, F.softmax_cross_entropy, Batch(x, y, 4, weight=0.5))
    expected, dlogits = F.softmax_cross_entropy(models[1](x), y)
    models[1].zero_grad()
    models[1].backward(dlogits * 0.5, need_dx=False)
    by_hand.step()
    assert float(loss) == pytest.approx(float(expected)) and logits.shape == (4, 3)
    for key, value in models[1].state_dict().items():
        np.testing.assert_allclose(models[0].state_dict()[key], value, rtol=1e-12, err_msg=key)


def _members_used_on_the_model() -> set[str]:
    """Every attribute the train floor reads on ``model``, ``self.model`` or ``trainer.model``."""
    used = set()
    for path in [*TRAIN.glob("*.py"), TRAIN.parent / "callbacks.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id == "model") or (
                    isinstance(owner, ast.Attribute) and owner.attr == "model"
                    and isinstance(owner.value, ast.Name) and owner.value.id in ("self", "trainer")):
                used.add(node.attr)
    return used


def test_the_model_protocol_names_exactly_the_members_the_train_floor_uses():
    named = {name for name in vars(TrainableModel) if not name.startswith("_")}
    named |= set(TrainableModel.__annotations__)
    assert _members_used_on_the_model() == named
    sequential = xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0, input_shape=(1, 2, 2))
    assert all(hasattr(sequential, name) for name in named)


def test_validation_figures_follow_the_training_figures_in_the_logs():
    """The column order of a metrics file (the command line's metrics.csv starts epoch,loss,accuracy,val_loss)."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 1, 2, 2)), rng.integers(0, 3, 8)
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0)
    history = model.fit(x, y, optimizer="sgd", validation_split=0.25, verbose=0)
    assert list(history) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_s"]


@pytest.mark.parametrize("given", ["among the callbacks", "none"])
def test_run_returns_the_history_that_was_filled(given):
    """Without ``history=``, run() returns the History among the callbacks, or one it added itself (it used
    to return a fresh, empty one while the callback's filled)."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 1, 2, 2)), rng.integers(0, 3, 8)
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0)
    data = TrainingFeed(feed(x, y, backend=model.backend, dtype=model.dtype), 4, rng=np.random.default_rng(1))
    callbacks = [History()] if given == "among the callbacks" else []
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1), F.softmax_cross_entropy, data, callbacks)
    history = trainer.run(2)
    assert history.epochs == [1, 2] and history is trainer.history
    if callbacks:
        assert history is callbacks[0]


def test_a_trainer_reads_no_labels_on_the_device_per_step():
    """softmax_cross_entropy given to a Trainer runs without its device-side label check (two reads a step)."""
    torch = pytest.importorskip("torch")
    from xpcnn.testing import Transfers
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 1, 2, 2)), rng.integers(0, 3, 16)
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0, backend="torch")
    data = TrainingFeed(feed(x, y, backend=model.backend, dtype=model.dtype), 4, rng=np.random.default_rng(1))
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1), F.softmax_cross_entropy, data, [],
                      log_every=100, verbose=0)
    with Transfers() as transfers:
        trainer.run(1)
    assert transfers.reads <= 3          # the epoch's end only: loss, accuracy and the finiteness check
    assert torch is not None
