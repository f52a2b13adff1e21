"""Staged exact tiling: each part of the network is tiled over its own input, with its own halo.

Single-level tiling pays the whole receptive field (a 256-pixel halo for FCN-8s/ResNet-18) at
full resolution, where the network is most expensive. Staged tiling cuts the network where the
resolution drops (:func:`fcnkit.geometry.stages.stage_splits`) and runs one stage at a time over
the whole image::

    stage 0  image  --tiles, halo 32 px-->  layer1 (stride 4)        kept cores -> store 0
    stage 1  store 0 --tiles, halo 64 px-->  layer2 (stride 8)        -> store 1 (also a skip tap)
    stage 2  store 1 --tiles, halo 96 px-->  layer3 (stride 16)       -> store 2
    stage 3  stores 1, 2 --tiles, halo H-->  layer4 + head (stride 1) -> sink (exact logits)

Each stage's tiles keep only cells whose inputs lie inside the tile (the same core rule as
``tiling.py``), so every store equals the whole-image activation, and so does the result.
A stage runs the model's own ``forward`` on the tile under a replay mode: operations before the
stage run on the meta device (shapes only, no compute), operations whose outputs the stage reads
return the stored crop, the stage's operations compute, and the pass stops after its last one.
Stores larger than ``MMAP_BYTES`` are memory-mapped files in a temporary folder, their pages
dropped from resident memory after each tile.
If the model cannot be traced or replayed this way, :func:`staged_job` says so once per model
and returns ``None`` (the caller uses single-level tiling).
"""

from __future__ import annotations

import functools
import math
import tempfile
import warnings
import weakref
from dataclasses import replace
from fractions import Fraction

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from fcnkit.geometry.stages import X, op_graph, stage_halo, stage_splits
from fcnkit.geometry.trace import _tensors
from fcnkit.inference.aggregate import CropAggregator
from fcnkit.inference.sources import drop_pages
from fcnkit.inference.tiling import core_cells, origin_cell, output_shape, plan_tiles

__all__ = ["MMAP_BYTES", "CannotStage", "StagedJob", "staged_job"]

MMAP_BYTES = 64 << 20
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SAID: set = set()


class CannotStage(Exception):
    """The model's forward cannot be replayed stage by stage (message says why)."""


class _StageDone(Exception):
    pass


def _map(obj, fn):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (torch.Tensor, list, tuple, dict)) for v in obj):
        vals = [_map(v, fn) for v in obj]
        if isinstance(obj, list):
            return vals
        return type(obj)(*vals) if hasattr(obj, "_fields") else type(obj)(vals)
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    return obj


class _Replay(TorchFunctionMode):
    """Runs one stage of a traced forward (module docstring)."""

    def __init__(self, ops, stage, feeds: dict, last: bool):
        super().__init__()
        self.ops, self.stage, self.feeds, self.last = ops, stage, feeds, last
        self.k = 0
        self.act: dict = {}
        self.captured: dict = {}
        self.meta: dict = {}

    def activation(self, t: torch.Tensor) -> None:
        self.act[id(t)] = weakref.ref(t)

    def _is_act(self, t) -> bool:
        ref = self.act.get(id(t))
        return ref is not None and ref() is t

    def _to_meta(self, t: torch.Tensor) -> torch.Tensor:
        if t.device.type == "meta":
            return t
        hit = self.meta.get(id(t))
        if hit is None or hit[0]() is not t:
            hit = (weakref.ref(t), torch.empty_like(t, device="meta"))
            self.meta[id(t)] = hit
        return hit[1]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = list(_tensors((args, kwargs)))
        if not any(self._is_act(t) for t in tensors):
            return func(*args, **kwargs)
        k, name = self.k, getattr(func, "__name__", str(func))
        if k >= self.stage.stop and not self.last:
            raise _StageDone
        if self.last and k >= self.stage.start:  # the rest of the forward, as it comes (no bookkeeping)
            return func(*args, **kwargs)
        if k >= len(self.ops) or self.ops[k].name != name:
            out = func(*args, **kwargs)  # x.shape, x.size(), x.dim(): no tensor out, not traced as an operation
            if not any(True for _ in _tensors(out)):
                return out
            traced = self.ops[k].name if k < len(self.ops) else "the end"
            raise CannotStage(
                f"operation {k} is '{name}' on this tile but '{traced}' when traced (size-dependent control flow)"
            )
        if k < self.stage.start:
            out = func(*_map(args, self._to_meta), **_map(kwargs, self._to_meta))
            count = iter(range(10**9))
            out = _map(out, lambda t: self._feed((k, next(count)), t))
        else:
            if any(t.device.type == "meta" for t in tensors):
                raise CannotStage(f"operation {k} ('{name}') reads an activation that no earlier stage keeps")
            out = func(*args, **kwargs)
        if not any(True for _ in _tensors(out)):
            return out
        for j, t in enumerate(_tensors(out)):
            self.activation(t)
            if (k, j) in self.stage.outputs:
                self.captured[(k, j)] = t
        self.k += 1
        return out

    def _feed(self, key, meta: torch.Tensor) -> torch.Tensor:
        crop = self.feeds.get(key)
        return meta if crop is None else crop(tuple(meta.shape))


def _plan(model, in_channels: int):
    """(graph, stages, geometry) for ``model``, traced once and cached; raises CannotStage."""
    from fcnkit.geometry.analytic import DEFAULT_SIZES
    from fcnkit.geometry.stages import cached_geometry

    p = next(model.parameters(), None)
    key = (in_channels, model.training, p.dtype if p is not None else None)
    per = _PLANS.setdefault(model, {})
    if key not in per:
        g = cached_geometry(model, in_channels)
        align = max(g.align)
        graph, last = None, None
        for size in DEFAULT_SIZES:
            try:
                graph, _ = op_graph(model, in_channels, size)
                break
            except Exception as exc:  # noqa: BLE001 - the model refused this size (or cannot be traced): next
                last = exc
        if graph is None:
            per[key] = CannotStage(f"cannot trace it ({str(last).splitlines()[0][:120] if last else '?'})")
        else:
            per[key] = (
                graph,
                stage_splits(graph, align, max_density=4.0 * in_channels),
                g,
                _smallest_input(model, in_channels, align),
            )
    if isinstance(per[key], CannotStage):
        raise per[key]
    return per[key]


def _smallest_input(model, in_channels: int, align: int) -> int:
    """The smallest multiple of ``align`` (doubling) that the model accepts (a meta run: no compute)."""
    side = align
    while side < 4096:
        try:
            op_graph(model, in_channels, (side, side))
            return side
        except Exception:  # noqa: BLE001 - too small for the model
            side *= 2
    return side


def _say_once(model, reason: str) -> None:
    key = (type(model).__name__, reason)
    if key not in _SAID:
        _SAID.add(key)
        warnings.warn(
            f"{type(model).__name__}: staged tiling is not possible ({reason}); using single-level tiling "
            "(exact, with the whole receptive field as halo)",
            stacklevel=4,
        )


def staged_job(model, source, tile: tuple[int, int], device, progress=None):
    """A :class:`StagedJob`, or None when the model has one stage or cannot be staged (said once)."""
    try:
        graph, stages, g, smallest = _plan(model, source.shape[0])
    except CannotStage as exc:
        _say_once(model, str(exc))
        return None
    if len(stages) < 2:
        return None
    return StagedJob(model, source, tile, device, graph, stages, g, smallest, progress)


def _cell(px: int, jump) -> int:
    cell = Fraction(px) / Fraction(jump)
    if cell.denominator != 1:
        raise CannotStage(f"pixel {px} is not a whole number of cells of stride {jump}")
    return int(cell)


def _widen_last(plan, smallest: int):
    """Start a short last window earlier (more halo, same core) so the model accepts its size."""
    spans = []
    for axis in (plan.row_spans, plan.col_spans):
        last = axis[-1]
        if len(axis) > 1 and last.size < smallest:
            start = max(0, (last.stop - smallest) // plan.align[0] * plan.align[0])
            axis = axis[:-1] + (replace(last, start=min(start, last.start)),)
        spans.append(axis)
    return replace(plan, row_spans=spans[0], col_spans=spans[1])


class StagedJob:
    """One image through one model, stage by stage (module docstring)."""

    def __init__(self, model, source, tile, device, graph, stages, geometry, smallest: int = 1, progress=None):
        self.model, self.source, self.device, self.graph, self.stages = model, source, device, graph, stages
        self.geometry, self.progress = geometry, progress
        self.align = max(geometry.align)
        _, h, w = source.shape
        dmax = max(s.density for s in stages)
        self.plans = []
        for s in stages:
            keys = s.outputs if s is not stages[-1] else [graph.output]
            halo = stage_halo(graph, keys, s.inputs, self.align)
            scale = math.sqrt(dmax / max(s.density, 1e-9))
            side = tuple(
                max(int(t * scale) // self.align * self.align, 2 * hh + self.align, smallest)
                for t, hh in zip(tile, halo)
            )
            self.plans.append(_widen_last(plan_tiles((h, w), side, halo, self.align, "crop"), smallest))
        p = next(model.parameters(), None)
        self.dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        self.stores: dict = {}
        self._mapped: dict = {}  # key -> numpy memmap of the stores kept on disk
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __len__(self) -> int:
        return sum(len(p) for p in self.plans)

    # -- one tile of one stage --------------------------------------------------------------
    def _crop(self, key, t, need: tuple[int, ...]) -> torch.Tensor:
        """The stored activation ``key`` for tile ``t``: from the tile's first cell, as many cells as
        the tile's own forward makes (a clone: in-place operations must not touch the store)."""
        store, idx = self.stores[key], []
        for axis, span, n, total in zip(self.graph.axes(key), (t.rows, t.cols), need[-2:], store.shape[-2:]):
            a = _cell(span.start, axis.jump)
            if a + n > total or tuple(store.shape[:-2]) != tuple(need[:-2]):
                raise CannotStage(
                    f"stored activation {key} ({list(store.shape)}) has no {list(need)} block at cell {a}"
                )
            idx.append(slice(a, a + n))
        out = store[..., idx[0], idx[1]].clone().to(self.device)
        if key in self._mapped:
            drop_pages(self._mapped[key])
        return out

    def _run_tile(self, i: int, t):
        stage, last = self.stages[i], i == len(self.stages) - 1
        feeds = {key: functools.partial(self._crop, key, t) for key in stage.inputs if key != X}
        if i == 0 or X in stage.inputs:
            x = self.source.read((t.rows.start, t.rows.stop), (t.cols.start, t.cols.stop))[None].to(
                self.device, self.dtype
            )
        else:
            x = torch.empty(1, self.source.shape[0], t.rows.size, t.cols.size, device="meta", dtype=self.dtype)
        mode = _Replay(self.graph.ops, stage, feeds, last)
        mode.activation(x)
        out = None
        try:
            with mode, torch.inference_mode():
                out = self.model(x)
        except _StageDone:
            pass
        except CannotStage:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise CannotStage(f"a {t.rows.size}x{t.cols.size} tile of stage {i} fails ({first})") from exc
        if last:
            from fcnkit.geometry.analytic import select_output

            return {None: select_output(out)[0].cpu()}
        missing = [k for k in stage.outputs if k not in mode.captured]
        if missing:
            raise CannotStage(f"stage {i} did not make activations {missing}")
        return {k: v.cpu() for k, v in mode.captured.items()}

    def _store(self, key, like: torch.Tensor, full: tuple[int, int]) -> torch.Tensor:
        shape = tuple(like.shape[:-2]) + full
        nbytes = math.prod(shape) * like.element_size()
        if nbytes <= MMAP_BYTES:
            return torch.empty(shape, dtype=like.dtype)
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fcnkit-stages-")
        arr = np.lib.format.open_memmap(
            f"{self._tmp.name}/{key[0]}_{key[1]}.npy",
            mode="w+",
            dtype=torch.empty(0, dtype=like.dtype).numpy().dtype,
            shape=shape,
        )
        self._mapped[key] = arr
        return torch.from_numpy(arr)

    def _keep(self, key, t, y: torch.Tensor) -> None:
        store, box = self.stores[key], []
        for d, (axis, span) in enumerate(zip(self.graph.axes(key), (t.rows, t.cols))):
            _, jump, offset = axis.summary()
            n0, n1 = core_cells(span, store.shape[-2 + d], jump, offset)
            box.append((n0, n1, n0 - origin_cell(span, jump)))
        (r0, r1, a), (c0, c1, b) = box
        store[..., r0:r1, c0:c1] = y[..., a : a + r1 - r0, b : b + c1 - c0]
        if key in self._mapped:  # written blocks go to disk, not into our resident memory
            drop_pages(self._mapped[key])

    # -- the whole job ------------------------------------------------------------------------
    def run(self, make_sink):
        """Every stage in turn; ``make_sink((K, H_out, W_out))`` is called once the output size is known."""
        try:
            for i, plan in enumerate(self.plans):
                tiles = list(plan)
                first = self._run_tile(i, tiles[-1])  # the last tile ends at the image end: fixes the sizes
                if i < len(self.stages) - 1:
                    for key, y in first.items():
                        full = tuple(
                            origin_cell(s, a.jump) + n
                            for s, a, n in zip((tiles[-1].rows, tiles[-1].cols), self.graph.axes(key), y.shape[-2:])
                        )
                        self.stores[key] = self._store(key, y, full)
                        self._keep(key, tiles[-1], y)
                    del first
                    for t in tiles[:-1]:
                        for key, y in self._run_tile(i, t).items():
                            self._keep(key, t, y)
                        if self.progress:
                            self.progress.step(1)
                    if self.progress:
                        self.progress.step(1)
                    self._release(i)
                    continue
                y = first[None]
                del first
                g = self.geometry
                shape = output_shape(tiles[-1], g.stride, tuple(y.shape))
                self.out_dtype = y.dtype
                sink = make_sink(shape)
                agg = CropAggregator(sink, plan, shape, g.stride, g.offset)
                for t in tiles[:-1]:
                    agg.add(t, self._run_tile(i, t)[None])
                    if self.progress:
                        self.progress.step(1)
                agg.add(tiles[-1], y)
                if self.progress:
                    self.progress.step(1)
                agg.close()
                return sink
        finally:
            self.stores.clear()
            self._mapped.clear()
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def _release(self, i: int) -> None:
        """Drop stores that no later stage reads."""
        later = {key for s in self.stages[i + 1 :] for key in s.inputs}
        for key in [k for k in self.stores if k not in later]:
            del self.stores[key]
            self._mapped.pop(key, None)
