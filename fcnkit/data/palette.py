"""Class colours that can be told apart: black background, then 19 colours far apart in CIELAB.

The PASCAL VOC colour map (:func:`fcnkit.data.io.voc_palette`) is kept for VOC data with PASCAL's
21 classes, whose mask files use it; elsewhere it is a poor choice (classes 6 and 14 are 8.8 delta E
apart; digits 0/8 of digit-canvas, classes 1 and 9, are dark red (128, 0, 0) and (64, 0, 0)).
:func:`distinct_palette` gives class 0 black and classes 1..19 colours picked greedily (max-min
CIE76 delta E from an sRGB grid, Kelly's and tab20's colours); its first 20 colours are at least
:data:`MIN_DISTANCE` apart (a test checks it). Classes beyond 20 get golden-ratio hues.
"""

from __future__ import annotations

import colorsys

__all__ = ["distinct_palette", "DISTINCT", "MIN_DISTANCE", "lab", "min_distance"]

DISTINCT = [
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (0, 255, 255),
    (255, 102, 204),
    (255, 204, 0),
    (0, 153, 255),
    (0, 102, 0),
    (0, 0, 102),
    (196, 156, 148),
    (204, 255, 153),
    (153, 0, 51),
    (153, 102, 255),
    (153, 102, 0),
    (0, 102, 102),
    (255, 0, 255),
    (204, 255, 0),
    (135, 86, 146),
    (0, 255, 153),
]
#: the smallest CIE76 delta E between two of the first 20 colours of distinct_palette (VOC's: 8.8)
MIN_DISTANCE = 40.0


def distinct_palette(num_classes: int) -> list[list[int]]:
    """``num_classes`` RGB triples: black, the 19 :data:`DISTINCT` colours, then golden-ratio hues."""
    colours = [(0, 0, 0)] + DISTINCT
    i = 0
    while len(colours) < num_classes:
        hue = (i * 0.618033988749895) % 1.0
        value = 0.95 if i % 2 == 0 else 0.65
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
        i += 1
    return [list(c) for c in colours[:num_classes]]


def lab(rgb) -> tuple[float, float, float]:
    """CIE L*a*b* (D65) of an sRGB triple 0..255, for perceptual distances (CIE76 delta E)."""

    def linear(c: float) -> float:
        c /= 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(float(v)) for v in rgb)
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116

    fx, fy, fz = f(x), f(y), f(z)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def min_distance(palette) -> float:
    """The smallest CIE76 delta E between two colours of ``palette``."""
    points = [lab(c) for c in palette]
    return min(sum((a - b) ** 2 for a, b in zip(p, q)) ** 0.5 for i, p in enumerate(points) for q in points[i + 1 :])
