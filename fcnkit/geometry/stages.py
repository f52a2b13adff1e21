"""Stage splits: where a network can be cut so that each part is tiled over its own input.

The analytic trace (:class:`~fcnkit.geometry.trace.Tracer`) already sees every operation a
forward runs, with the exact geometry (:class:`~fcnkit.geometry.axis.Axis`, in input pixels) of
every activation. :func:`op_graph` records that run as a list of operations - name, which earlier
operation's outputs it reads (``-1`` = the input image), the geometry and size of each output -
and :func:`stage_splits` cuts that list where the resolution drops::

    ops:    stem ... pool  | layer2 ... | layer3 ... | layer4 ... head ... upsample
    level:  1  2   2   4   | 8          | 16         | 32 ................. (running max stride)
    cut:                   ^ fewest live elements per pixel inside each level (skip taps included)

A cut's *live set* is every activation made before it and read after it (FCN-8s/U-Net skip
taps too): these are the stage outputs kept for later stages. Cuts whose live set needs more
than ``max_density`` elements per input pixel are not taken (storing them would cost more memory
than the image). :func:`stage_halo` is the margin, in input pixels, that a stage's tile needs so
that its kept cells only read real numbers: it comes from the envelopes of the stage's output
and input geometries (for a one-stage net it is the classic ``(receptive field - 1) / 2``).
"""

from __future__ import annotations

import itertools
import math
import weakref
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import nn

from fcnkit.geometry.axis import Axis
from fcnkit.geometry.trace import Tracer, _tensors

__all__ = ["OpGraph", "OpRecord", "Stage", "X", "cached_geometry", "op_graph", "stage_halo", "stage_splits"]

X = (-1, 0)  # the input image as a "producer": op -1, output 0


@dataclass(frozen=True)
class OpRecord:
    """One traced operation: ``inputs`` are ``(op, output)`` keys of the activations it reads."""

    name: str
    inputs: tuple[tuple[int, int], ...]
    axes: tuple[tuple[Axis, Axis], ...]  # per output
    numel: tuple[int, ...]  # per output, at the traced size


@dataclass(frozen=True)
class OpGraph:
    ops: tuple[OpRecord, ...]
    pixels: int  # traced input pixels (numel / pixels = elements per input pixel)
    output: tuple[int, int] = X  # the key of the model's score map (``select_output`` of the result)

    def axes(self, key) -> tuple[Axis, Axis]:
        return (Axis(), Axis()) if key == X else self.ops[key[0]].axes[key[1]]

    def density(self, key) -> float:
        return 0.0 if key == X else self.ops[key[0]].numel[key[1]] / self.pixels


@dataclass(frozen=True)
class Stage:
    """Operations ``[start, stop)``; reads ``inputs`` (keys made earlier, or ``X``), keeps ``outputs``."""

    start: int
    stop: int
    inputs: tuple[tuple[int, int], ...]
    outputs: tuple[tuple[int, int], ...]
    density: float  # largest output elements per input pixel among its operations


class _Recorder(Tracer):
    """The geometry tracer, also keeping which operation made each activation."""

    def __init__(self):
        super().__init__()
        self.ops: list[OpRecord] = []
        self.made: dict[int, tuple[int, int]] = {}
        self.keep: list = []  # meta tensors: keeps ids unique for the whole trace

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        ins = [t for t in _tensors((args, kwargs)) if self.state(t) is not None]
        out = super().__torch_function__(func, types, args, kwargs)
        outs = list(_tensors(out))
        if not ins or not outs:
            return out
        keys = tuple(dict.fromkeys(self.made.get(id(t), X) for t in ins))
        states = [self.state(t) for t in outs]
        axes = tuple(s.axes if s is not None else (Axis(), Axis()) for s in states)
        k = len(self.ops)
        self.ops.append(OpRecord(getattr(func, "__name__", str(func)), keys, axes, tuple(t.numel() for t in outs)))
        for j, t in enumerate(outs):
            self.made[id(t)] = (k, j)
            self.keep.append(t)
        return out


def op_graph(model: nn.Module, in_channels: int, size: tuple[int, int]) -> tuple[OpGraph, object]:
    """Trace ``model`` once at ``size`` on the meta device, recording every operation."""
    from torch.func import functional_call

    from fcnkit.geometry.trace import State

    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    state = {k: torch.empty_like(v, device="meta") for k, v in model.named_parameters()}
    state.update({k: torch.empty_like(v, device="meta") for k, v in model.named_buffers()})
    x = torch.zeros(1, in_channels, *size, device="meta", dtype=dtype)
    rec = _Recorder()
    rec.watch(x, State((Axis(), Axis())))
    with rec, torch.no_grad():
        out = functional_call(model, state, (x,))
    from fcnkit.geometry.analytic import select_output

    key = rec.made.get(id(select_output(out)), (len(rec.ops) - 1, 0))
    return OpGraph(tuple(rec.ops), size[0] * size[1], key), out


def _whole(v: Fraction) -> bool:
    return Fraction(v).denominator == 1


def stage_splits(graph: OpGraph, align: int, max_density: float) -> list[Stage]:
    """Cut the operations where the running maximum stride grows (module docstring)."""
    ops = graph.ops
    n = len(ops)
    last_use: dict = {}
    for k, op in enumerate(ops):
        for key in op.inputs:
            last_use[key] = k
    level, levels = Fraction(0), []
    for op in ops:
        level = max([level] + [max(a.jump for a in axes) for axes in op.axes])
        levels.append(level)
    live: set = set()
    best: dict = {}  # level -> (density, p)
    for p in range(n - 1):
        live = {key for key in live if last_use.get(key, -1) > p}
        live.update((p, j) for j in range(len(ops[p].axes)) if last_use.get((p, j), -1) > p)
        if not live or levels[p] <= 1 or levels[p] == levels[-1]:
            continue
        if not all(_whole(Fraction(align) / a.jump) for key in live for a in graph.axes(key)):
            continue
        dens = sum(graph.density(key) for key in live)
        if dens <= max_density and (levels[p] not in best or dens <= best[levels[p]][0]):
            best[levels[p]] = (dens, p)
    cuts = sorted(p + 1 for _, p in best.values())
    bounds = [0] + cuts + [n]
    stages = []
    for start, stop in itertools.pairwise(bounds):
        inputs = tuple(dict.fromkeys(key for op in ops[start:stop] for key in op.inputs if key == X or key[0] < start))
        outputs = tuple(
            (k, j) for k in range(start, stop) for j in range(len(ops[k].axes)) if last_use.get((k, j), -1) >= stop
        )
        dens = max(graph.density((k, j)) for k in range(start, stop) for j in range(len(ops[k].axes)))
        stages.append(Stage(start, stop, inputs, outputs, dens))
    return stages


def _reach(axis: Axis) -> tuple[Fraction, Fraction]:
    """``(smax, emin)``: cell ``m`` of this map sees within ``[.., m*jump + smax]`` at its start and
    from ``m*jump + emin`` at its end, whatever its phase (bounds the cells a window can contain)."""
    j = axis.jump
    return (
        max(Fraction(axis.start[p]) - p * j for p in range(axis.period)),
        min(Fraction(axis.end[p]) - p * j for p in range(axis.period)),
    )


def stage_halo(graph: OpGraph, outputs, inputs, align: int) -> tuple[int, int]:
    """Margin (input pixels, multiple of ``align``) around a kept cell's centre so that every input
    cell it reads lies inside the tile: a read cell's window lies inside the kept cell's window."""
    halo = []
    for d in (0, 1):
        need = Fraction(0)
        for o in outputs:
            ax = graph.axes(o)[d]
            lo, hi = ax.envelope()
            centre = (lo + hi) / 2
            for i in inputs:
                smax, emin = _reach(graph.axes(i)[d])
                need = max(need, centre - lo + smax, hi - centre - emin)
        h = math.ceil(need)
        halo.append(-(-h // align) * align)
    return halo[0], halo[1]


_GEOMETRY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cached_geometry(model: nn.Module, in_channels: int):
    """``receptive_field(model, in_channels)``, traced once per model (and train/eval mode) and cached."""
    from fcnkit.geometry import receptive_field

    per = _GEOMETRY.setdefault(model, {})
    key = (in_channels, model.training)
    if key not in per:
        per[key] = receptive_field(model, in_channels=in_channels)
    return per[key]
