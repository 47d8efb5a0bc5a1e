"""xpcnn.optim.base: hyper-parameters handed to update explicitly, checked when set (not at every step),
and gradient clipping owned by the optimizer's step."""
import numpy as np
import pytest

import xpcnn
from xpcnn import functional as F, optim
from xpcnn.testing import assert_close
from xpcnn.zoo import lenet


def _model(backend="numpy"):
    return lenet(image_size=8, width=3, dropout=0.0, seed=4, dtype="float64", backend=backend)


class _SignSGD(optim.Optimizer):
    """θ -= lr · sign(g), recording the hyper-parameters each update is given."""

    def __init__(self, params, lr=0.1, **kwargs):
        super().__init__(params, lr, **kwargs)
        self.seen = []

    def update(self, xp, theta, grad, state, hp):
        self.seen.append((tuple(theta.shape), hp["lr"]))
        return theta - hp["lr"] * xp.sign(grad)


def test_update_is_given_each_groups_own_hyperparameters():
    first, second = xpcnn.Parameter(np.zeros(3)), xpcnn.Parameter(np.zeros(2))
    opt = _SignSGD([{"params": [first], "lr": 0.5}, {"params": [second]}], lr=0.1)
    first.grad, second.grad = np.array([1.0, -2.0, 0.0]), np.array([-3.0, 4.0])
    opt.step()
    assert opt.seen == [((3,), 0.5), ((2,), 0.1)]
    np.testing.assert_array_equal(first.data, [-0.5, 0.5, 0.0])
    np.testing.assert_array_equal(second.data, [0.1, -0.1])
    assert opt.lr == 0.5                                       # the first group's
    opt.lr = 0.2                                               # the default and the groups without their own
    assert (opt.defaults["lr"], [group["lr"] for group in opt.param_groups]) == (0.2, [0.5, 0.2])
    assert not hasattr(optim.Optimizer, "_group") and not hasattr(opt, "_group")


def test_hyperparameters_are_checked_when_set_and_not_at_every_step(monkeypatch):
    calls = []
    real = optim.SGD.__dict__["check_hyperparameters"].__func__
    monkeypatch.setattr(optim.SGD, "check_hyperparameters",
                        classmethod(lambda cls, values: calls.append(1) or real(cls, values)))
    params = _model().parameters()
    opt = optim.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1, momentum=0.9)
    assert calls

    def steps(n):
        calls.clear()
        for _ in range(n):
            for p in params:
                p.grad = np.ones_like(p.data)
            opt.step()
        return len(calls)

    assert steps(3) == 0
    opt.param_groups[1]["lr"] = 0.2                           # a plain dict write: checked once, at the next step
    assert steps(1) == 1 and steps(2) == 0
    calls.clear()
    opt.momentum = 0.5                                         # checked here, once for the default and per group
    assert len(calls) == 3 and steps(2) == 0
    with pytest.raises(ValueError, match=r"^SGD: momentum must be in \[0.0, 1.0\), got 1.5$"):
        opt.momentum = 1.5
    assert [group["momentum"] for group in opt.param_groups] == [0.5, 0.5] and opt.defaults["momentum"] == 0.5


@pytest.mark.parametrize("make,make_torch", [
    (lambda p: optim.Adam(p, lr=0.01, clip_grad_norm=0.05), lambda torch, t: torch.optim.Adam(t, lr=0.01)),
    (lambda p: optim.SGD([{"params": p[:3], "lr": 0.2}, {"params": p[3:]}], lr=0.05, momentum=0.9, clip_grad_norm=0.1),
     lambda torch, t: torch.optim.SGD([{"params": t[:3], "lr": 0.2}, {"params": t[3:]}], lr=0.05, momentum=0.9)),
], ids=["adam", "sgd-two-groups"])
def test_step_clips_as_torch_clip_grad_norm_then_step(backend, torch_twin, make, make_torch):
    import torch
    rng = np.random.default_rng(0)
    model = _model(backend)
    twin = torch_twin(model)
    ours = make(model.parameters())
    theirs = make_torch(torch, list(twin.parameters()))
    max_norm = ours.clip_grad_norm
    norms = []
    for _ in range(5):
        x, labels = rng.standard_normal((4, 1, 8, 8)), rng.integers(0, 10, 4)
        model.zero_grad()
        model.backward(F.softmax_cross_entropy(model(x), xpcnn.to_backend(labels, backend))[1])
        grads = [xpcnn.to_numpy(p.grad).copy() for p in model.parameters()]
        ours.step()
        theirs.zero_grad()
        torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(labels)).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(twin.parameters(), max_norm)))
        theirs.step()
        for p, grad in zip(model.parameters(), grads):             # the gradients are left as they came
            np.testing.assert_array_equal(xpcnn.to_numpy(p.grad), grad)
    assert min(norms) > max_norm                                  # every step did clip
    for key, p in twin.named_parameters():
        assert_close(dict(model.named_parameters())[key].data, p.detach().numpy(), backend,
                     rtol=1e-9, atol=1e-11, name=f"{key} after 5 clipped steps")


def test_clip_grad_norm_is_checked_when_set_and_kept_by_state_dicts_and_checkpoints(tmp_path):
    model = _model()
    opt = optim.Adam(model.parameters())
    assert opt.clip_grad_norm is None and "clip_grad_norm" not in opt.state_dict()["hyper"]
    with pytest.raises(ValueError, match=r"^Adam: clip_grad_norm must be in \(0.0, inf\), got 0$"):
        opt.clip_grad_norm = 0
    with pytest.raises(ValueError, match=r"^SGD: clip_grad_norm must be a finite number, got 'big'$"):
        optim.SGD(model.parameters(), lr=0.1, clip_grad_norm="big")
    assert opt.clip_grad_norm is None
    opt.clip_grad_norm = 2
    assert opt.clip_grad_norm == 2.0 and repr(opt).endswith("clip_grad_norm=2.0)")
    other = optim.Adam(model.parameters())
    other.load_state_dict(opt.state_dict())
    assert other.clip_grad_norm == 2.0
    assert xpcnn.load_checkpoint(model.save(tmp_path / "c.npz", optimizer=opt)).optimizer.clip_grad_norm == 2.0
    with pytest.raises(ValueError, match=r"^Adam.load_state_dict: Adam: clip_grad_norm must be in"):
        other.load_state_dict({**opt.state_dict(), "hyper": {**opt.state_dict()["hyper"], "clip_grad_norm": -1}})
    assert other.clip_grad_norm == 2.0
    opt.clip_grad_norm = None                                  # off again
    assert opt.clip_grad_norm is None


def test_a_clipping_step_reads_nothing_on_the_host():
    pytest.importorskip("torch")
    from xpcnn.testing import Transfers
    params = [xpcnn.Parameter(xpcnn.to_backend(np.full((3, 2), 5.0, np.float32), "torch")) for _ in range(4)]
    opt = optim.SGD(params, lr=0.1, momentum=0.9, clip_grad_norm=1.0)
    for _ in range(2):
        for p in params:
            p.grad = xpcnn.to_backend(np.full((3, 2), 5.0, np.float32), "torch")
        with Transfers() as counted:
            opt.step()
        assert (counted.reads, counted.writes) == (0, 0)
    np.testing.assert_allclose(xpcnn.to_numpy(params[0].data), 5.0 - 0.1 * (1 + 1.9) / np.sqrt(24), rtol=1e-5)


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



def _batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)), rng.integers(0, 10, n)


def _step(model, opt, x, labels, backend):
    model.zero_grad()
    model.backward(F.softmax_cross_entropy(model(x), xpcnn.to_backend(labels, backend))[1], need_dx=False)
    opt.step()


@pytest.mark.parametrize("name,kwargs,group", [
    ("SGD", dict(lr=0.01, momentum=0.9), dict(lr=0.1, momentum=0.5)),
    ("Adam", dict(lr=0.01), dict(lr=0.001, betas=(0.8, 0.99))),
    ("RMSprop", dict(lr=0.005), dict(weight_decay=0.1)),
])
def test_parameter_groups_match_torch_optim(backend, torch_twin, name, kwargs, group):
    import torch
    model = _model(backend)
    twin = torch_twin(model)
    head = [p for _, p in model[-1].named_parameters()]
    rest = [p for p in model.parameters() if all(p is not h for h in head)]
    twin_head = list(twin[len(twin) - 1].parameters())
    twin_rest = [p for p in twin.parameters() if all(p is not h for h in twin_head)]
    ours = getattr(optim, name)([{"params": rest}, {"params": head, **group}], **kwargs)
    theirs = getattr(torch.optim, name)([{"params": twin_rest}, {"params": twin_head, **group}], **kwargs)
    assert ours.param_groups[1]["lr"] == theirs.param_groups[1]["lr"]
    for step in range(10):
        x, labels = _batch(4, seed=step)
        _step(model, ours, x, labels, backend)
        theirs.zero_grad()
        torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(labels)).backward()
        theirs.step()
    for key, p in twin.named_parameters():
        assert_close(dict(model.named_parameters())[key].data, p.detach().numpy(), backend, rtol=1e-9, atol=1e-11,
                     name=f"{key} after 10 steps")


def test_group_state_and_checkpoint_round_trip(tmp_path):
    model = _model()
    opt = optim.Adam([{"params": model.parameters()[:4], "lr": 0.05}, {"params": model.parameters()[4:]}], lr=0.01)
    schedule = optim.CosineAnnealingLR(opt, T_max=4)
    x, labels = _batch(8)
    _step(model, opt, x, labels, "numpy")
    schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(schedule.lr_at(1, 0.05))
    assert opt.param_groups[1]["lr"] == pytest.approx(schedule.lr_at(1, 0.01))
    path = model.save(tmp_path / "run.npz", optimizer=opt, scheduler=schedule)
    restored = xpcnn.load_checkpoint(path)
    assert [g["lr"] for g in restored.optimizer.param_groups] == [g["lr"] for g in opt.param_groups]
    assert restored.optimizer.state_dict()["groups"] == opt.state_dict()["groups"]
    for model_, opt_ in ((model, opt), (restored.model, restored.optimizer)):
        _step(model_, opt_, x, labels, "numpy")
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(restored.model.state_dict()[key], value, err_msg=key)


def test_bad_parameter_groups_are_refused_naming_the_group():
    params = _model().parameters()
    with pytest.raises(ValueError, match="parameter group 1: SGD: momentum must be in"):
        optim.SGD([{"params": params[:2]}, {"params": params[2:], "momentum": 2.0}], lr=0.1)
    with pytest.raises(ValueError, match="parameter group 0 sets betas, which SGD does not have"):
        optim.SGD([{"params": params, "betas": (0.9, 0.9)}], lr=0.1)
    with pytest.raises(ValueError, match="appears twice"):
        optim.SGD([{"params": params}, {"params": params[:1]}], lr=0.1)
    with pytest.raises(ValueError, match="parameter group 1 has no parameters"):
        optim.SGD([{"params": params}, {"params": []}], lr=0.1)
