"""``predict``: whole-image or tiled inference that equals whole-image inference.

Tiled inference with ``blend="crop"`` reproduces the whole-image logits (to float rounding)
when all of these hold - ``halo="auto"`` and the tile planner make them hold:

    1. every tile window starts at a multiple of ``geometry.align`` (the largest stride inside the
       net), so each feature map samples the same grid as in the whole-image run;
    2. a kept cell's receptive field lies inside its tile (halo >= (receptive field - 1) / 2);
    3. tile edges on the image border are the image border (no padding beyond it), and the last
       tile ends at the image's end, so zero padding, ``ceil_mode`` pooling and internal
       "pad to a multiple of 32" happen exactly where the whole-image run has them;
    4. nothing sees the whole image: no global pooling, no normalisation over H and W (Instance/
       Group/LayerNorm), no BatchNorm in training mode, no attention, no resize whose ratio
       depends on the image size. Such layers are reported by the geometry (``blockers``):
       ``blend="crop"`` then raises, the blending modes warn.

::

    whole image   [.........................................................]
    tile 0        [==== kept 0 ====)hhhh]          h = halo, from the geometry
    tile 1                   [hhhh[==== kept 1 ====)hhhh]
    tile 2                                  [hhhh[====== kept 2 ==========]
                  ^ window starts: multiples of align      ^ last window ends at the image end

Memory: tiles are read from the source lazily, batched to the device, and their output is
handed to a sink as it finishes (``writers.py``); ``tile="auto"`` picks the largest tile whose
estimated activations fit ``memory_budget``.
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from fcnkit.errors import InputError
from fcnkit.inference.aggregate import make_aggregator
from fcnkit.inference.sources import as_source
from fcnkit.inference.tiling import BLENDS, TilePlan, output_shape, plan_tiles
from fcnkit.inference.writers import NpySink, TensorSink
from fcnkit.utils.device import model_device

__all__ = [
    "predict",
    "TiledJob",
    "parse_memory",
    "auto_tile",
    "eval_mode",
    "staged_or_single",
    "memory_budget_bytes",
    "activation_elements_per_pixel",
]

CPU_BUDGET = 512 << 20  # default activation budget for tile="auto" on the CPU (torch itself takes ~0.5 GB)


def parse_memory(text) -> int:
    """``"512M"``, ``"2G"``, ``"1.5GB"`` or a number of bytes -> bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    s = str(text).strip().upper().rstrip("B").rstrip("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        return int(float(s[:-1]) * units[s[-1]]) if s and s[-1] in units else int(float(s))
    except ValueError:
        raise InputError(f"memory budget {text!r} is not understood; write e.g. 512M or 2G") from None


def memory_budget_bytes(device: torch.device, memory_budget) -> int:
    """The activation budget in bytes: ``memory_budget`` parsed ("512M", "2G", bytes), else the
    default of ``device`` (:data:`CPU_BUDGET` on the CPU, half the free memory of a GPU)."""
    if memory_budget is not None:
        return parse_memory(memory_budget)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return CPU_BUDGET


def activation_elements_per_pixel(model: nn.Module, channels: int) -> float:
    """Peak number of activation elements alive during a forward, per input pixel (a meta trace
    that follows when the forward frees each activation; within ~20% of a measured CPU forward)."""
    from fcnkit.geometry.analytic import DEFAULT_SIZES, trace_model

    for size in DEFAULT_SIZES:
        try:
            tracer, _ = trace_model(model, channels, size)
        except Exception:  # noqa: BLE001 - too small for the model: try the next size
            continue
        return tracer.peak / (size[0] * size[1])
    raise InputError(f"{type(model).__name__}: cannot run the model to size its tiles; pass tile=N instead of 'auto'")


def auto_tile(model, geometry, image_size, channels: int, budget: int, batch_size: int, blend: str) -> int | None:
    """Largest tile (a multiple of the alignment) whose activations fit ``budget``; None = whole image."""
    p = next(model.parameters(), None)
    per_px = (
        activation_elements_per_pixel(model, channels) * (p.element_size() if p is not None else 4) * 1.25
    )  # +25% workspace
    align = max(geometry.align)
    side = int(math.sqrt(budget / max(per_px * batch_size, 1e-9)))
    if side >= max(image_size) and budget >= per_px * image_size[0] * image_size[1]:
        return None
    side = side // align * align
    smallest = 2 * max(geometry.halo()) + align if blend == "crop" else align
    if side < smallest:
        need = per_px * batch_size * smallest**2
        raise InputError(
            f"memory budget {budget / 2**20:.0f} MiB fits no tile of this model (>= {need / 2**20:.0f} MiB for "
            f"{smallest}x{smallest} tiles, batch {batch_size}); raise --memory-budget or lower --batch-size"
        )
    return side


class _Progress:
    def __init__(self, total: int, enabled):
        self.total, self.done, self.enabled = total, 0, enabled

    def step(self, n: int) -> None:
        self.done += n
        if callable(self.enabled):
            self.enabled(self.done, self.total)
        elif self.enabled:
            end = "\n" if self.done >= self.total else ""
            print(f"\rtiles {self.done}/{self.total}", end=end, file=sys.stderr, flush=True)


class TiledJob:
    """One image through one model: the plan, the tile runs, and the hand-off to a sink."""

    def __init__(
        self,
        model,
        image,
        tile=None,
        halo="auto",
        batch_size=1,
        blend="crop",
        overlap=0.25,
        device=None,
        memory_budget=None,
        progress=False,
    ):
        if blend not in BLENDS:
            raise InputError(f"blend={blend!r} is not known; use one of {', '.join(BLENDS)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size={batch_size!r} must be a positive int")
        self.model, self.source, self.batch_size, self.progress = model, as_source(image), batch_size, progress
        self.device = model_device(model, device)
        c, h, w = self.source.shape
        self.stride, self.offset, self.geometry = (1, 1), (0, 0), None
        if tile == "auto":
            tile = auto_tile(
                model,
                self.model_geometry(),
                (h, w),
                c,
                memory_budget_bytes(self.device, memory_budget),
                batch_size,
                blend,
            )
        if tile is None or (isinstance(tile, int) and not isinstance(tile, bool) and tile >= max(h, w)):
            self.plan = plan_tiles((h, w), (h, w), 0, 1)
            return
        if not isinstance(tile, int) or isinstance(tile, bool) or tile < 1:
            raise InputError(f"tile={tile!r} must be None, a positive int or 'auto'")
        g = self.model_geometry()
        if halo == "auto":
            halo = g.halo()
        elif not isinstance(halo, int) or isinstance(halo, bool) or halo < 0:
            raise InputError(f"halo={halo!r} must be 'auto' or a non-negative int")
        self.plan: TilePlan = plan_tiles((h, w), tile, halo, g.align, blend, overlap)
        m = getattr(g, "input_multiple", (1, 1))
        if len(self.plan) > 1 and (h % m[0] or w % m[1]):
            raise InputError(
                f"{type(model).__name__}: resizes its output by a ratio that is whole only for inputs whose "
                f"H and W are multiples of {m[0]}x{m[1]} (this image is {h}x{w}); pad or crop the image "
                "to such a size, or use tile=None"
            )
        if len(self.plan) > 1 and g.blockers:
            msg = f"{type(model).__name__}: tiled inference cannot equal whole-image inference: {g.blockers[0]}"
            if blend == "crop":
                raise InputError(msg + "; use tile=None (whole image) or blend='average'/'gaussian' to accept seams")
            warnings.warn(msg, stacklevel=3)
        self.stride, self.offset = g.stride, g.offset

    def model_geometry(self):
        """The model's receptive-field geometry, traced once and kept."""
        if self.geometry is None:
            from fcnkit.geometry.stages import cached_geometry

            # a model that cannot be traced (an onnxruntime session) carries the geometry it was exported with
            g = getattr(self.model, "fcnkit_geometry", None) or cached_geometry(self.model, self.source.shape[0])
            for j, a in zip(g.stride, g.align):
                if (Fraction(a) / Fraction(j)).denominator != 1:
                    raise InputError(
                        f"{type(self.model).__name__}: output stride {j} does not divide its alignment {a}; use "
                        "tile=None"
                    )
            self.geometry = g
        return self.geometry

    def _run(self, tiles) -> torch.Tensor:
        x = torch.stack([self.source.read((t.rows.start, t.rows.stop), (t.cols.start, t.cols.stop)) for t in tiles])
        with torch.inference_mode():
            from fcnkit.geometry.analytic import select_output

            y = select_output(self.model(x.to(self.device, non_blocking=True)))
        if not isinstance(y, torch.Tensor) or y.dim() != 4:
            raise InputError(
                f"{type(self.model).__name__}: output is not a [B, K, H, W] score map; predict needs a segmentation "
                "model"
            )
        return y.cpu()

    def run(self, make_sink):
        """Run every tile; ``make_sink((K, H_out, W_out))`` builds the sink once the output size is known."""
        tiles = list(self.plan)
        last = self._run([tiles[-1]])[0]  # the last tile ends at the image end: it fixes the output size
        shape = output_shape(tiles[-1], self.stride, tuple(last.shape))
        self.out_dtype = last.dtype
        sink = make_sink(shape)
        agg = make_aggregator(sink, self.plan, shape, self.stride, self.offset)
        progress = _Progress(len(tiles), self.progress)
        batch = []
        for i, t in enumerate(tiles[:-1]):
            batch.append(t)
            nxt = tiles[i + 1] if i + 1 < len(tiles) - 1 else None
            if len(batch) == self.batch_size or nxt is None or nxt.shape != t.shape:
                for tt, y in zip(batch, self._run(batch)):
                    agg.add(tt, y)
                progress.step(len(batch))
                batch = []
        agg.add(tiles[-1], last)
        progress.step(1)
        agg.close()
        return sink


@contextlib.contextmanager
def eval_mode(model: nn.Module, device: torch.device):
    """Run ``model`` in eval mode on ``device`` for the block, then restore its train/eval mode."""
    was = model.training
    model.eval().to(device)
    try:
        yield
    finally:
        model.train(was)


def _replayable(model: nn.Module) -> bool:
    """Whether ``model`` can be run stage by stage: not a wrapped exported graph (an onnxruntime
    session carries the geometry it was exported with, ``fcnkit_geometry``, and runs whole)."""
    return getattr(model, "fcnkit_geometry", None) is None


def staged_or_single(job: TiledJob, staged: bool, halo, tile=None):
    """The staged executor for an exact tiled job when possible, else the single-level job itself.
    ``tile``: the caller's tile when it is smaller than the single-level job's (staged halos are smaller)."""
    if not staged or not _replayable(job.model) or halo != "auto" or job.plan.blend != "crop":
        return job
    t = (tile, tile) if isinstance(tile, int) and not isinstance(tile, bool) else job.plan.tile
    if all(a >= b for a, b in zip(t, job.source.shape[1:])):
        return job
    from fcnkit.inference.staged import staged_job

    sj = staged_job(job.model, job.source, t, job.device, progress=None)
    return job if sj is None else _StagedOrSingle(sj, job)


class _StagedOrSingle:
    """Runs the staged job; if the model turns out not to replay stage by stage, says so once and
    runs the single-level job instead (sinks are made again, so nothing half-written stays)."""

    def __init__(self, staged, single: TiledJob):
        self.staged, self.single = staged, single
        staged.progress = _Progress(len(staged), single.progress) if single.progress else None

    def run(self, make_sink):
        from fcnkit.inference.staged import CannotStage, _say_once

        self.active = self.staged
        try:
            return self.staged.run(make_sink)
        except CannotStage as exc:
            _say_once(self.single.model, str(exc))
            self.active = self.single
            return self.single.run(make_sink)

    @property
    def out_dtype(self):
        return self.active.out_dtype

    def __getattr__(self, name):  # plan, geometry, ... of the single-level job (the same image and model)
        return getattr(self.single, name)


def predict(
    model: nn.Module,
    image,
    tile=None,
    halo="auto",
    batch_size: int = 1,
    blend: str = "crop",
    overlap: float = 0.25,
    device=None,
    memory_budget=None,
    out=None,
    progress=False,
    staged: bool = True,
) -> torch.Tensor:
    """Logits ``[K, H_out, W_out]`` of ``model`` on ``image``, whole or tiled (module docstring: when exact).

    Args:
        model: a segmentation model (``[B, C, H, W] -> [B, K, H', W']``); put in eval mode for the
            call (restored after) and moved to ``device``.
        image: a normalised ``[C, H, W]`` tensor, or a lazy source such as
            ``fcnkit.inference.open_image(path, channels, mean, std)``.
        tile: None (whole image), an int (tile window size in input pixels, rounded down to the
            geometry's alignment) or ``"auto"`` (largest tile fitting ``memory_budget``).
        halo: ``"auto"`` (half the receptive field, rounded up to the alignment) or an int (rounded
            up to the alignment; smaller than ``"auto"`` gives seams instead of exact results).
        batch_size: tiles per forward pass (more helps a GPU with small tiles; on a CPU one large
            tile beats a batch of small ones, whose halos cost compute).
        blend: ``"crop"`` (exact), ``"average"`` or ``"gaussian"`` (overlap ``overlap`` of the tile, blended).
        device: where the model runs (default: where its parameters are).
        memory_budget: bytes or ``"512M"``/``"2G"`` for ``tile="auto"``: the activations of one
            batch of tiles (default 512 MiB on CPU, half the free memory on CUDA).
        out: a ``.npy`` path: logits are streamed into it (atomically) and the returned tensor is
            memory-mapped from it, for outputs larger than memory.
        progress: True to print ``tiles done/total`` to stderr, or a callable ``(done, total)``.
        staged: with ``blend="crop"`` and ``halo="auto"``, run the network in stages split where the
            resolution drops, each tiled over its own input with its own halo (``staged.py``; same
            logits, less halo recomputation; tiles smaller than single-level tiling allows are fine,
            one tile per forward); False = single-level tiling. Models that cannot be staged fall
            back to single-level tiling (with the tile raised to its minimum), one warning per model.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"predict needs a torch.nn.Module, got {type(model).__name__}")
    with eval_mode(model, model_device(model, device)):
        single = tile
        staged = staged and _replayable(model)
        if (
            staged
            and blend == "crop"
            and halo == "auto"
            and isinstance(tile, int)
            and not isinstance(tile, bool)
            and tile > 0
        ):
            from fcnkit.geometry.stages import cached_geometry

            image = as_source(image)  # staged halos are smaller: a tile too small for single-level tiling is fine
            if tile < max(image.shape[1:]):
                with contextlib.suppress(InputError):  # an untraceable model: TiledJob says so below
                    g = cached_geometry(model, image.shape[0])
                    single = max(tile, 2 * max(g.halo()) + max(g.align))
        job = staged_or_single(
            TiledJob(model, image, single, halo, batch_size, blend, overlap, device, memory_budget, progress),
            staged,
            halo,
            tile,
        )
        if single != tile and isinstance(job, TiledJob):  # not staged after all: the tile is too small, say so
            job = TiledJob(model, image, tile, halo, batch_size, blend, overlap, device, memory_budget, progress)
        if out is None:
            return job.run(lambda shape: TensorSink(shape, job.out_dtype)).result
        from fcnkit.utils.atomic import atomic_path

        with atomic_path(out, suffix=".npy") as tmp:
            sink = job.run(lambda shape: NpySink(tmp, shape))
        return torch.from_numpy(np.asarray(sink.result))
