import numpy as np
import pytest

import xpcnn
from xpcnn import functional as F, optim
from xpcnn.zoo import lenet
from xpcnn.testing import assert_close

# (xpcnn class, torch class name, keyword arguments)
CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=1e-3)),
    ("Adagrad", dict(lr=0.05)),
    ("Adagrad", dict(lr=0.05, lr_decay=0.01, weight_decay=1e-2)),
    ("RMSprop", dict(lr=0.005)),
    ("RMSprop", dict(lr=0.005, momentum=0.9, centered=True, weight_decay=1e-2)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in CONFIGS]


def _model(backend):
    return lenet(image_size=8, width=3, dropout=0.0, seed=4, dtype="float64", backend=backend)


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=IDS)
def test_twenty_steps_match_torch_optim(backend, torch_twin, name, kwargs):
    import torch
    rng = np.random.default_rng(0)
    model = _model(backend)
    twin = torch_twin(model)
    ours = getattr(optim, name)(model.parameters(), **kwargs)
    theirs = getattr(torch.optim, name)(twin.parameters(), **kwargs)
    for step in range(20):
        x, labels = rng.standard_normal((4, 1, 8, 8)), rng.integers(0, 10, 4)
        model.zero_grad()
        loss, dlogits = F.softmax_cross_entropy(model(x), xpcnn.to_backend(labels, backend))
        model.backward(dlogits)
        ours.step()
        theirs.zero_grad()
        torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(labels)).backward()
        theirs.step()
    for key, p in twin.named_parameters():
        assert_close(dict(model.named_parameters())[key].data, p.detach().numpy(), backend,
                     rtol=1e-9, atol=1e-11, name=f"{key} after 20 steps")


@pytest.mark.parametrize("name,kwargs", CONFIGS[1::2], ids=IDS[1::2])
def test_optimizer_state_dict_resumes_exactly(name, kwargs):
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((4, 1, 8, 8)), rng.integers(0, 10, 4)) for _ in range(6)]

    def run(model, opt, chunk):
        for x, labels in chunk:
            model.zero_grad()
            model.backward(F.softmax_cross_entropy(model(x), labels)[1])
            opt.step()

    straight = _model("numpy")
    opt = getattr(optim, name)(straight.parameters(), **kwargs)
    run(straight, opt, batches)

    first = _model("numpy")
    opt1 = getattr(optim, name)(first.parameters(), **kwargs)
    run(first, opt1, batches[:3])
    resumed = _model("numpy")
    resumed.load_state_dict(first.state_dict())
    opt2 = getattr(optim, name)(resumed.parameters(), lr=0.123)
    opt2.load_state_dict(opt1.state_dict())
    run(resumed, opt2, batches[3:])
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)


def test_loaded_optimizer_state_is_a_copy_the_updates_never_touch(backend):
    """Adam updates its moments in place; a state dict it was loaded from must not change with them."""
    model = _model(backend)
    first = optim.Adam(model.parameters(), lr=0.01)
    x, labels = np.ones((2, 1, 8, 8)), xpcnn.to_backend(np.array([1, 2]), backend)
    model.backward(F.softmax_cross_entropy(model(x), labels)[1])
    first.step()
    saved = first.state_dict()
    before = {key: value.copy() for key, value in saved["state"].items()}
    second = optim.Adam(model.parameters(), lr=0.01)
    second.load_state_dict(saved)
    for _ in range(2):
        model.zero_grad()
        model.backward(F.softmax_cross_entropy(model(x), labels)[1])
        second.step()
    for key, value in saved["state"].items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    moved = [name for name in ("exp_avg", "exp_avg_sq")
             if not np.array_equal(xpcnn.to_numpy(second.state[0][name]), before[f"0.{name}"])]
    assert moved == ["exp_avg", "exp_avg_sq"]


def test_optimizer_state_follows_the_model_to_another_backend():
    pytest.importorskip("torch")
    model = _model("numpy")
    opt = optim.Adam(model.parameters(), lr=0.01)
    x, labels = np.ones((2, 1, 8, 8)), np.array([1, 2])
    model.backward(F.softmax_cross_entropy(model(x), labels)[1])
    opt.step()
    model.to("torch")
    model.zero_grad()
    model.backward(F.softmax_cross_entropy(model(x), xpcnn.to_backend(labels, "torch"))[1])
    opt.step()
    assert all(xpcnn.backend.backend_of(v) == "torch" for s in opt.state for k, v in s.items() if k != "step")


@pytest.mark.parametrize("make,pattern", [
    (lambda p: optim.SGD(p, lr=-0.1), r"SGD: lr must be in \[0.0, inf\), got -0.1"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=1.0), r"SGD: momentum must be in \[0.0, 1.0\), got 1.0"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), r"nesterov=True needs momentum > 0"),
    (lambda p: optim.Adam(p, betas=(0.9, 1.5)), r"Adam: betas\[1\] must be in \[0.0, 1.0\)"),
    (lambda p: optim.RMSprop(p, alpha=-1), r"RMSprop: alpha must be in"),
    (lambda p: optim.Adagrad(p, lr=float("nan")), r"Adagrad: lr must be a finite number"),
    (lambda p: optim.Adam([], lr=0.1), r"Adam: got an empty parameter list"),
])
def test_invalid_hyperparameters_are_refused(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make(_model("numpy").parameters())


def test_a_wrong_gradient_shape_changes_no_parameter():
    model = _model("numpy")
    opt = optim.SGD(model.parameters(), lr=0.1)
    params = model.parameters()
    before = [p.data.copy() for p in params]
    params[0].grad = np.ones_like(params[0].data)
    params[1].grad = np.ones((7,))
    with pytest.raises(ValueError, match=r"SGD: gradient 1 has shape \(7,\)"):
        opt.step()
    for p, saved in zip(params, before):
        np.testing.assert_array_equal(p.data, saved)


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


def test_the_optimizer_looks_up_namespaces_only_when_a_parameter_moved(monkeypatch):
    """A step looks up each parameter's namespace once; later steps reuse it until the model moves."""
    import array_api_compat
    from xpcnn import layers as L
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 3), L.ReLU(), L.Dense(3, 2)], seed=0)
    optimizer = optim.Adam(model.parameters())
    lookups = []
    original = array_api_compat.array_namespace
    monkeypatch.setattr(array_api_compat, "array_namespace",
                        lambda *arrays, **kw: lookups.append(1) or original(*arrays, **kw))
    from xpcnn import optim as optim_module
    monkeypatch.setattr(optim_module, "array_api_compat", array_api_compat)

    def step():
        for p in model.parameters():
            p.grad = np.ones(p.shape, np.float32)
        optimizer.step()

    step()
    assert 1 <= len(lookups) <= 4                  # once for the flat group (once per parameter on its own)
    lookups.clear()
    step()
    step()
    assert lookups == []
    pytest.importorskip("torch")
    model.to("torch")                              # the model moved: namespaces and state follow, once

    def torch_step():
        for p in model.parameters():
            p.grad = xpcnn.to_backend(np.ones(p.shape, np.float32), "torch")
        optimizer.step()

    torch_step()
    assert lookups
    lookups.clear()
    torch_step()
    assert lookups == []
    assert xpcnn.backend.backend_of(optimizer.state[0]["exp_avg"]) == "torch"   # (reading state splits it back)


def _torch_pair(make, make_torch):
    """Two copies of a 3-parameter problem: xpcnn Parameters and torch tensors with the same values."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    values = [rng.standard_normal(shape) for shape in ((3, 4), (4,), (2, 2, 3))]
    params = [xpcnn.Parameter(v.copy()) for v in values]
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    return params, make(params), tensors, make_torch(tensors), rng


@pytest.mark.parametrize("name", ["sgd", "adagrad", "rmsprop", "adam", "adamw"])
def test_a_parameter_without_a_gradient_is_skipped_as_torch_skips_it(name):
    """All gradients (updated together, flat), then one missing (each on its own; the missing one is left
    alone, state and all), then all again: the same values as torch.optim's."""
    torch = pytest.importorskip("torch")
    ours = {"sgd": lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
            "adagrad": lambda p: optim.Adagrad(p, lr=0.1, weight_decay=0.01),
            "rmsprop": lambda p: optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True),
            "adam": lambda p: optim.Adam(p, lr=0.01, weight_decay=0.01, amsgrad=True),
            "adamw": lambda p: optim.AdamW(p, lr=0.01)}[name]
    theirs = {"sgd": lambda t: torch.optim.SGD(t, lr=0.1, momentum=0.9, weight_decay=0.01),
              "adagrad": lambda t: torch.optim.Adagrad(t, lr=0.1, weight_decay=0.01),
              "rmsprop": lambda t: torch.optim.RMSprop(t, lr=0.01, momentum=0.5, centered=True),
              "adam": lambda t: torch.optim.Adam(t, lr=0.01, weight_decay=0.01, amsgrad=True),
              "adamw": lambda t: torch.optim.AdamW(t, lr=0.01)}[name]
    params, optimizer, tensors, reference, rng = _torch_pair(ours, theirs)
    for present in ((0, 1, 2), (0, 1, 2), (0, 2), (0, 1, 2), (1,), (0, 1, 2)):
        for index, (p, t) in enumerate(zip(params, tensors)):
            grad = rng.standard_normal(p.shape) if index in present else None
            p.grad = grad
            t.grad = None if grad is None else torch.tensor(grad)
        optimizer.step()
        reference.step()
        for index, (p, t) in enumerate(zip(params, tensors)):
            np.testing.assert_allclose(xpcnn.to_numpy(p.data), t.detach().numpy(), rtol=1e-12, atol=1e-14,
                                       err_msg=f"{name}, parameter {index} after gradients for {present}")


def test_an_adam_step_launches_the_same_kernels_whatever_the_number_of_parameters():
    """The flat update: one concatenation of the gradients, then the formula once (torch backend counts)."""
    pytest.importorskip("torch")
    from xpcnn.testing import KernelLaunches

    def launches(count):
        params = [xpcnn.Parameter(xpcnn.to_backend(np.ones((3, 2), np.float32), "torch")) for _ in range(count)]
        optimizer = optim.Adam(params)
        for _ in range(2):                      # the first step builds the flat arrays
            for p in params:
                p.grad = xpcnn.to_backend(np.ones((3, 2), np.float32), "torch")
            with KernelLaunches() as counted:
                optimizer.step()
        return counted.count

    assert launches(2) == launches(8) == launches(32)
    assert launches(32) <= 16


def _values(opt):
    return opt.defaults.copy(), [{k: v for k, v in group.items() if k != "params"} for group in opt.param_groups]


@pytest.mark.parametrize("make,name,value,pattern", [
    (lambda p: optim.SGD(p, lr=0.1), "lr", -5, r"^SGD: lr must be in \[0.0, inf\), got -5$"),
    (lambda p: optim.SGD(p, lr=0.1), "lr", "fast", r"^SGD: lr must be a finite number, got 'fast'$"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.5), "momentum", 5, r"^SGD: momentum must be in \[0.0, 1.0\), got 5$"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.5, nesterov=True), "momentum", 0.0, r"nesterov=True needs momentum"),
    (lambda p: optim.Adam(p), "betas", [0.9, 2.0], r"^Adam: betas\[1\] must be in \[0.0, 1.0\), got 2.0$"),
    (lambda p: optim.RMSprop(p), "centered", "yes", r"^RMSprop: centered must be True or False, got 'yes'$"),
])
def test_hyperparameters_set_after_construction_are_checked_as_the_constructor_checks_them(make, name, value,
                                                                                             pattern):
    opt = make(_model("numpy").parameters())
    before = _values(opt)
    with pytest.raises(ValueError, match=pattern):
        setattr(opt, name, value)
    assert _values(opt) == before


def test_a_setting_that_breaks_a_groups_own_values_is_refused_and_changes_no_group():
    params = _model("numpy").parameters()
    opt = optim.SGD([{"params": params[:2], "nesterov": True}, {"params": params[2:]}], lr=0.1, momentum=0.9)
    before = _values(opt)
    with pytest.raises(ValueError, match=r"^parameter group 0: SGD: nesterov=True needs momentum > 0"):
        opt.momentum = 0.0
    assert _values(opt) == before
    opt.momentum = 0.5                                           # a valid value reaches both groups
    assert [group["momentum"] for group in opt.param_groups] == [0.5, 0.5]


def test_group_values_are_checked_by_the_class_not_by_building_another_optimizer(monkeypatch):
    params = _model("numpy").parameters()
    built = []
    real = optim.Adam.__init__
    monkeypatch.setattr(optim.Adam, "__init__", lambda self, *a, **k: built.append(1) or real(self, *a, **k))
    optim.Adam([{"params": params[:2], "lr": 0.5}, {"params": params[2:], "betas": (0.5, 0.6)}])
    assert built == [1]
    assert optim.Adam.check_hyperparameters({"lr": 1, "betas": [0.5, 0.6], "eps": 1e-8, "weight_decay": 0,
                                             "amsgrad": False}) == {"lr": 1.0, "betas": (0.5, 0.6), "eps": 1e-8,
                                                                    "weight_decay": 0.0, "amsgrad": False}


@pytest.mark.parametrize("change,pattern", [
    (lambda state: state["hyper"].update(lr=-5), r"^Adam.load_state_dict: Adam: lr must be in \[0.0, inf\)"),
    (lambda state: state["hyper"].update(betas=[0.9, 2.0]), r"^Adam.load_state_dict: Adam: betas\[1\] must be in"),
    (lambda state: state["groups"][1].update(lr="fast"),
     r"^Adam.load_state_dict: parameter group 1: Adam: lr must be a finite number, got 'fast'$"),
    (lambda state: state.update(step="many"), r"^Adam.load_state_dict: 'step' must be an int >= 0"),
    (lambda state: state["state"].update({"0.exp_avg": None}), r"^Adam.load_state_dict: '0.exp_avg' must be an array"),
])
def test_load_state_dict_checks_hyperparameters_as_the_constructor_and_changes_nothing_on_refusal(change, pattern):
    model = _model("numpy")
    params = model.parameters()
    opt = optim.Adam([{"params": params[:2]}, {"params": params[2:], "lr": 0.01}])
    for p in params:
        p.grad = np.ones_like(p.data)
    opt.step()
    state = opt.state_dict()
    change(state)
    before = _values(opt), opt.state_dict()
    with pytest.raises((ValueError, TypeError), match=pattern):
        opt.load_state_dict(state)
    after = _values(opt), opt.state_dict()
    assert after[0] == before[0] and after[1]["step"] == before[1]["step"]
    for key, value in before[1]["state"].items():
        np.testing.assert_array_equal(after[1]["state"][key], value)
    with pytest.raises(TypeError, match=r"^Adam.load_state_dict: expected the dict state_dict\(\) returns, got list$"):
        opt.load_state_dict([1, 2])


def test_a_step_refused_in_a_later_group_changes_no_parameter_of_any_group():
    params = _model("numpy").parameters()
    opt = optim.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1, momentum=0.9)
    for p in params:
        p.grad = np.ones_like(p.data)
    before = [p.data.copy() for p in params]
    opt.param_groups[1]["lr"] = "fast"                           # a plain dict write, as torch code does
    with pytest.raises(ValueError, match=r"^parameter group 1: SGD: lr must be a finite number, got 'fast'$"):
        opt.step()
    for p, saved in zip(params, before):
        np.testing.assert_array_equal(p.data, saved)
    assert opt.step_count == 0 and all(not state for state in opt.state)
    params[3].grad = [1.0]
    opt.param_groups[1]["lr"] = 0.1
    with pytest.raises(TypeError, match=r"^SGD: gradient 3 is a list, not an array$"):
        opt.step()


@pytest.mark.parametrize("name,kwargs", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.01))])
def test_nan_gradients_are_applied_as_torch_applies_them(name, kwargs):
    """The documented contract: a step reads no gradient value (no device read), so a NaN spreads as in
    torch.optim; fit's divergence guard rolls back."""
    torch = pytest.importorskip("torch")
    grad = np.array([1.0, np.nan, 2.0, np.inf])
    ours = xpcnn.Parameter(np.zeros(4))
    theirs = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt, reference = getattr(optim, name)([ours], **kwargs), getattr(torch.optim, name)([theirs], **kwargs)
    for _ in range(2):
        ours.grad, theirs.grad = grad.copy(), torch.tensor(grad)
        with np.errstate(invalid="ignore"):
            opt.step()
        reference.step()
    np.testing.assert_array_equal(np.isnan(ours.data), torch.isnan(theirs.detach()).numpy())
    assert np.isnan(ours.data).any()
    assert "NaN or infinite gradient is applied as torch.optim applies it" in " ".join(optim.Optimizer.step.__doc__.split())


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
