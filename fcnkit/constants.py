"""Facts shared by every layer, defined once."""

from __future__ import annotations

__all__ = ["IGNORE_INDEX"]

#: Mask value of pixels that carry no label (borders, unlabelled regions): excluded from the loss,
#: the scores and the samplers, padded in by collation. Masks are int64 with this value.
IGNORE_INDEX = 255
