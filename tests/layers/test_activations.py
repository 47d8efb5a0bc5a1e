"""xpcnn.layers.activations: ``activation=`` on a layer is the composed activation layer, forward and
backward."""
import numpy as np

import xpcnn
from xpcnn import layers as L
from xpcnn.backend import to_numpy
from xpcnn.testing import assert_close


def test_activation_is_the_composed_layers_forward_and_backward(backend):
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((2, 4, 5, 5))
    fused = xpcnn.Sequential([L.Conv2D(3, 4, 3, padding=1, activation="sigmoid")], seed=1, backend=backend,
                             dtype="float64")
    plain = xpcnn.Sequential([L.Conv2D(3, 4, 3, padding=1), L.Sigmoid()], seed=1, backend=backend, dtype="float64")
    assert_close(fused(x), to_numpy(plain(x)), backend)
    assert_close(fused.backward(dy), to_numpy(plain.backward(dy)), backend, name="dx")
    assert_close(fused[0].weight.grad, to_numpy(plain[0].weight.grad), backend, name="dweight")
    assert "Conv2D(3->4, k=3x3, p=1) + Sigmoid()" in fused.summary_text((3, 5, 5))
