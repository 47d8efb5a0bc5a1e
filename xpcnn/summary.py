"""The table ``model.summary()`` prints, as Keras prints it: one row per layer (containers add a row per
layer inside), its output shape and parameter count, then the totals."""
from __future__ import annotations

import numpy as np

from .layers.base import walk_shapes


def chain_rows(layers, prefix: str, input_shape: tuple) -> tuple[list, tuple]:
    """The rows of ``layers`` run in order (a Sequential's, numbered under ``prefix``) and the output shape;
    a layer that cannot take its input raises a ValueError named with its index."""
    rows = []

    def add_rows(index, layer, shape):
        found, shape = layer.summary_rows(f"{prefix}.{index}" if prefix else str(index), shape)
        rows.extend(found)
        return shape

    return rows, walk_shapes(layers, input_shape, add_rows)


def summary_text(model, input_shape: tuple | None = None) -> str:
    """The table of ``model``'s layers for an input of ``input_shape`` (with or without the batch axis;
    default the shape the model was built for)."""
    if input_shape is None:
        if model.input_shape is None:
            raise ValueError("summary: pass the input shape, such as summary((1, 28, 28)); the model was not "
                             "built with input_shape=... or model.build(...)")
        input_shape = model.input_shape
    shape = tuple(input_shape)
    if len(shape) in (1, 3):
        shape = (1,) + shape
    model._require_built("summary()")
    try:
        found, _ = model.summary_rows("", shape)
    except ValueError as exc:
        raise ValueError(f"summary: {exc}") from None
    rows = [("#", "layer", "output shape", "params")]
    rows += [(index, text, str(("N",) + tuple(out[1:])).replace("'", ""), f"{count:,}")
             for index, text, out, count in found]
    total = sum(int(np.prod(p.shape)) for p in model.parameters())
    widths = [max(len(row[c]) for row in rows) for c in range(4)]

    def format_row(row):
        return "  ".join(cell.rjust(w) if c == 3 else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths)))

    line = "  ".join("-" * w for w in widths)
    text = [line, format_row(rows[0]), line] + [format_row(row) for row in rows[1:]]
    text += [line, f"total parameters: {total:,}   backend: {model.backend.name}   dtype: {model.dtype}"]
    return "\n".join(text)
