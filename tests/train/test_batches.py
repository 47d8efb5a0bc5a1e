"""xpcnn.train.batches: host arrays in, one transfer per batch, the same order on every backend."""
import numpy as np
import pytest

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


def _host(pairs):
    return [(xpcnn.to_numpy(a), None if b is None else xpcnn.to_numpy(b)) for a, b in pairs]


def _assert_same_batches(got, expected):
    assert len(got) == len(expected)
    for (xa, ya), (xb, yb) in zip(got, expected):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_device_data_gives_the_host_batches_with_and_without_shuffling_and_shifts(backend):
    from xpcnn.datasets import RandomShift
    from xpcnn.train.batches import DeviceData
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((11, 2, 6, 5)), rng.integers(0, 10, 11)
    data = DeviceData(x, y, backend, "float64")
    for shuffle, augment in [(False, None), (True, None), (True, RandomShift(2)), (False, RandomShift(1))]:
        got = _host(data.batches(4, shuffle=shuffle, rng=np.random.default_rng(5), augment=augment))
        expected = _host(batches(x, y, 4, backend="numpy", dtype="float64", shuffle=shuffle,
                                 rng=np.random.default_rng(5), augment=augment))
        _assert_same_batches(got, expected)


def test_random_shift_moves_each_image_by_its_offset_and_fills_with_the_minimum(backend):
    from xpcnn.datasets import RandomShift
    x = np.arange(2 * 1 * 4 * 5, dtype=np.float64).reshape(2, 1, 4, 5) + 1.0
    offsets = np.array([[1, -2], [0, 0]])
    shifted = xpcnn.to_numpy(RandomShift(2).apply(xpcnn.to_backend(x, backend), xpcnn.to_backend(offsets, backend)))
    expected = np.full_like(x, x.min())
    expected[0, 0, :3, 2:] = x[0, 0, 1:, :3]             # out[r, c] = x[r + 1, c - 2]
    expected[1] = x[1]
    np.testing.assert_array_equal(shifted, expected)
    draws = RandomShift(2).draw(np.random.default_rng(0), 1000)
    assert draws.shape == (1000, 2) and draws.min() == -2 and draws.max() == 2


def test_random_shift_refuses_a_bad_size():
    from xpcnn.datasets import RandomShift
    import pytest
    with pytest.raises(ValueError, match="RandomShift: max_shift must be an int >= 0, got -1"):
        RandomShift(-1)


def test_fit_gathers_batches_on_the_device_or_prefetches_them_and_trains_the_same(backend):
    """The same run three ways: data on the device, host batches prefetched by a thread, host batches inline."""
    from xpcnn import config, layers as L, optim
    from xpcnn.datasets import RandomShift
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((40, 1, 6, 6)), rng.integers(0, 3, 40)
    runs = []
    for settings in ({}, {"device_data_bytes": 1}, {"device_data_bytes": 1, "prefetch_batches": 0}):
        model = xpcnn.Sequential([L.Conv2D(1, 2, 3), L.ReLU(), L.Flatten(), L.Dense(32, 3)], backend=backend,
                                 seed=0, dtype="float64")
        with config.using(**settings):
            history = model.fit(x, y, optimizer=optim.SGD(model.parameters(), lr=0.1), epochs=2, batch_size=8,
                                seed=4, verbose=0, augment=RandomShift(1), validation_data=(x[:9], y[:9]))
        runs.append((history.history, model.state_dict()))
    for history, state in runs[1:]:
        assert history["loss"] == runs[0][0]["loss"] and history["val_loss"] == runs[0][0]["val_loss"]
        for key, value in state.items():
            np.testing.assert_array_equal(value, runs[0][1][key])


def test_prefetching_keeps_order_raises_the_producers_error_and_stops_its_thread():
    import threading
    import pytest
    from xpcnn.train.batches import prefetched
    assert list(prefetched(iter(range(50)), 2)) == list(range(50))

    def failing():
        yield 1
        raise KeyError("bad batch")

    stream = prefetched(failing(), 3)
    assert next(stream) == 1
    with pytest.raises(KeyError, match="bad batch"):
        next(stream)
    early = prefetched(iter(range(1000)), 2)
    assert next(early) == 0
    early.close()                                        # a consumer that stops early
    assert not any(t.name == "xpcnn-prefetch" for t in threading.enumerate())


def test_a_sharded_feed_yields_each_processs_share_weight_and_tells_sync_batch_norm_the_global_batch(monkeypatch):
    """A global batch of 15 over 2 processes splits 8 + 7: each shard's loss gradient is weighted by
    local * processes / global, so the average over the processes is the global batch's; the global size is
    set for SyncBatchNorm2D during each step and forgotten after the epoch. Alone: weight 1, nothing set."""
    from xpcnn import distributed as D
    from xpcnn.train.batches import ProcessGroup, TrainingFeed, feed
    x, y = np.arange(20 * 4, dtype=np.float64).reshape(20, 1, 2, 2), np.arange(20)
    seen = []
    monkeypatch.setattr(D, "set_global_batch", seen.append)
    for rank, sizes in ((0, [8, 3]), (1, [7, 2])):
        data = TrainingFeed(feed(x, y, backend="numpy", dtype="float64"), 15, rng=np.random.default_rng(0),
                            group=ProcessGroup(rank, 2, distributed=True))
        batches_ = list(data)
        assert [len(b.y) for b in batches_] == sizes and [b.samples for b in batches_] == [15, 5]
        assert [b.weight for b in batches_] == pytest.approx([sizes[0] * 2 / 15, sizes[1] * 2 / 5])
        assert seen == [15, 5, None] and len(data) == 2 and data.samples == 20
        seen.clear()
    alone = list(TrainingFeed(feed(x, y, backend="numpy", dtype="float64"), 15, rng=np.random.default_rng(0)))
    assert [(b.samples, b.weight) for b in alone] == [(15, 1.0), (5, 1.0)] and seen == []
