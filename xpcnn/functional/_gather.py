"""Windows by gathering: the few-launch forms (_launch.launch_bound) of im2col, pooling windows and col2im.

Positions are flattened per sample. An (N, C, H, W) array laid out channels-last is read as (N, H*W, C)
rows; the windows of its P = OH*OW outputs, K = kH*kW cells each, are (N, P*K, C) rows, output-major and
cell-minor (row-major within a window): the column order of conv's im2col. Then

- ``windows(rows)``, im2col: one indexed copy (``take``) of the rows every window reads, and one select
  that puts ``fill`` where a window reads padding (none when no window does);
- ``fold(cols)``, col2im, the adjoint: each input position's window cells (at most R of them: R = 1 for
  windows that do not overlap, 4 for a 3x3 stride-2 window, kH*kW for stride 1) gathered by one ``take``,
  a select that zeroes the slots a position does not have, and one sum over the R slots.

Three launches at most for each, whatever the kernel size, with no zero-spread of δ at stride 2 (a
position's slots name only the windows that read it), no padded copy, and no list of arrays joined
(CuPy copies a table of pointers to the device for that). The index tables depend on the geometry
alone: made once on each device that uses them (from Python lists: one copy to the device, at the first call).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backend import constant, made_once, take


@dataclass(frozen=True)
class Geometry:
    """Where the windows of a sliding-window op lie: kernel, stride, dilation, pads (top, bottom, left,
    right), input (H, W) and output (OH, OW)."""

    kernel: tuple
    stride: tuple
    dilation: tuple
    pads: tuple
    in_hw: tuple
    out_hw: tuple

    @property
    def cells(self) -> int:
        return self.kernel[0] * self.kernel[1]


def _axis_windows(size: int, out: int, k: int, step: int, dilation: int, pad: int):
    """Along one axis: the position each window cell reads (0 where it is padding) and whether it is real."""
    reads = [[o * step + i * dilation - pad for i in range(k)] for o in range(out)]
    real = [[0 <= r < size for r in row] for row in reads]
    return [[r if ok else 0 for r, ok in zip(row, oks)] for row, oks in zip(reads, real)], real


def _axis_fold(size: int, out: int, k: int, step: int, dilation: int, pad: int):
    """Along one axis, for every position: its slots (the windows that may read it, the last first), each
    as (window, cell) (0, 0 when unused) and whether it is used."""
    slots = -(-((k - 1) * dilation + 1) // step)
    pairs, used = [], []
    for r in range(size):
        row_pairs, row_used = [], []
        for s in range(slots):
            o = (r + pad) // step - s
            offset = r + pad - o * step
            ok = 0 <= o < out and offset % dilation == 0 and offset // dilation < k
            row_pairs.append((o, offset // dilation) if ok else (0, 0))
            row_used.append(ok)
        pairs.append(row_pairs)
        used.append(row_used)
    return pairs, used


def tables(kind: str, g: Geometry, like: Any, xp):
    """The ``kind`` tables of ``g`` on ``like``'s library and device: int32 indices, a (len, 1) bool mask
    or None when every entry is used (and for ``fold`` the slots per position), made once per place."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow), (h, w) = g.kernel, g.stride, g.dilation, g.out_hw, g.in_hw

    def on(values, dtype, shape, device):
        return xp.reshape(xp.asarray(values, dtype=dtype, device=device), shape)

    def make(device):
        if kind == "windows":            # (OH, OW, kH, kW): input position r*W + c of each cell
            (rows, real_h), (cols, real_w) = (_axis_windows(h, oh, kh, sh, dh, g.pads[0]),
                                              _axis_windows(w, ow, kw, sw, dw, g.pads[2]))
            first = on([[r * w for r in row] for row in rows], xp.int32, (oh, 1, kh, 1), device)
            second = on(cols, xp.int32, (1, ow, 1, kw), device)
            slots = None
        else:                            # (H, W, slots_h, slots_w): cell index (o*OW + q)*K + i*kW + j
            (rows, real_h), (cols, real_w) = (_axis_fold(h, oh, kh, sh, dh, g.pads[0]),
                                              _axis_fold(w, ow, kw, sw, dw, g.pads[2]))
            first = on([[o * ow * g.cells + i * kw for o, i in row] for row in rows], xp.int32,
                       (h, 1, len(rows[0]), 1), device)
            second = on([[q * g.cells + j for q, j in row] for row in cols], xp.int32, (1, w, 1, len(cols[0])), device)
            slots = len(rows[0]) * len(cols[0])
        index = xp.reshape(first + second, (-1,))
        mask = None
        if not all(map(all, real_h)) or not all(map(all, real_w)):
            shape_h, shape_w = tuple(first.shape), tuple(second.shape)
            mask = xp.reshape(on(real_h, xp.bool, shape_h, device) & on(real_w, xp.bool, shape_w, device), (-1, 1))
        return index, mask, slots

    return made_once((kind, g), like, make)


def windows(xp, rows, g: Geometry, fill: float = 0.0):
    """(N, H*W, C) rows -> (N, P*K, C): every window's cells, ``fill`` where a cell is padding."""
    index, mask, _ = tables("windows", g, rows, xp)
    taken = take(rows, index, 1)
    return taken if mask is None else xp.where(mask, taken, constant(fill, rows))


def fold(xp, cols, g: Geometry):
    """(N, P*K, C) values of the window cells -> (N, H*W, C): each input position's sum over the cells
    that read it (the adjoint of :func:`windows`)."""
    index, mask, slots = tables("fold", g, cols, xp)
    n, c = cols.shape[0], cols.shape[2]
    taken = take(cols, index, 1)
    if mask is not None:
        taken = xp.where(mask, taken, constant(0.0, cols))
    if slots == 1:
        return taken
    return xp.sum(xp.reshape(taken, (n, g.in_hw[0] * g.in_hw[1], slots, c)), axis=2)


def rows_of(xp, x_nhwc):
    """A channels-last (N, H, W, C) array as (N, H*W, C) rows (a view)."""
    n, h, w, c = x_nhwc.shape
    return xp.reshape(x_nhwc, (n, h * w, c))
