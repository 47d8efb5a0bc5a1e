"""Validation once per boundary: a model checks a batch once, its layers and ops trust that check; an op
called directly still checks everything, label values too (on any backend), and trusts them inside
checks.trusted()."""
import contextlib

import numpy as np
import pytest

import xpcnn
from xpcnn import checks, functional as F, layers as L
from xpcnn.testing import on


def _counting(monkeypatch):
    """Count calls of every validation helper of xpcnn.checks."""
    calls = []
    for name in ("namespace", "check_float", "check_ndim", "check_same_dtype", "check_same_device", "check_window"):
        original = getattr(checks, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)
        monkeypatch.setattr(checks, name, spy)
    return calls


def _model():
    return xpcnn.Sequential([L.Conv2D(1, 4, 3, padding=1), L.BatchNorm2D(4), L.ReLU(), L.MaxPool2D(2),
                             L.Flatten(), L.Dropout(0.5), L.Dense(4 * 4 * 4, 3)], seed=0)


def test_a_model_checks_a_batch_once_and_its_layers_and_ops_do_not_repeat_it(monkeypatch):
    model = _model()
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    model(x)                                               # first batch of this shape: the stack is walked once
    calls = _counting(monkeypatch)
    shape_checks = []
    for layer in model.layers:
        original = layer.output_shape
        monkeypatch.setattr(layer, "output_shape",
                            lambda shape, _o=original: shape_checks.append(shape) or _o(shape))
    y = model(x)
    model.backward(np.ones(tuple(y.shape), np.float32))
    assert calls == [] and shape_checks == []              # nothing re-checked inside the model


def test_an_op_or_a_layer_called_directly_still_checks_its_input(monkeypatch):
    calls = _counting(monkeypatch)
    with pytest.raises(ValueError, match=r"conv2d: expected input with 3 channels"):
        F.conv2d_forward(np.zeros((1, 2, 5, 5)), np.zeros((2, 3, 3, 3)))
    assert "namespace" in calls
    layer = L.Conv2D(3, 2, 3)._materialize("numpy", np.random.default_rng(0), "float64")
    with pytest.raises(ValueError, match=r"Conv2D\(3->2\): expected input with 3 channels"):
        layer.forward(np.zeros((1, 2, 5, 5)))


def test_label_values_are_checked_on_every_backend_when_called_directly_and_trusted_inside_a_checked_block(backend):
    logits = on(backend, np.zeros((2, 3)))
    for bad in (on(backend, np.array([0, 7])), on(backend, np.array([-1, 0]))):
        for check in (None, True):                              # the default checks direct calls on any backend
            with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got values from"):
                F.softmax_cross_entropy(logits, bad, check_labels=check)
        F.softmax_cross_entropy(logits, bad, check_labels=False)
        with checks.trusted():                                  # the caller checked: nothing is read
            F.softmax_cross_entropy(logits, bad)
    with pytest.raises(ValueError, match=r"probability targets must be finite and non-negative"):
        F.softmax_cross_entropy(logits, on(backend, np.array([[0.5, 0.5, 0.0], [1.5, -0.5, 0.0]])))
    with pytest.raises(TypeError, match="softmax_cross_entropy: check_labels must be True, False or None, got 'yes'"):
        F.softmax_cross_entropy(logits, on(backend, np.array([0, 1])), check_labels="yes")


def test_checking_labels_on_the_device_costs_two_reads_and_none_otherwise():
    """Checking reads the labels' min and max (the documented price): check_labels=True, and the default on a
    direct call; inside checks.trusted() the default and False read nothing. A whole training step reading
    nothing is tests/train/test_host_reads.py's."""
    pytest.importorskip("torch")
    from xpcnn.testing import Transfers
    logits = xpcnn.to_backend(np.zeros((6, 3), np.float32), "torch")
    y = xpcnn.to_backend(np.array([0, 1, 2, 0, 1, 2]), "torch")
    for check, trusted, reads in ((True, False, 2), (None, False, 2), (None, True, 0), (False, False, 0)):
        with Transfers() as transfers, (checks.trusted() if trusted else contextlib.nullcontext()):
            F.softmax_cross_entropy(logits, y, check_labels=check)
        assert transfers.reads == reads, (check, trusted, transfers.read_calls)
