"""Geometry of one activation as the :class:`~fcnkit.geometry.trace.Tracer` follows it.

A :class:`State` holds both spatial axes (:class:`~fcnkit.geometry.axis.Axis`) plus what breaks
translation equivariance on the way (*blockers*); states of joining branches merge.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fcnkit.geometry.axis import Axis

__all__ = ["State", "Unsupported", "union"]


class Unsupported(Exception):
    """An operation the tracer cannot describe (becomes an InputError naming the layer)."""


@dataclass(frozen=True)
class State:
    """Geometry of one activation: both spatial axes, plus what breaks translation equivariance."""

    axes: tuple[Axis, Axis]
    blockers: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    whole: bool = False  # every cell sees the whole image (after global pooling): the axes mean nothing

    def merged(self, other: State) -> State:
        if self.whole != other.whole:  # a global branch (ASPP pooling, squeeze-excite) joins a local one
            local = other if self.whole else self
            return State(local.axes, union(self.blockers, other.blockers), union(self.notes, other.notes))
        try:
            axes = (self.axes[0].merge(other.axes[0]), self.axes[1].merge(other.axes[1]))
        except ValueError as exc:
            raise Unsupported(str(exc)) from None
        return State(axes, union(self.blockers, other.blockers), union(self.notes, other.notes))

    def with_blocker(self, text: str) -> State:
        return replace(self, blockers=union(self.blockers, (text,)))


def union(a: tuple, b: tuple) -> tuple:
    """``a`` then the items of ``b`` not in it, in order (blockers and notes read in trace order)."""
    return a + tuple(x for x in b if x not in a)
