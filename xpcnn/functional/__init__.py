"""Stateless math: every op is ``*_forward(...) -> (out, cache)`` and ``*_backward(dout, cache) -> grads``.

No concrete array library is imported here: each op asks its inputs for their Array API
namespace and creates new arrays on the inputs' device with the inputs' dtype.
"""
from .activations import (
    leaky_relu_backward, leaky_relu_forward, log_softmax_backward, log_softmax_forward,
    relu_backward, relu_forward, sigmoid_backward, sigmoid_forward, softmax_backward,
    softmax_forward, tanh_backward, tanh_forward,
)
from .conv import Conv2dCache, conv2d_backward, conv2d_forward
from .linear import LinearCache, linear_backward, linear_forward
from .batchnorm import BatchNormCache, batch_norm2d_backward, batch_norm2d_forward
from .dropout import dropout_backward, dropout_forward
from .losses import mse_loss, softmax_cross_entropy
from .pool import PoolCache, avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward

__all__ = [
    "conv2d_forward", "conv2d_backward", "Conv2dCache",
    "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward", "PoolCache",
    "linear_forward", "linear_backward", "LinearCache",
    "relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
    "sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward",
    "softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
    "softmax_cross_entropy", "mse_loss",
    "batch_norm2d_forward", "batch_norm2d_backward", "BatchNormCache", "dropout_forward", "dropout_backward",
]
