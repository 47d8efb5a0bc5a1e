"""xpcnn.optim.rules: the update rules give torch.optim's parameters; state dicts resume exactly."""
import numpy as np
import pytest

import xpcnn
from xpcnn import functional as F, optim
from xpcnn.testing import assert_close
from xpcnn.zoo import lenet

# (torch.optim class name, keyword arguments)
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

