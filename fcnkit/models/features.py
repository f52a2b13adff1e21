"""Validated feature taps (timm ``FeatureInfo`` style): what a backbone exposes to a head.

Each tap says where a feature map comes from and its grid: ``channels``, ``stride`` (input pixels
per cell, timm's "reduction") and ``offset`` (the input pixel on which cell 0's centre lies), so
cell ``i`` of a tap is centred on ``offset + i * stride``::

    input   |  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  |
    tap s=4       ^offset    ^offset+4   ^offset+8   ...
    tap s=8             ^offset          ^offset+8   ...

:class:`FeatureInfo` checks the entries when it is built (names unique, channels and strides
positive integers, strides non-decreasing), so a head can rely on them;
:func:`fcnkit.geometry.check_feature_info` checks them against the traced geometry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import overload

__all__ = ["FeatureTap", "FeatureInfo"]


@dataclasses.dataclass(frozen=True)
class FeatureTap:
    """One feature map of a backbone: its name, the module path producing it, and its grid."""

    name: str
    module: str
    channels: int
    stride: int
    offset: float

    def __post_init__(self):
        for field in ("channels", "stride"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"feature tap {self.name!r}: {field} must be a whole number >= 1, got {value!r}")
        if not isinstance(self.offset, (int, float)):
            raise ValueError(f"feature tap {self.name!r}: offset must be a number, got {self.offset!r}")


class FeatureInfo(Sequence[FeatureTap]):
    """An ordered, validated list of :class:`FeatureTap` (shallow to deep)."""

    def __init__(self, taps: Iterable[FeatureTap]):
        self._taps = tuple(taps)
        if not self._taps:
            raise ValueError("FeatureInfo needs at least one tap")
        names = [t.name for t in self._taps]
        if len(set(names)) != len(names):
            raise ValueError(f"feature tap names must be unique, got {names}")
        strides = [t.stride for t in self._taps]
        if strides != sorted(strides):
            raise ValueError(f"feature taps must go from fine to coarse (non-decreasing strides), got {strides}")

    @overload
    def __getitem__(self, index: int) -> FeatureTap: ...
    @overload
    def __getitem__(self, index: slice) -> FeatureInfo: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return FeatureInfo(self._taps[index])
        return self._taps[index]

    def __len__(self) -> int:
        return len(self._taps)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureInfo) and self._taps == other._taps

    def __repr__(self) -> str:
        return f"FeatureInfo({list(self._taps)!r})"

    @property
    def channels(self) -> list[int]:
        return [t.channels for t in self._taps]

    @property
    def strides(self) -> list[int]:
        return [t.stride for t in self._taps]

    def get(self, name: str) -> FeatureTap:
        for tap in self._taps:
            if tap.name == name:
                return tap
        raise KeyError(f"no feature tap {name!r}; taps: {[t.name for t in self._taps]}")
