"""need_params=False: a backward asked for the input gradient only gives the same dx and no parameter
gradients (what a frozen layer asks for)."""
import numpy as np

import xpcnn
from xpcnn import functional as F
from xpcnn.layers import Conv2D, Dense
from xpcnn.testing import assert_close


def test_functional_backward_without_parameter_gradients_gives_the_same_dx(backend):
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    conv = Conv2D(1, 3, 3, padding=1)
    y = conv(xpcnn.to_backend(x, backend, dtype="float64"))
    dy = xpcnn.to_backend(np.ones(tuple(y.shape)), backend, dtype="float64")
    full = F.conv2d_backward(dy, conv.cache)
    frozen = F.conv2d_backward(dy, conv.cache, need_params=False)
    assert frozen[1] is None and frozen[2] is None
    assert_close(frozen[0], xpcnn.to_numpy(full[0]), backend, name="dx")
    dense = Dense(5, 3)
    dense(xpcnn.to_backend(np.ones((2, 5)), backend, dtype="float64"))
    dx, dw, db = F.linear_backward(xpcnn.to_backend(np.ones((2, 3)), backend, dtype="float64"), dense.cache,
                                   need_params=False)
    assert dw is None and db is None and tuple(dx.shape) == (2, 5)
