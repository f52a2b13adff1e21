"""Tile planner: where tiles start, how far they reach, which output cells each one keeps.

Pure geometry (no tensors), TorchIO-sampler style. Along each axis of length ``L``, with tile
(window) size ``W``, halo ``h`` and alignment ``A`` (both from the model's
:class:`~fcnkit.geometry.Geometry`)::

    image axis   0                                                               L
                 |---------------------------------------------------------------|
    tile 0       [======= core 0 =======)hhhh]                                      window = [0, W)
    tile 1                         [hhhh[=== core 1 ===)hhhh]                       window = W, core = W - 2h
    tile 2                                          [hhhh[======= core 2 =========]  last: ends at L
                 every window starts at a multiple of A; h >= (receptive field - 1) / 2

``blend="crop"``: an output cell belongs to the tile whose core holds its centre
(``offset + n * stride``). Its receptive field then lies inside that tile's window, and the
window's edges are either image edges (padded exactly as in a whole-image run) or at least ``h``
away, so the cell is computed from the same numbers as in a whole-image run. Windows start at
multiples of ``A`` so every feature map inside the network samples the same grid as in the
whole-image run, and the last window ends at the image edge, so trailing padding (``ceil_mode``,
"pad to a multiple of 32") lines up too. The first core extends to ``-inf``, the last to ``+inf``.

``blend="average"|"gaussian"``: windows of size ``W`` overlap by ``overlap * W`` (rounded to
``A``); every output cell of every tile is blended (no halo).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

from fcnkit.errors import InputError

__all__ = ["Span", "Tile", "TilePlan", "plan_tiles", "plan_axis", "core_cells"]

BLENDS = ("crop", "average", "gaussian")


@dataclass(frozen=True)
class Span:
    """One tile along one axis: input window ``[start, stop)`` and core ``[core_start, core_stop)``
    (``None`` = unbounded: that side of the tile is the image border)."""

    start: int
    stop: int
    core_start: int | None = None
    core_stop: int | None = None

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Tile:
    """A tile: its grid position ``(row, col)`` and its spans along H and W."""

    row: int
    col: int
    rows: Span
    cols: Span

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.size, self.cols.size


@dataclass(frozen=True)
class TilePlan:
    """All tiles of an image, in row-major order."""

    image_size: tuple[int, int]
    tile: tuple[int, int]
    halo: tuple[int, int]
    align: tuple[int, int]
    blend: str
    row_spans: tuple[Span, ...]
    col_spans: tuple[Span, ...]

    def __iter__(self) -> Iterator[Tile]:
        for i, r in enumerate(self.row_spans):
            for j, c in enumerate(self.col_spans):
                yield Tile(i, j, r, c)

    def __len__(self) -> int:
        return len(self.row_spans) * len(self.col_spans)

    @property
    def grid(self) -> tuple[int, int]:
        return len(self.row_spans), len(self.col_spans)


def _down(x: int, a: int) -> int:
    return x // a * a


def _up(x: int, a: int) -> int:
    return -(-x // a) * a


def plan_axis(length: int, tile: int, halo: int, align: int, blend: str = "crop", overlap: float = 0.25) -> list[Span]:
    """Spans along one axis (see the module docstring). ``tile`` is rounded down to ``align``."""
    if length <= tile:
        return [Span(0, length)]
    w = _down(tile, align)
    if blend == "crop":
        core = w - 2 * halo
        if core < align:
            raise InputError(
                f"tile={tile} leaves no core inside a halo of {halo}; use tile >= {2 * halo + align} (or a smaller "
                "halo)"
            )
        spans, cs = [Span(0, w, None, w - halo)], w - halo
        while cs - halo + w < length:
            spans.append(Span(cs - halo, cs - halo + w, cs, cs + core))
            cs += core
        spans.append(Span(cs - halo, length, cs, None))
        return spans
    if not 0 <= overlap < 1:
        raise InputError(f"overlap={overlap} must be a fraction in [0, 1); e.g. 0.25")
    if w < align:
        raise InputError(f"tile={tile} is smaller than the model's alignment {align}; use tile >= {align}")
    step = max(align, _down(int(w * (1 - overlap)), align))
    starts = list(range(0, length - w, step))
    last = _up(length - w, align)
    if not starts or last > starts[-1]:
        starts.append(last)
    return [Span(s, min(s + w, length)) for s in starts]


def plan_tiles(
    image_size: tuple[int, int],
    tile: int | tuple[int, int],
    halo: int | tuple[int, int],
    align: int | tuple[int, int] = (1, 1),
    blend: str = "crop",
    overlap: float = 0.25,
) -> TilePlan:
    """Plan the tiles of an ``(H, W)`` image. ``halo`` is rounded up to a multiple of ``align``."""
    if blend not in BLENDS:
        raise InputError(f"blend={blend!r} is not known; use one of {', '.join(BLENDS)}")
    tile, halo, align = (_two(v, name) for v, name in ((tile, "tile"), (halo, "halo"), (align, "align")))
    halo = (_up(halo[0], align[0]), _up(halo[1], align[1]))
    spans = [plan_axis(n, t, h, a, blend, overlap) for n, t, h, a in zip(image_size, tile, halo, align)]
    return TilePlan(
        (int(image_size[0]), int(image_size[1])), tile, halo, align, blend, tuple(spans[0]), tuple(spans[1])
    )


def _two(v, name: str) -> tuple[int, int]:
    v = (v, v) if isinstance(v, int) else tuple(v)
    if len(v) != 2 or any(not isinstance(x, int) or x < (0 if name == "halo" else 1) for x in v):
        raise InputError(f"{name}={v!r} must be a positive int or (h, w)")
    return v[0], v[1]


def core_cells(span: Span, total: int, stride, offset) -> tuple[int, int]:
    """Output cells ``[n0, n1)`` (of ``total``) whose centre ``offset + n*stride`` lies in the core."""
    stride, offset = Fraction(stride), Fraction(offset)
    n0 = 0 if span.core_start is None else max(0, math.ceil((span.core_start - offset) / stride))
    n1 = total if span.core_stop is None else min(total, math.ceil((span.core_stop - offset) / stride))
    return n0, max(n0, n1)


def output_shape(last: Tile, stride, block: tuple[int, ...]) -> tuple[int, int, int]:
    """``(K, H_out, W_out)`` of the whole output from the plan's last tile (it ends at the image
    end) and that tile's output ``block`` ``(K, h, w)``."""
    return (
        block[0],
        origin_cell(last.rows, stride[0]) + block[1],
        origin_cell(last.cols, stride[1]) + block[2],
    )


def origin_cell(span: Span, stride) -> int:
    """Index in the whole output of the tile output's first cell (the window start in cells)."""
    cell = Fraction(span.start) / Fraction(stride)
    if cell.denominator != 1:
        raise InputError(
            f"tile start {span.start} is not a whole number of output cells of stride {stride}; align tiles to the "
            "stride"
        )
    return int(cell)
