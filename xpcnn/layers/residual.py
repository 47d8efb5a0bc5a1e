"""Residual: y = block(x) + shortcut(x), the skip connection of ResNets.

Backward is the chain rule's sum rule: δ reaches x along both branches, so
dL/dx = block'(x)ᵀ δ + shortcut'(x)ᵀ δ (with the identity shortcut, the second term is δ itself).
"""
from __future__ import annotations

from typing import Any

from .base import Layer, claim


class Residual(Layer):
    """``y = block(x) + shortcut(x)``; ``shortcut=None`` is the identity. ``block`` and ``shortcut`` are
    layers or Sequentials; their state-dict keys are ``block.*`` and ``shortcut.*``, the attribute names a
    PyTorch module with ``self.block`` and ``self.shortcut`` gives. The two branches must give one shape."""

    def __init__(self, block: Layer, shortcut: Layer | None = None):
        super().__init__()
        for name, value in (("block", block), ("shortcut", shortcut)):
            if value is not None and not isinstance(value, Layer):
                raise TypeError(f"Residual: {name} must be an xpcnn layer or Sequential, got {type(value).__name__}")
        if block is None:
            raise TypeError("Residual: block must be an xpcnn layer or Sequential, got None")
        claim("Residual", self, [("block", block)] + ([] if shortcut is None else [("shortcut", shortcut)]))
        self.block, self.shortcut = block, shortcut

    def children(self):
        return [("block", self.block)] + ([] if self.shortcut is None else [("shortcut", self.shortcut)])

    # ------------------------------------------------------------------ construction
    def _materialize(self, backend=None, rng=None, dtype: str = "float32") -> "Residual":
        for _, child in self.children():
            child._materialize(backend, rng, dtype)
        self.dtype, self.built = dtype, True
        return self

    def missing_sizes(self):
        return [f"{name}: {size}" for name, child in self.children() for size in child.missing_sizes()]

    def infer(self, input_shape):
        block = self.block.infer(input_shape)
        side = tuple(input_shape) if self.shortcut is None else self.shortcut.infer(input_shape)
        return self._agree(block, side)

    def output_shape(self, input_shape):
        block = self.block.output_shape(tuple(input_shape))
        side = tuple(input_shape) if self.shortcut is None else self.shortcut.output_shape(tuple(input_shape))
        return self._agree(block, side)

    def _agree(self, block: tuple, side: tuple) -> tuple:
        if tuple(block) != tuple(side):
            what = "the input (identity shortcut)" if self.shortcut is None else "the shortcut"
            raise ValueError(f"Residual: the block gives shape {tuple(block)} but {what} gives {tuple(side)}; "
                             "the two branches must agree (a 1x1 Conv2D shortcut can change channels and stride)")
        return tuple(block)

    # ------------------------------------------------------------------ running
    def forward(self, x: Any) -> Any:
        self._ensure_built(x)
        self.check_input(x)
        y = self.block.forward(x)
        return y + (x if self.shortcut is None else self.shortcut.forward(x))

    def backward(self, dy: Any, need_dx: bool = True) -> Any:
        """The sum rule: the input gradient of the block plus that of the shortcut (δ for the identity)."""
        through_block = self.block.backward(dy, need_dx=need_dx)
        if self.shortcut is None:
            return dy + through_block if need_dx else None
        through_shortcut = self.shortcut.backward(dy, need_dx=need_dx)
        return through_block + through_shortcut if need_dx else None

    # ------------------------------------------------------------------ state
    def to(self, backend) -> "Residual":
        for _, child in self.children():
            child.to(backend)
        self.cache = None
        return self

    def config(self):
        return {"block": self.block, "shortcut": self.shortcut}

    def summary_rows(self, prefix, input_shape):
        rows = []
        for name, child in self.children():
            child_rows, _ = child.summary_rows(f"{prefix}.{name}", tuple(input_shape))
            rows += child_rows
        out = self.output_shape(tuple(input_shape))
        identity = " + x" if self.shortcut is None else " + shortcut"
        return rows + [(prefix, f"Residual: block{identity}", out, 0)], out

    def extra_repr(self):
        return f"block={self.block!r}, shortcut={'identity' if self.shortcut is None else repr(self.shortcut)}"
