"""The op code names no array library: the same lines run on array_api_strict."""
import pathlib
import re

import numpy as np

import xpcnn.functional
from xpcnn import functional as F
from xpcnn.testing import on

FUNCTIONAL_DIR = pathlib.Path(xpcnn.functional.__file__).parent


def test_functional_imports_no_array_library():
    pattern = re.compile(r"^\s*(import|from)\s+(numpy|cupy|torch|jax|array_api_strict)\b", re.M)
    offenders = [p.name for p in FUNCTIONAL_DIR.glob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_whole_forward_and_backward_of_every_op_runs_on_array_api_strict():
    import pytest
    strict = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(0)
    x = on("array_api_strict", rng.standard_normal((2, 4, 8, 8)))
    w, b = on("array_api_strict", rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4))
    y, c = F.conv2d_forward(x, w, b, padding="same", groups=2)
    grads = F.conv2d_backward(y, c)
    y, c = F.max_pool2d_forward(y, 3, 2, 1)
    grads += (F.max_pool2d_backward(y, c),)
    y, c = F.avg_pool2d_forward(y, 2, 1, 1, count_include_pad=False)
    grads += (F.avg_pool2d_backward(y, c),)
    flat = strict.reshape(y, (2, -1))
    pairs = [(F.relu_forward, F.relu_backward), (F.leaky_relu_forward, F.leaky_relu_backward),
             (F.sigmoid_forward, F.sigmoid_backward), (F.tanh_forward, F.tanh_backward),
             (F.softmax_forward, F.softmax_backward), (F.log_softmax_forward, F.log_softmax_backward)]
    for forward, backward in pairs:
        out, c = forward(flat)
        grads += (backward(out, c),)
    wd = on("array_api_strict", rng.standard_normal((3, flat.shape[1])))
    logits, c = F.linear_forward(flat, wd)
    grads += F.linear_backward(logits, c)[:2]
    labels = on("array_api_strict", np.array([0, 2]))
    loss, dz = F.softmax_cross_entropy(logits, labels)
    mse, dp = F.mse_loss(logits, logits * 0.5)
    for array in grads + (loss, dz, mse, dp):
        assert type(array).__module__.startswith("array_api_strict")
