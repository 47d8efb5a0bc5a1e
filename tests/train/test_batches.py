"""xpcnn.train.batches: host arrays in, one transfer per batch, the same order on every backend."""
import numpy as np

import xpcnn
from xpcnn.train import batches


def test_batches_move_once_per_batch_and_shuffle_reproducibly(backend):
    x = np.arange(10 * 4, dtype=np.float64).reshape(10, 1, 2, 2)
    y = np.arange(10)
    first = [(xpcnn.to_numpy(a), xpcnn.to_numpy(b)) for a, b in
             batches(x, y, 4, backend=backend, shuffle=True, rng=np.random.default_rng(3))]
    again = [(xpcnn.to_numpy(a), xpcnn.to_numpy(b)) for a, b in
             batches(x, y, 4, backend="numpy", shuffle=True, rng=np.random.default_rng(3))]
    assert [len(b) for _, b in first] == [4, 4, 2]
    for (xa, ya), (xb, yb) in zip(first, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa[:, 0, 0, 0], ya * 4)      # images stay with their labels
    assert sorted(np.concatenate([b for _, b in first]).tolist()) == list(range(10))
