"""The result of a receptive-field analysis: :class:`Geometry` and its per-layer table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

__all__ = ["Geometry", "LayerGeometry"]

Pair = tuple  # (h, w); ints where whole, floats otherwise (an offset of 15.5 pixels)


def number(x) -> int | float:
    """A Fraction as an int when whole, else a float."""
    x = Fraction(x)
    return int(x) if x.denominator == 1 else float(x)


@dataclass(frozen=True)
class LayerGeometry:
    """One row of the per-layer table: the geometry of a layer's output feature map.

    ``rf``/``jump``/``offset`` are the receptive field, stride and centre of cell (0, 0) of this
    layer's output, in input pixels; ``shape`` is its spatial size at the traced input size.
    """

    name: str
    op: str
    kernel: Pair | None
    stride: Pair | None
    padding: Pair | None
    dilation: Pair | None
    rf: Pair
    jump: Pair
    offset: Pair
    shape: Pair | None = None


@dataclass(frozen=True)
class Geometry:
    """Where each output cell of a network looks in the input.

    Output cell ``(i, j)`` sees the input window centred at ``offset + (i, j) * stride`` with
    extent ``size`` (all ``(h, w)``, input pixels)::

        input:  |<- offset ->|                       window of cell 0 = offset -+ (size - 1) / 2
                ............[=========size=========]
                ........................[=========size=========]   cell 1: moved by stride
        output:              cell 0      cell 1

    ``align``: shifting the input by a multiple of it shifts every feature map inside the net
    by whole cells (the largest stride on the way, e.g. 32 for an FCN whose output stride is 1).
    Tiles must start at multiples of it to reproduce whole-image results.
    ``blockers`` name the layers that make an output cell depend on the whole image (global
    pooling, normalisation over H and W, attention, size-dependent resizing): with any, tiled
    inference cannot equal whole-image inference. ``notes`` list operations traced as pointwise
    without being known to be. ``method`` is ``"analytic"`` or ``"probe"``.
    ``input_multiple``: the geometry holds for inputs whose H and W are multiples of it (models
    that resize their output to the input size, e.g. torchvision ``fcn_resnet50``); (1, 1) = any.
    ``output_shape`` is the output size at ``trace_size``, the input size traced at.
    """

    size: Pair
    stride: Pair
    offset: Pair
    align: Pair = (1, 1)
    layers: tuple[LayerGeometry, ...] = ()
    blockers: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    method: str = "analytic"
    output_shape: Pair | None = field(default=None, compare=False)
    input_multiple: Pair = (1, 1)
    trace_size: Pair | None = field(default=None, compare=False)

    @property
    def exact_tiling(self) -> bool:
        """True when tiles can reproduce whole-image results exactly (no blockers)."""
        return not self.blockers

    def window(self, i: int, j: int) -> tuple[tuple[float, float], tuple[float, float]]:
        """Input extent ``((top, bottom), (left, right))`` (inclusive) seen by output cell ``(i, j)``."""
        out = []
        for n, size, stride, offset in zip((i, j), self.size, self.stride, self.offset):
            centre = Fraction(offset + n * stride)
            half = Fraction(size - 1) / 2
            out.append((float(number(centre - half)), float(number(centre + half))))
        return out[0], out[1]

    def halo(self) -> tuple[int, int]:
        """Half the receptive field, rounded up to a multiple of ``align``: the tile margin that
        makes every kept output cell see only real pixels."""
        out = []
        for size, align in zip(self.size, self.align):
            half = math.ceil(Fraction(size - 1) / 2)
            out.append(-(-half // align) * align)
        return tuple(out)

    def to_dict(self) -> dict:
        """``{"size", "stride", "offset"}`` as lists, for a checkpoint's config.json."""
        return {"size": list(self.size), "stride": list(self.stride), "offset": list(self.offset)}

    def table(self) -> str:
        """The per-layer table and the summary, as printed by ``fcnkit rf``."""
        head = ("layer", "op", "kernel", "stride", "pad", "dil", "rf", "jump", "offset", "out")
        rows = [head]
        for r in self.layers:
            rows.append(
                (
                    r.name,
                    r.op,
                    _fmt(r.kernel),
                    _fmt(r.stride),
                    _fmt(r.padding),
                    _fmt(r.dilation),
                    _fmt(r.rf),
                    _fmt(r.jump),
                    _fmt(r.offset),
                    _fmt(r.shape),
                )
            )
        widths = [max(len(row[k]) for row in rows) for k in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines += [
            "",
            f"receptive field  {_fmt(self.size)}",
            f"stride           {_fmt(self.stride)}",
            f"offset           {_fmt(self.offset)}   (input coordinate of the centre of output cell (0, 0))",
            f"tile alignment   {_fmt(self.align)}   halo {_fmt(self.halo())}",
        ]
        if self.output_shape is not None:
            lines.append(f"output size      {_fmt(self.output_shape)}")
        if self.input_multiple != (1, 1):
            lines.append(f"input sizes      multiples of {_fmt(self.input_multiple)} (other sizes change the stride)")
        for b in self.blockers:
            lines.append(f"warning: {b}; tiled inference cannot equal whole-image inference")
        for n in self.notes:
            lines.append(f"note: {n}")
        return "\n".join(lines)


def _fmt(pair) -> str:
    if pair is None:
        return "-"
    a, b = pair
    return f"{a}" if a == b else f"{a}x{b}"
