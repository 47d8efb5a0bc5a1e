"""xpcnn.optim.flat: the flat update's GPU form joins the gradients without a host-to-device copy, and both
forms give the same parameters."""
import numpy as np
import pytest

import xpcnn
from xpcnn import config, optim


def _params(backend, count, seed=0):
    rng = np.random.default_rng(seed)
    return [xpcnn.Parameter(xpcnn.to_backend(rng.standard_normal((3, 2 + i % 3)), backend)) for i in range(count)]


@pytest.mark.parametrize("clip", [None, 1.0])
def test_an_adam_step_over_20_parameters_copies_nothing_from_the_host_in_the_gpu_form(clip):
    """CuPy copies a table of pointers host-to-device to concatenate more than 8 arrays; the GPU form
    assigns slices of an empty flat gradient instead (priced by CuPy's rules on torch tensors)."""
    pytest.importorskip("torch")
    from xpcnn.testing import CupyCosts
    params = _params("torch", 20)
    opt = optim.Adam(params, clip_grad_norm=clip)
    with config.using(few_launches="on"):
        for _ in range(3):                             # the first step builds the flat arrays
            for p in params:
                p.grad = xpcnn.to_backend(np.ones(p.shape), "torch")
            with CupyCosts() as costs:
                opt.step()
            assert (costs.copies, costs.syncs) == (0, 0), (costs.copies_by_op, costs.syncs_by_op)
    with config.using(few_launches="off"), CupyCosts() as costs:
        opt.step()                                     # the CPU form concatenates: what the GPU form avoids
    assert costs.copies_by_op["cat"] >= 1


@pytest.mark.parametrize("name,kwargs", [("Adam", dict(lr=0.01, amsgrad=True)),
                                         ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True))])
def test_the_gpu_and_cpu_forms_of_the_flat_update_agree(backend, name, kwargs):
    results = []
    for mode in ("on", "off"):
        params = _params(backend, 12)
        opt = getattr(optim, name)(params, **kwargs)
        rng = np.random.default_rng(1)
        with config.using(few_launches=mode):
            for _ in range(3):
                for p in params:
                    p.grad = xpcnn.to_backend(rng.standard_normal(p.shape), backend)
                opt.step()
        results.append([xpcnn.to_numpy(p.data) for p in params])
    for on, off in zip(*results):
        np.testing.assert_allclose(on, off, rtol=1e-12, atol=1e-14)


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

