"""Memory order: conv, batch-norm, activation and pooling outputs, and the input gradients they return,
are (N, C, H, W) views of channels-last memory on NumPy, so that the elementwise passes between layers
never combine two memory orders (NumPy runs such mixed passes several times slower)."""
import numpy as np
import pytest

from xpcnn import functional as F


def channels_last(a) -> bool:
    """Channels innermost, then width: every image row is one contiguous run of W*C values
    (a cropped view of a padded channels-last gradient qualifies; an NCHW array does not)."""
    _, c, _, w = a.shape
    return c == 1 or (a.strides[1] == a.itemsize and (w == 1 or a.strides[3] == c * a.itemsize))


@pytest.mark.parametrize("c_in", [3, 16])          # channel-major and channels-last unrolling
def test_a_conv_block_keeps_channels_last_memory_forward_and_backward(c_in):
    rng = np.random.default_rng(0)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)   # noqa: E731
    x = f32(4, c_in, 10, 10)                                             # a user's NCHW-contiguous batch
    y, conv_cache = F.conv2d_forward(x, f32(8, c_in, 3, 3), f32(8), padding=1)
    z, bn_cache = F.batch_norm2d_forward(y, f32(8), f32(8), None, None, training=True)
    a, relu_cache = F.relu_forward(z)
    p, pool_cache = F.max_pool2d_forward(a, 2)
    q, avg_cache = F.avg_pool2d_forward(a, 3, 1, 1, count_include_pad=False)
    for name, array in (("conv", y), ("batch norm", z), ("relu", a), ("max pool", p), ("avg pool", q)):
        assert channels_last(array), f"{name} output strides {array.strides}"

    dp = f32(*p.shape)                                                   # NCHW-contiguous, as after a Flatten
    da = F.max_pool2d_backward(dp, pool_cache)
    da_avg = F.avg_pool2d_backward(f32(*q.shape), avg_cache)
    dz = F.relu_backward(da, relu_cache)
    dy, _, _ = F.batch_norm2d_backward(dz, bn_cache)
    dx, _, _ = F.conv2d_backward(dy, conv_cache)
    for name, array in (("max pool", da), ("avg pool", da_avg), ("relu", dz), ("batch norm", dy), ("conv", dx)):
        assert channels_last(array), f"{name} input gradient strides {array.strides}"
