"""xpcnn.layers.dropout: inverted dropout in training, the identity in evaluation."""
import numpy as np

import xpcnn
from xpcnn import layers as L


def test_dropout_scales_in_training_and_is_identity_in_eval():
    model = xpcnn.Sequential([L.Dropout(0.25)], seed=0, dtype="float64")
    x = np.ones((200, 50))
    y = model(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_array_equal(model.backward(np.ones_like(x)), y)
    model.eval()
    np.testing.assert_array_equal(model(x), x)
