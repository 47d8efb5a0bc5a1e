"""Dropout: a random keep-mask per forward pass in training, the identity in evaluation."""
from __future__ import annotations

from .. import functional as F
from ..backend import RandomStream
from .base import Layer


class Dropout(Layer):
    """Inverted dropout: in training each value is kept with probability 1 - p and scaled by 1/(1-p);
    in evaluation it is the identity. Masks are drawn on the input's device by the model's
    :class:`~xpcnn.backend.RandomStream` (``Sequential(..., dropout_rng="host")`` draws them on the host
    instead, identical on every backend); a seed gives the same masks on every run of one backend."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be a probability in [0, 1), got {p!r}")
        self.p = float(p)

    def forward(self, x):
        self._ensure_built(x)
        if not self.training or self.p == 0.0:
            self.cache = None
            return x
        if self.noise is None:                 # a Dropout used on its own: a stream from its build generator
            self.noise = RandomStream(int(self.rng.integers(2**63)))
        keep = self.noise.keep_mask(tuple(x.shape), self.p, x)
        y, self.cache = F.dropout_forward(x, keep, self.p)
        return y

    def backward(self, dy, need_dx=True):
        return dy if self.cache is None else F.dropout_backward(dy, self.cache)

    def extra_repr(self):
        return f"p={self.p}"

    def config(self):
        return {"p": self.p}
