"""Exact receptive-field algebra along one spatial axis.

A feature map's geometry along an axis is *periodic*: cell ``n`` sees the input pixels
``[start(n), end(n)]`` with ::

    start(n) = (n // P) * T + S[n % P]        end(n) = (n // P) * T + E[n % P]

``P`` cells move the window by ``T`` input pixels, so the effective stride ("jump") is ``T / P``.
Plain convolution/pooling stacks have ``P = 1`` (every cell alike); upsampling makes ``P > 1``
(an FCN's dense output repeats every 32 pixels). Tracking every phase keeps the algebra exact
where composing per-layer maxima would over-count, and it is what a gradient probe measures.

A layer is a :class:`Taps` pattern: output cell ``n`` reads the input cells ``taps[n % q] +
(n // q) * r``. Convolution, pooling, transposed convolution, interpolation, padding and crops
are all of this form; merges (add, concat) take the union of the windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import gcd, lcm

__all__ = ["Taps", "Axis", "conv_taps", "transposed_taps", "interpolate_taps"]


@dataclass(frozen=True)
class Taps:
    """Periodic dependency pattern: ``q`` output cells read ``taps`` and then advance ``r`` input cells."""

    q: int
    r: int
    taps: tuple[tuple[int, ...], ...]


def conv_taps(kernel: int, stride: int, padding: int, dilation: int = 1) -> Taps:
    """Convolution or pooling: cell ``n`` reads ``n*stride - padding + k*dilation``, ``k < kernel``."""
    return Taps(1, stride, (tuple(k * dilation - padding for k in range(kernel)),))


def transposed_taps(kernel: int, stride: int, padding: int, dilation: int = 1) -> Taps:
    """Transposed convolution: input cell ``i`` writes output ``i*stride - padding + k*dilation``."""
    taps = []
    for n in range(stride):
        hit = [
            (n + padding - k * dilation) // stride for k in range(kernel) if (n + padding - k * dilation) % stride == 0
        ]
        taps.append(tuple(sorted(set(hit))))
    return Taps(stride, 1, tuple(taps))


def interpolate_taps(ratio: Fraction, mode: str, align_corners: bool = False) -> Taps:
    """Resampling where one output cell spans ``ratio`` input cells (``ratio = in / out``, or
    ``(in - 1) / (out - 1)`` with ``align_corners``, where output cell ``n`` reads ``x = n * ratio``).

    Only taps with a non-zero weight count (PyTorch's formulas, away from the borders):
    ``nearest`` reads ``floor(n * ratio)``, ``nearest-exact`` ``floor((n + 0.5) * ratio)``;
    ``(bi)linear`` reads ``floor(x)`` and ``floor(x) + 1`` around ``x = (n + 0.5) * ratio - 0.5``
    (one tap when ``x`` is whole); ``bicubic`` four taps (one when ``x`` is whole); ``area``
    averages ``[floor(n * ratio), ceil((n + 1) * ratio))``.
    """
    q, r = ratio.denominator, ratio.numerator  # q output cells span r input cells
    taps = []
    for n in range(q):
        if mode == "nearest":
            t = [int((n * ratio) // 1)]
        elif mode == "nearest-exact":
            t = [int(((n + Fraction(1, 2)) * ratio) // 1)]
        elif mode == "area":
            lo = int((n * ratio) // 1)
            hi = -int((-(n + 1) * ratio) // 1)  # ceil
            t = list(range(lo, max(hi, lo + 1)))
        else:
            x = n * ratio if align_corners else (n + Fraction(1, 2)) * ratio - Fraction(1, 2)
            i0 = int(x // 1)
            whole = x == i0
            if mode in ("linear", "bilinear", "trilinear"):
                t = [i0] if whole else [i0, i0 + 1]
            elif mode == "bicubic":
                t = [i0] if whole else [i0 - 1, i0, i0 + 1, i0 + 2]
            else:
                raise ValueError(f"unknown interpolation mode {mode!r}")
        taps.append(tuple(t))
    return Taps(q, r, tuple(taps))


@dataclass(frozen=True)
class Axis:
    """Periodic receptive-field description of one axis of a feature map (see module docstring).

    ``align`` is the least common multiple of the numerators of every jump met on the way from
    the input: shifting the input by a multiple of it shifts every feature map by whole cells.
    """

    period: int = 1
    shift: int = 1
    start: tuple[int, ...] = (0,)
    end: tuple[int, ...] = (0,)
    align: int = 1

    @property
    def jump(self) -> Fraction:
        return Fraction(self.shift, self.period)

    def lo(self, n: int) -> int:
        return (n // self.period) * self.shift + self.start[n % self.period]

    def hi(self, n: int) -> int:
        return (n // self.period) * self.shift + self.end[n % self.period]

    def apply(self, taps: Taps) -> Axis:
        """The geometry after a layer with the dependency pattern ``taps``."""
        g = gcd(self.period, taps.r)
        k = self.period // g  # taps.r * k is a multiple of our period
        period = taps.q * k
        shift = (taps.r // g) * self.shift
        start, end = [], []
        for phase in range(period):
            base = (phase // taps.q) * taps.r
            cells = [base + t for t in taps.taps[phase % taps.q]]
            if not cells:
                raise ValueError("a layer left an output cell without input (stride larger than kernel?)")
            start.append(min(self.lo(i) for i in cells))
            end.append(max(self.hi(i) for i in cells))
        jump = Fraction(shift, period)
        return _reduced(Axis(period, shift, tuple(start), tuple(end), lcm(self.align, jump.numerator)))

    def merge(self, other: Axis) -> Axis:
        """Union of two maps' windows, cell by cell (add, multiply, concatenate along channels)."""
        if self.jump != other.jump:
            raise ValueError(f"cannot merge feature maps with strides {self.jump} and {other.jump}")
        period = lcm(self.period, other.period)
        shift = int(self.jump * period)
        start = tuple(min(self.lo(n), other.lo(n)) for n in range(period))
        end = tuple(max(self.hi(n), other.hi(n)) for n in range(period))
        return _reduced(Axis(period, shift, start, end, lcm(self.align, other.align)))

    def envelope(self) -> tuple[Fraction, Fraction]:
        """``(lo, hi)`` such that cell ``n`` sees within ``[lo + n*jump, hi + n*jump]`` for every phase."""
        j = self.jump
        lo = min(self.start[p] - p * j for p in range(self.period))
        hi = max(self.end[p] - p * j for p in range(self.period))
        return Fraction(lo), Fraction(hi)

    def summary(self) -> tuple[Fraction, Fraction, Fraction]:
        """``(size, jump, offset)``: extent of the envelope, stride, centre of cell 0."""
        lo, hi = self.envelope()
        return hi - lo + 1, self.jump, (lo + hi) / 2


def _reduced(axis: Axis) -> Axis:
    """The same geometry with the smallest period (an upsample then a downsample can cancel)."""
    period = axis.period
    for p in range(1, period):
        if period % p or (axis.shift * p) % period:
            continue
        t = axis.shift * p // period
        if all(
            axis.start[i + p] == axis.start[i] + t and axis.end[i + p] == axis.end[i] + t for i in range(period - p)
        ):
            return Axis(p, t, axis.start[:p], axis.end[:p], axis.align)
    return axis
