"""GlobalAvgPool2D is one mean over (H, W) forward and one broadcast backward (an average-pool loop over the
whole map launched one kernel per window offset: 64 of them per 8x8 map on a GPU)."""
import numpy as np
import pytest

import xpcnn
from xpcnn import config, layers as L
from xpcnn.testing import assert_close, on


def test_values_and_gradient_on_every_backend(backend):
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((3, 4, 5, 7)), rng.standard_normal((3, 4))
    layer = L.GlobalAvgPool2D()
    y = layer(on(backend, x))
    assert_close(y, x.mean(axis=(2, 3)), backend, name="y")
    dx = layer.backward(on(backend, dy))
    assert_close(dx, np.broadcast_to(dy[:, :, None, None] / 35, x.shape), backend, name="dx")


@pytest.mark.parametrize("few_launches", ["off", "on"])
def test_one_reduction_forward_and_one_kernel_backward(few_launches):
    pytest.importorskip("torch")
    from xpcnn.testing import KernelLaunches
    layer = L.GlobalAvgPool2D()
    x = xpcnn.to_backend(np.ones((2, 16, 8, 8), np.float32), "torch")
    dy = xpcnn.to_backend(np.ones((2, 16), np.float32), "torch")
    with KernelLaunches() as forward, config.using(few_launches=few_launches):
        layer(x)
    with KernelLaunches() as backward, config.using(few_launches=few_launches):
        dx = layer.backward(dy)
    assert forward.count == 1 and backward.count == 1, (forward.by_op, backward.by_op)
    assert tuple(dx.shape) == (2, 16, 8, 8)
