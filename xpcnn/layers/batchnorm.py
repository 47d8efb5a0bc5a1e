"""BatchNorm2D: per-channel normalisation with running statistics (math in functional.batchnorm)."""
from __future__ import annotations

import array_api_compat
import numpy as np

from .. import functional as F
from .. import checks
from ..checks import positive_int
from .base import Layer, check_ndim


class BatchNorm2D(Layer):
    """Batch normalisation per channel (torch.nn.BatchNorm2d's names and defaults).

    Training uses the batch statistics and updates ``running_mean``/``running_var`` as
    r <- (1 - momentum) r + momentum * batch statistic (the variance unbiased, as PyTorch does);
    evaluation uses the running statistics.
    """

    param_names = ("weight", "bias")
    buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    inferred_size = "num_features"
    reduce = None      # sums over processes in training (xpcnn.distributed.SyncBatchNorm2D sets it)

    def __init__(self, num_features: int | None = None, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True):
        super().__init__()
        name = type(self).__name__
        if num_features is not None:
            num_features = positive_int(name, "num_features", num_features)
        owner = f"{name}({num_features})"
        momentum, eps = checks.finite_number(owner, "momentum", momentum), checks.finite_number(owner, "eps", eps)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{owner}: momentum must be in [0, 1], got {momentum!r}")
        if not eps > 0:
            raise ValueError(f"{owner}: eps must be > 0, got {eps!r}")
        affine = checks.flag(owner, "affine", affine)
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        self.weight = self.bias = None

    def init_parameters(self, rng):
        if not self.affine:
            return {}
        return {"weight": np.ones(self.num_features), "bias": np.zeros(self.num_features)}

    def init_buffers(self):
        return {"running_mean": np.zeros(self.num_features), "running_var": np.ones(self.num_features),
                "num_batches_tracked": np.asarray(0, dtype=np.int64)}

    def infer(self, input_shape):
        if self.num_features is None:
            self._check_rank(input_shape)
            self.num_features = int(input_shape[1])
        return self.output_shape(input_shape)

    def _check_rank(self, input_shape):
        check_ndim(self, input_shape, 4, "(N, C, H, W)")

    def output_shape(self, input_shape):
        self._check_rank(input_shape)
        if input_shape[1] != self.num_features:
            raise ValueError(f"{self.label()}: expected input with {self.num_features} channels, got shape {tuple(input_shape)}")
        return tuple(input_shape)

    def forward(self, x):
        self._ensure_built(x)
        self.check_input(x)
        return self._normalize(x)

    def _normalize(self, x):
        """The functional forward on (N, C, H, W), updating the running statistics in training."""
        y, self.cache = F.batch_norm2d_forward(
            x, self._data(self.weight), self._data(self.bias),
            self.running_mean, self.running_var, training=self.training, eps=self.eps, reduce=self.reduce)
        if self.training:
            m, count = self.momentum, self.cache.count
            self.running_mean = (1.0 - m) * self.running_mean + m * self.cache.batch_mean
            # the unbiased variance (the batch's times M / (M - 1)) blended in with one factor
            self.running_var = (1.0 - m) * self.running_var + (m * count / (count - 1)) * self.cache.batch_var
            self.num_batches_tracked = self.num_batches_tracked + 1
        return y

    def backward(self, dy, need_dx=True):
        return self._keep_gradients(F.batch_norm2d_backward(dy, self.cache))   # without affine: nothing kept

    def extra_repr(self):
        return "?" if self.num_features is None else f"{self.num_features}"

    def config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum, "affine": self.affine}


class BatchNorm1D(BatchNorm2D):
    """Batch normalisation of features (N, C) or sequences (N, C, L), per feature C, with
    torch.nn.BatchNorm1d's names and defaults; the statistics are taken over N (and L)."""

    def _check_rank(self, input_shape):
        if len(input_shape) not in (2, 3):
            raise self.fail(input_shape, "a 2-D input (N, C) or a 3-D input (N, C, L)")

    def forward(self, x):
        self._ensure_built(x)
        self.check_input(x)
        xp = array_api_compat.array_namespace(x)
        shape = tuple(x.shape)
        return xp.reshape(self._normalize(xp.reshape(x, shape + (1,) * (4 - len(shape)))), shape)

    def backward(self, dy, need_dx=True):
        xp = array_api_compat.array_namespace(dy)
        shape = tuple(dy.shape)
        return xp.reshape(super().backward(xp.reshape(dy, shape + (1,) * (4 - len(shape))), need_dx), shape)
