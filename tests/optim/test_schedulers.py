"""xpcnn.optim.schedulers: the schedules follow torch.optim.lr_scheduler and survive checkpoints."""
import numpy as np
import pytest

import xpcnn
from xpcnn import optim
from xpcnn.zoo import lenet


def _model(backend):
    return lenet(image_size=8, width=3, dropout=0.0, seed=4, dtype="float64", backend=backend)


@pytest.mark.parametrize("ours,theirs,kwargs", [
    ("StepLR", "StepLR", dict(step_size=3, gamma=0.5)),
    ("CosineAnnealingLR", "CosineAnnealingLR", dict(T_max=7, eta_min=0.001)),
])
def test_schedules_match_torch(ours, theirs, kwargs):
    torch = pytest.importorskip("torch")
    model = _model("numpy")
    opt = optim.SGD(model.parameters(), lr=0.1)
    schedule = getattr(optim, ours)(opt, **kwargs)
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    tschedule = getattr(torch.optim.lr_scheduler, theirs)(topt, **kwargs)
    for _ in range(10):
        topt.step()
        tschedule.step()
        assert schedule.step() == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)


@pytest.mark.parametrize("name,kwargs", [("StepLR", dict(step_size=2, gamma=0.5)),
                                         ("CosineAnnealingLR", dict(T_max=5, eta_min=0.01))])
def test_schedules_survive_a_checkpoint(tmp_path, name, kwargs):
    import xpcnn
    model = _model("numpy")
    opt = optim.SGD(model.parameters(), lr=0.1)
    schedule = optim.SCHEDULERS[name](opt, **kwargs)
    for _ in range(3):
        schedule.step()
    loaded = xpcnn.load_checkpoint(model.save(tmp_path / "s.npz", optimizer=opt, scheduler=schedule))
    assert type(loaded.scheduler) is type(schedule) and loaded.scheduler.config() == kwargs
    assert loaded.optimizer.lr == pytest.approx(opt.lr)
    for _ in range(4):
        assert loaded.scheduler.step() == pytest.approx(schedule.step(), rel=1e-15)


def test_reduce_lr_on_plateau_reads_auto_mode_as_early_stopping_does():
    from xpcnn.optim import ReduceLROnPlateau

    def plateau(monitor, **kwargs):
        return ReduceLROnPlateau(optim.SGD([xpcnn.Parameter(np.zeros(2))], lr=1.0), monitor=monitor, **kwargs)

    assert plateau("val_accuracy", mode="auto").mode == "max"
    assert plateau("val_loss", mode="auto").mode == "min"
    assert plateau("val_accuracy").mode == "max"               # the default is "auto"
    assert plateau("val_loss").mode == "min"                   # torch.optim's "min" for a loss
    rising = plateau("accuracy", mode="auto", patience=0)
    for value in (0.5, 0.6, 0.7):                               # improving in mode "max": lr unchanged
        rising.step(value)
    assert rising.optimizer.lr == 1.0
    with pytest.raises(ValueError, match="ReduceLROnPlateau: mode must be 'auto', 'min' or 'max', got 'up'"):
        plateau("loss", mode="up")



@pytest.mark.parametrize("kwargs", [dict(patience=1), dict(mode="max", factor=0.5, patience=0, cooldown=1),
                                    dict(threshold=0.1, threshold_mode="abs", patience=0, min_lr=0.02)])
def test_reduce_lr_on_plateau_follows_torch(kwargs):
    torch = pytest.importorskip("torch")
    metrics = [1.0, 0.9, 0.95, 0.92, 0.91, 0.5, 0.6, 0.6, 0.49, 0.7, 0.8]
    model = _model("numpy")
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
