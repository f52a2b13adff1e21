"""Aggregators: turn tile outputs into final output blocks for a sink (see ``writers.py``).

``CropAggregator`` keeps, from each tile, the output cells whose centre lies in the tile's core
(``tiling.core_cells``) and passes them on at once: every cell is written exactly once, no
accumulation, no buffer. ``BlendAggregator`` averages overlapping tile outputs with uniform
(``"average"``) or Gaussian (``"gaussian"``, sigma = 1/8 of the tile, as nnU-Net) weights. It
keeps only a band of output rows that later tiles may still touch and hands rows to the sink as
soon as no later tile reaches them, so memory is ``K x (band rows) x W`` rather than ``K x H x W``.
Tiles must arrive in the plan's row-major order.
"""

from __future__ import annotations

import torch

from fcnkit.inference.tiling import Tile, TilePlan, core_cells, origin_cell

__all__ = ["CropAggregator", "BlendAggregator", "make_aggregator"]


class CropAggregator:
    """Exact stitching: each output cell comes from the one tile whose core holds its centre."""

    def __init__(self, sink, plan: TilePlan, out_shape: tuple[int, int, int], stride, offset):
        self.sink, self.plan, self.shape = sink, plan, out_shape
        self.stride, self.offset = stride, offset

    def add(self, tile: Tile, logits: torch.Tensor) -> None:
        box = []
        for axis, span in enumerate((tile.rows, tile.cols)):
            n0, n1 = core_cells(span, self.shape[1 + axis], self.stride[axis], self.offset[axis])
            m0 = n0 - origin_cell(span, self.stride[axis])
            if m0 < 0 or m0 + (n1 - n0) > logits.shape[1 + axis]:
                raise RuntimeError(
                    f"tile {tile.row},{tile.col}: its output ({logits.shape[1 + axis]} cells along axis {axis}) does "
                    f"not cover its core cells {n0}..{n1}; the model is not translation-equivariant as its geometry "
                    "says"
                )
            box.append((n0, n1, m0))
        (r0, r1, a), (c0, c1, b) = box
        if r1 > r0 and c1 > c0:
            self.sink.write((r0, r1), (c0, c1), logits[:, a : a + r1 - r0, b : b + c1 - c0])

    def close(self) -> None:
        self.sink.close()


def _weights(n: int, kind: str) -> torch.Tensor:
    if kind == "average" or n == 1:
        return torch.ones(n)
    x = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
    w = torch.exp(-0.5 * (x / (n / 8)) ** 2)
    return w.clamp_min(1e-3)  # keep tile borders that no other tile covers (image edges)


class BlendAggregator:
    """Weighted average of overlapping tile outputs, streamed by bands of output rows."""

    def __init__(self, sink, plan: TilePlan, out_shape: tuple[int, int, int], stride, kind: str = "average"):
        self.sink, self.plan, self.shape, self.stride, self.kind = sink, plan, out_shape, stride, kind
        self.top = 0  # first output row not yet flushed
        self.acc = torch.zeros(out_shape[0], 0, out_shape[2])
        self.wsum = torch.zeros(0, out_shape[2])
        self.row = 0

    def add(self, tile: Tile, logits: torch.Tensor) -> None:
        if tile.row != self.row:  # all tiles of earlier rows are in: rows above this one are final
            self._flush(origin_cell(tile.rows, self.stride[0]))
            self.row = tile.row
        k, h, w = logits.shape
        y0, x0 = origin_cell(tile.rows, self.stride[0]), origin_cell(tile.cols, self.stride[1])
        y1, x1 = min(y0 + h, self.shape[1]), min(x0 + w, self.shape[2])
        if y1 <= y0 or x1 <= x0:
            return
        need = y1 - self.top
        if need > self.acc.shape[1]:  # grow the band downwards
            grow = need - self.acc.shape[1]
            self.acc = torch.cat([self.acc, torch.zeros(k, grow, self.shape[2])], 1)
            self.wsum = torch.cat([self.wsum, torch.zeros(grow, self.shape[2])], 0)
        wt = (_weights(h, self.kind)[:, None] * _weights(w, self.kind)[None, :])[: y1 - y0, : x1 - x0]
        a, b = y0 - self.top, y1 - self.top
        self.acc[:, a:b, x0:x1] += logits[:, : y1 - y0, : x1 - x0].float().cpu() * wt
        self.wsum[a:b, x0:x1] += wt

    def _flush(self, until: int) -> None:
        n = max(0, min(until, self.top + self.acc.shape[1]) - self.top)
        if n == 0:
            return
        block = self.acc[:, :n] / self.wsum[:n].clamp_min(1e-12)
        self.sink.write((self.top, self.top + n), (0, self.shape[2]), block)
        self.acc, self.wsum = self.acc[:, n:].clone(), self.wsum[n:].clone()
        self.top += n

    def close(self) -> None:
        self._flush(self.shape[1])
        self.sink.close()


def make_aggregator(sink, plan: TilePlan, out_shape, stride, offset):
    """The aggregator for ``plan.blend``."""
    if plan.blend == "crop":
        return CropAggregator(sink, plan, out_shape, stride, offset)
    return BlendAggregator(sink, plan, out_shape, stride, plan.blend)
