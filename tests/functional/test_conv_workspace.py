"""Blocked convolution: a batch processed in chunks gives the same values as in one block."""
import numpy as np
import pytest

from xpcnn import config, functional as F, reference as R
from xpcnn.functional import conv as conv_module
from xpcnn.testing import assert_close, on


@pytest.fixture
def tiny_workspace():
    with config.using(conv_workspace_bytes=3000):            # a few samples' columns at most
        yield


@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(stride=2, padding=(1, 0)), dict(groups=2, dilation=2,
                                                                                         padding=2)])
@pytest.mark.parametrize("channel_major_below", [0, 10**6])
def test_chunked_convolution_equals_the_reference(backend, tiny_workspace, kwargs, channel_major_below, monkeypatch):
    monkeypatch.setattr(conv_module, "CHANNEL_MAJOR_BELOW", channel_major_below)
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((7, 4, 8, 7)), rng.standard_normal((6, 4 // kwargs.get("groups", 1), 3, 3)), \
        rng.standard_normal(6)
    y, cache = F.conv2d_forward(*on(backend, x, w, b), **kwargs)
    assert cache.cols is None and 1 <= cache.chunk < 7
    dy = rng.standard_normal(tuple(y.shape))
    dx, dw, db = F.conv2d_backward(on(backend, dy), cache)
    geometry = dict(stride=kwargs.get("stride", 1), padding=kwargs.get("padding", 0),
                    dilation=kwargs.get("dilation", 1), groups=kwargs.get("groups", 1))
    dx_ref, dw_ref, db_ref = R.conv2d_backward(dy, x, w, **geometry)
    assert_close(y, R.conv2d(x, w, b, **geometry), backend, name="y")
    assert_close(dx, dx_ref, backend, name="dx")
    assert_close(dw, dw_ref, backend, name="dweight")
    assert_close(db, db_ref, backend, name="dbias")
    _, dw_only, _ = F.conv2d_backward(on(backend, dy), cache, need_dx=False)
    assert_close(dw_only, dw_ref, backend, name="dweight without dx")


def test_cpu_blocks_unless_the_columns_are_small_and_gpu_takes_the_workspace(monkeypatch):
    x = np.zeros((1, 1, 1, 1), np.float32)
    per_sample = 2**20                                       # 1 MiB of columns per sample
    whole = config.get().conv_whole_bytes // per_sample
    assert conv_module._chunk_size(x, per_sample, whole) == whole                       # built at once
    assert conv_module._chunk_size(x, per_sample, whole + 1) == config.get().conv_block_bytes // per_sample
    assert conv_module._chunk_size(x, 10**12, 4) == 1
    with config.using(few_launches="on"):                  # the few-launch path a GPU takes: one block
        assert conv_module._chunk_size(x, per_sample, 10**6) == config.get().conv_workspace_bytes // per_sample
    monkeypatch.setattr(conv_module, "launch_bound", lambda array: True)
    assert conv_module._chunk_size(x, per_sample, 10**6) == config.get().conv_workspace_bytes // per_sample


def test_peak_memory_stays_near_the_workspace_plus_inputs_and_outputs():
    from benchmarks.harness import peak_memory
    from xpcnn.backend import resolve
    small = peak_memory(resolve("numpy"), n=32, workspace_mb=1)
    assert small["peak_mb"] <= 1 + 2.5 * small["inputs_outputs_mb"]
    with config.using(conv_block_bytes=2**40):        # one block: the whole batch's columns at once
        whole = peak_memory(resolve("numpy"), n=32)
    assert whole["peak_mb"] > small["peak_mb"] + 10


@pytest.fixture
def small_blocks():
    with config.using(conv_block_bytes=100_000):                  # below the batch's 280 kB of columns
        yield


def test_evaluation_forward_blocks_the_columns_and_a_backward_pass_still_works(small_blocks):
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((6, 8, 9, 9)), rng.standard_normal((5, 8, 3, 3)), rng.standard_normal(5)
    y_train, kept = F.conv2d_forward(x, w, b, padding=1)
    y_eval, blocked = F.conv2d_forward(x, w, b, padding=1, training=False)
    assert kept.cols is not None                                       # small: built whole and kept
    assert blocked.cols is None and blocked.chunk < 6                    # columns dropped, input kept
    np.testing.assert_allclose(y_eval, y_train, rtol=1e-12)
    dy = rng.standard_normal(tuple(y_eval.shape))
    for got, want in zip(F.conv2d_backward(dy, blocked), R.conv2d_backward(dy, x, w, padding=1)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_conv_layer_blocks_in_evaluation_mode(small_blocks):
    from xpcnn.layers import Conv2D
    from xpcnn.backend import resolve
    layer = Conv2D(8, 4, 3, padding=1)
    layer._materialize(resolve("numpy"), np.random.default_rng(0), "float64")
    x = np.random.default_rng(1).standard_normal((6, 8, 9, 9))
    layer.forward(x)
    assert layer.cache.cols is not None
    layer.training = False
    layer.forward(x)
    assert layer.cache.cols is None


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channel_major_below", [0, 10**6])
def test_a_batch_that_is_not_a_multiple_of_the_block_works_in_training_and_evaluation(
        backend, training, channel_major_below, monkeypatch):
    """7 samples in blocks of 3: the last block holds one sample and its slice must stop at the batch's end
    (array_api_strict refuses a stop past it)."""
    monkeypatch.setattr(conv_module, "CHANNEL_MAJOR_BELOW", channel_major_below)
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((7, 4, 8, 7)), rng.standard_normal((6, 4, 3, 3)), rng.standard_normal(6)
    per_sample = 8 * 7 * 9 * 4 * 8                         # float64 columns of one sample: OH*OW*kH*kW*C*8
    with config.using(conv_workspace_bytes=3 * per_sample):
        y, cache = F.conv2d_forward(*on(backend, x, w, b), padding=1, training=training)
        assert cache.chunk == 3 and cache.cols is None
        dy = rng.standard_normal(tuple(y.shape))
        dx, dw, db = F.conv2d_backward(on(backend, dy), cache)
    dx_ref, dw_ref, db_ref = R.conv2d_backward(dy, x, w, padding=1)
    assert_close(y, R.conv2d(x, w, b, padding=1), backend, name="y")
    assert_close(dx, dx_ref, backend, name="dx")
    assert_close(dw, dw_ref, backend, name="dweight")
    assert_close(db, db_ref, backend, name="dbias")


def _lenet_like(backend, mode):
    import xpcnn
    from xpcnn import layers as L
    model = xpcnn.Sequential([L.Conv2D(1, 4, 3, padding=1), L.BatchNorm2D(4), L.ReLU(), L.MaxPool2D(2),
                              L.Conv2D(4, 8, 3, padding=1), L.ReLU(), L.AvgPool2D(2), L.Flatten(),
                              L.Dropout(0.25), L.Dense(8 * 4 * 4, 10)], backend=backend, seed=0, dtype="float64",
                               dropout_rng="host")
    return getattr(model, mode)()


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_every_layer_of_a_model_takes_an_odd_batch_in_blocks(backend, mode):
    """The reported crash: evaluation of a LeNet-like model on array_api_strict with blocked columns."""
    model, reference = _lenet_like(backend, mode), _lenet_like("numpy", mode)
    x = np.random.default_rng(1).standard_normal((13, 1, 16, 16))
    with config.using(conv_workspace_bytes=3 * 16 * 16 * 9 * 8):        # 3 samples' columns of both convs
        y = model(x)
        assert model.layers[0].cache.chunk == model.layers[4].cache.chunk == 3
        dx = model.backward(on(backend, np.ones((13, 10))))
    assert_close(y, reference(x), backend, name="y")                     # the reference in one block
    assert_close(dx, reference.backward(np.ones((13, 10))), backend, name="dx")
