"""Every bad input gets a clear error naming the layer or function, the argument, what was expected and
what came, and leaves parameters, optimizer state and files unchanged."""
import numpy as np
import pytest

import xpcnn
from xpcnn import layers as L, optim
from xpcnn.testing import on


def _model(backend="numpy", seed=0):
    return xpcnn.Sequential([L.Conv2D(1, 3, 3, padding=1), L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.Dense(48, 4)],
                            backend=backend, seed=seed, dtype="float64")


def _snapshot(model, optimizer=None):
    state = {k: v.copy() for k, v in model.state_dict().items()}
    opt = None if optimizer is None else {k: v.copy() for k, v in optimizer.state_dict()["state"].items()}
    return state, opt


def _assert_unchanged(model, before, optimizer=None):
    state, opt = before
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    if optimizer is not None:
        now = optimizer.state_dict()["state"]
        assert now.keys() == opt.keys()
        for key in now:
            np.testing.assert_array_equal(now[key], opt[key], err_msg=key)


def _trained(backend="numpy"):
    """A model and an optimizer with state, after one real step."""
    model = _model(backend)
    opt = optim.Adam(model.parameters(), lr=0.01)
    model.fit(np.random.default_rng(0).standard_normal((8, 1, 8, 8)), np.arange(8) % 4, optimizer=opt, epochs=1,
              batch_size=8, progress=False)
    return model, opt


@pytest.mark.parametrize("shape,pattern", [
    ((2, 8, 8), r"layer 0: Conv2D\(1->3\): expected a 4-D input \(N, C, H, W\), got \(2, 8, 8\)"),
    ((2, 2, 8, 8), r"layer 0: Conv2D\(1->3\): expected input with 1 channels, got shape \(2, 2, 8, 8\)"),
    ((2, 1, 1, 1), r"layer 2: MaxPool2D\(2\): kernel 2x2 .* larger than the padded input 1x1"),
    ((2, 1, 10, 10), r"layer 4: Dense\(48->4\): expected \(N, 48\), got \(2, 75\)"),
    ((0, 1, 8, 8), r"Sequential: x is an empty batch, shape \(0, 1, 8, 8\)"),
])
def test_shape_errors_name_the_layer_and_change_nothing(backend, shape, pattern):
    model, opt = _trained(backend.name)
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=pattern):
        model(np.zeros(shape))
    if shape[0]:
        with pytest.raises(ValueError, match=pattern):
            model.fit(np.zeros(shape), np.zeros(shape[0], dtype=int), optimizer=opt, progress=False)
    else:
        with pytest.raises(ValueError, match=r"fit: x must be a non-empty batch of samples, got shape \(0, 1, 8, 8\)"):
            model.fit(np.zeros(shape), np.zeros(0, dtype=int), optimizer=opt, progress=False)
    _assert_unchanged(model, before, opt)


def test_non_contiguous_and_negative_stride_inputs_work(backend):
    model = _model(backend.name)
    x = np.random.default_rng(0).standard_normal((4, 2, 8, 16))
    view = x[:, :1, :, ::-2]
    expected = xpcnn.to_numpy(model(np.ascontiguousarray(view)))
    np.testing.assert_allclose(xpcnn.to_numpy(model(view)), expected, rtol=1e-12)
    from xpcnn import functional as F
    y, cache = F.conv2d_forward(on(backend, x[:, ::-1, ::2, 1::3]), on(backend, np.ones((2, 2, 2, 2))))
    assert tuple(y.shape) == (4, 2, 3, 4)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_, np.complex64, np.float16])
def test_non_float_inputs_are_refused_naming_the_accepted_dtypes(dtype):
    model, opt = _trained()
    before = _snapshot(model, opt)
    with pytest.raises(TypeError, match=r"must have dtype float32 or float64 .*got dtype " + np.dtype(dtype).name):
        model(np.zeros((2, 1, 8, 8), dtype=dtype))
    with pytest.raises(TypeError, match=r"conv2d: x must have dtype float32 or float64, got " + np.dtype(dtype).name):
        xpcnn.functional.conv2d_forward(np.zeros((1, 1, 3, 3), dtype=dtype), np.ones((1, 1, 2, 2)))
    _assert_unchanged(model, before, opt)


@pytest.mark.parametrize("where", ["x", "y", "validation"])
def test_nan_or_inf_in_inputs_or_targets_stops_before_training(where):
    model, opt = _trained()
    before = _snapshot(model, opt)
    x, y = np.random.default_rng(1).standard_normal((6, 1, 8, 8)), np.eye(4)[np.arange(6) % 4]
    vx, vy = x.copy(), y.copy()
    {"x": x, "y": y, "validation": vx}[where][2, 0] = np.inf if where == "y" else np.nan
    with pytest.raises(ValueError, match=r"contains NaN or infinity"):
        model.fit(x, y, optimizer=opt, validation_data=(vx, vy), progress=False)
    _assert_unchanged(model, before, opt)


@pytest.mark.parametrize("labels,pattern", [
    (np.array([0, 1, 2, 3, 4, 0]), r"fit: labels must lie in \[0, 4\) for a model with 4 outputs; sample 4 has label 4"),
    (np.array([0, 1, -1, 3, 0, 0]), r"sample 2 has label -1"),
    (np.zeros((6, 2), dtype=int), r"fit: integer labels must have shape \(6,\), got \(6, 2\)"),
    (np.full((6, 4), 0.3), r"fit: probability targets must be non-negative and sum to 1; row 0 sums to 1.2"),
    (np.full((6, 3), 1 / 3), r"fit: probability targets must have shape \(6, 4\), got \(6, 3\)"),
    (np.array(["a"] * 6), r"fit: labels must be integers or float probabilities"),
])
def test_bad_labels_are_refused_before_any_update(labels, pattern):
    model, opt = _trained()
    before = _snapshot(model, opt)
    with pytest.raises((ValueError, TypeError), match=pattern):
        model.fit(np.zeros((6, 1, 8, 8)), labels, optimizer=opt, batch_size=2, progress=False)
    _assert_unchanged(model, before, opt)


def test_arrays_of_two_backends_are_refused_and_numpy_inputs_are_converted(backend):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"linear: all arrays must come from one backend, got a mix of .*numpy.*torch"):
        xpcnn.functional.linear_forward(np.ones((2, 3)), torch.ones((4, 3), dtype=torch.float64))
    model = _model(backend.name)
    out = model(np.zeros((2, 1, 8, 8)))                  # a host NumPy array is moved to the model's backend
    assert xpcnn.backend.backend_of(out) == backend.name
    other = "torch" if backend.name != "torch" else "array_api_strict"
    with pytest.raises(TypeError, match=rf"x is a {other} array but the model is on {backend.name}"):
        model(xpcnn.to_backend(np.zeros((2, 1, 8, 8)), other))


@pytest.mark.parametrize("make,pattern", [
    (lambda p: optim.SGD(p, lr=-0.01), r"SGD: lr must be in \[0.0, inf\), got -0.01"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=1.0), r"SGD: momentum must be in \[0.0, 1.0\), got 1.0"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-0.5), r"SGD: momentum must be in \[0.0, 1.0\), got -0.5"),
    (lambda p: optim.RMSprop(p, momentum=1.5), r"RMSprop: momentum must be in \[0.0, 1.0\)"),
    (lambda p: optim.Adam(p, lr=float("inf")), r"Adam: lr must be a finite number"),
    (lambda p: L.Dropout(1.0), r"Dropout: p must be a probability in \[0, 1\), got 1.0"),
    (lambda p: L.Dropout(-0.2), r"Dropout: p must be a probability in \[0, 1\), got -0.2"),
    (lambda p: L.Conv2D(1, 2, 0), r"Conv2D\(1->2\): kernel_size must be >= 1, got 0"),
    (lambda p: L.Conv2D(1, 2, 3, stride=0), r"Conv2D\(1->2\): stride must be >= 1, got 0"),
    (lambda p: L.Conv2D(1, 2, 3, padding=-2), r"Conv2D\(1->2\): padding must be >= 0, got -2"),
    (lambda p: L.Conv2D(4, 6, 3, groups=4), r"Conv2D\(4->6\): groups=4 must divide in_channels=4 and out_channels=6"),
    (lambda p: L.MaxPool2D(0), r"MaxPool2D\(0\): kernel_size must be >= 1, got 0"),
    (lambda p: L.AvgPool2D(2, stride=0), r"AvgPool2D\(2\): stride must be >= 1, got 0"),
    (lambda p: optim.StepLR(optim.SGD(p, lr=0.1), step_size=True), r"StepLR: step_size must be a positive int, got True"),
    (lambda p: optim.CosineAnnealingLR(optim.SGD(p, lr=0.1), T_max=0),
     r"CosineAnnealingLR: T_max must be a positive int, got 0"),
    (lambda p: L.Dense(4, True), r"Dense\(4->True\): out_features must be a positive int, got True"),
    (lambda p: L.BatchNorm2D(0), r"BatchNorm2D: num_features must be a positive int, got 0"),
])
def test_invalid_hyperparameters_are_refused(make, pattern):
    model = _model()
    with pytest.raises((ValueError, TypeError), match=pattern):
        make(model.parameters())


def test_fit_refuses_a_bool_for_epochs():
    model, opt = _trained()
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=r"fit: epochs must be a positive int, got True"):
        model.fit(np.zeros((2, 1, 8, 8)), np.zeros(2, int), optimizer=opt, epochs=True, progress=False)
    _assert_unchanged(model, before, opt)


def test_load_state_dict_lists_every_mismatch_in_one_error_and_changes_nothing(backend):
    model, opt = _trained(backend.name)
    before = _snapshot(model, opt)
    bad = model.state_dict()
    bad.pop("0.bias")
    bad["0.weight"] = np.zeros((3, 1, 2, 2))
    bad["4.bias"] = np.zeros(4, dtype=np.int64)
    bad["4.weight"] = np.full((4, 48), np.nan)
    bad["7.weight"] = np.zeros(3)
    with pytest.raises(ValueError) as info:
        model.load_state_dict(bad)
    message = str(info.value)
    for part in ("'0.weight': expected shape (3, 1, 3, 3), got (3, 1, 2, 2)", "missing key '0.bias'",
                 "'4.bias': expected a 'f'-kind dtype like float64, got int64", "'4.weight': holds NaN or infinity",
                 "unexpected key '7.weight'"):
        assert part in message
    assert message.count("\n") == 5
    _assert_unchanged(model, before, opt)
