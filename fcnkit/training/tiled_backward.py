"""``tiled_backward``: the exact whole-image gradient, computed tile by tile (core: torch only).

The pixelwise loss is a sum over output cells, and each cell depends only on the input inside
its receptive field. So the whole-image loss splits into per-tile sums over the tiles' *core*
cells, and each part can be differentiated on its own tile::

    whole image   [.........................................................]
    tile 0        [==== core 0 ====)hhhh]            forward + backward on tile 0,
    tile 1                   [hhhh[==== core 1 ====)hhhh]   loss of core 0's cells only, then free
    tile 2                                  [hhhh[====== core 2 ==========]
                  h = halo >= (receptive field - 1) / 2, windows aligned to the net's stride

    d loss / d theta = sum over tiles  d (loss of the tile's core cells) / d theta

A core cell is computed from exactly the numbers of the whole-image pass (the planner of
:mod:`fcnkit.inference.tiling` guarantees it, as for exact tiled prediction), *as a function of
the parameters*, so its gradient is the whole-image one too; the wrong values near a tile's
inner edges (zero padding where the whole image has pixels) reach no core cell, hence no
gradient. Memory is bounded by one tile's forward and backward; the price is the halo,
recomputed by both neighbours. Tiles whose core holds no counted cell (all ignored, or dropped by
loss sampling) are skipped, forward and backward: sampling the loss then saves compute.

What tiles cannot reproduce, refused with the fix: BatchNorm in training mode (its statistics
over a tile differ from those over the image; use frozen/eval-mode BatchNorm or ``norm="none"``),
Dropout in training mode (each pass draws its own mask), and every layer that sees the whole
image, as the geometry reports it (global pooling; GroupNorm/InstanceNorm/LayerNorm, which
normalise over H and W).

Gradients are taken with ``torch.autograd.grad`` per tile and summed in buffers, so parameter
hooks (DDP's all-reduce) do not fire once per tile; :func:`tiled_backward` then adds the sum to
``.grad`` and :func:`tiled_gradients` returns it. Where a staged executor (one halo per
resolution stage) exists, it would replace :meth:`_TiledPass.forward_tile`; the plan, the
core-cell bookkeeping, the skipping and the reduction stay as they are.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fcnkit.constants import IGNORE_INDEX
from fcnkit.errors import InputError
from fcnkit.inference.tiling import TilePlan, core_cells, origin_cell, plan_tiles

__all__ = ["TiledResult", "tileable_geometry", "tiled_backward", "tiled_gradients", "training_tile"]

LOSSES = ("ce",)
REDUCTIONS = ("sum", "mean")


class TiledResult:
    """What one tiled pass did: ``loss`` (float, the whole-image loss), ``grads`` (one tensor or
    None per parameter), ``tiles`` run and ``skipped`` (no counted cell in their core), ``cells``
    counted (weight > 0)."""

    def __init__(self, loss: float, grads: list, tiles: int, skipped: int, cells: int):
        self.loss, self.grads, self.tiles, self.skipped, self.cells = loss, grads, tiles, skipped, cells


def tileable_geometry(model: nn.Module, in_channels: int, geometry=None):
    """The model's :class:`~fcnkit.geometry.Geometry` after checking that tiles can give its exact
    whole-image gradient; :class:`InputError` naming the layer and the fix otherwise."""
    for name, module in model.named_modules():
        if module.training and isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise InputError(
                f"layer '{name}' is BatchNorm in training mode: its statistics over a tile differ "
                "from those over the whole image; freeze it (call .eval() on the BatchNorm layers) "
                "or build with norm='none'"
            )
        if module.training and isinstance(module, nn.modules.dropout._DropoutNd):
            raise InputError(
                f"layer '{name}' is Dropout in training mode: each tile would draw its own mask; "
                "call .eval() on it or build the model without dropout"
            )
    if geometry is None:
        from fcnkit.geometry import receptive_field

        geometry = receptive_field(model, in_channels)
    if geometry.blockers:
        raise InputError(
            f"{type(model).__name__}: tiles cannot give the whole-image gradient: {geometry.blockers[0]}; "
            "use a net without it (norm='none' or eval-mode BatchNorm instead of group/instance norm)"
        )
    for s, a in zip(geometry.stride, geometry.align):
        if (Fraction(a) / Fraction(s)).denominator != 1:
            raise InputError(
                f"{type(model).__name__}: output stride {s} does not divide its alignment {a}; "
                "train it whole (tile=None)"
            )
    return geometry


def training_tile(model: nn.Module, geometry, in_channels: int, budget: int) -> int:
    """Largest tile side (a multiple of the alignment) whose forward + backward fits ``budget`` bytes.

    Estimate per input pixel: the activations autograd saves for the backward (counted on the meta
    device) plus the forward's peak of live activations (the backward's transient), +25%.
    """
    per_px = training_bytes_per_pixel(model, in_channels)
    align = max(geometry.align)
    side = int(math.sqrt(budget / per_px)) // align * align
    smallest = 2 * max(geometry.halo()) + align
    if side < smallest:
        raise InputError(
            f"memory budget {budget / 2**20:.0f} MiB fits no training tile of this model (a "
            f"{smallest}x{smallest} tile needs about {per_px * smallest**2 / 2**20:.0f} MiB); "
            "raise the budget or pass tile=N"
        )
    return side


def training_bytes_per_pixel(model: nn.Module, in_channels: int, size: int = 64) -> float:
    """Estimated bytes per input pixel of one training forward + backward (see :func:`training_tile`)."""
    from torch.func import functional_call

    from fcnkit.inference.predict import activation_elements_per_pixel

    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    state = {k: torch.empty_like(v, device="meta").requires_grad_(v.requires_grad) for k, v in model.named_parameters()}
    state.update({k: torch.empty_like(v, device="meta") for k, v in model.named_buffers()})
    saved: dict[int, torch.Tensor] = {}

    def pack(t):
        saved.setdefault(id(t), t)  # keep a reference so ids stay unique
        return t

    for side in (size, 4 * size, 16 * size):
        saved.clear()
        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.enable_grad():
                functional_call(model, state, (torch.zeros(1, in_channels, side, side, device="meta", dtype=dtype),))
        except Exception:  # noqa: BLE001 - too small for the model: try a larger size
            continue
        elements = sum(t.numel() for t in saved.values() if t.dim() >= 3)
        peak = activation_elements_per_pixel(model, in_channels)
        return (elements / side**2 + peak) * torch.finfo(dtype).bits / 8 * 1.25
    raise InputError(
        f"{type(model).__name__}: cannot run the model to size its training tiles; pass tile=N instead of 'auto'"
    )


def even_tile(length: int, tile: int, halo: int, align: int) -> int:
    """The smallest aligned window that covers ``length`` with as few tiles as windows of ``tile``.

    ``n`` windows of width ``w`` cover ``n * w - 2 * halo * (n - 1)`` pixels (neighbours share two
    halos), so a 2048-pixel side with halo 32 needs 2 windows of 1056, not 1504 + 608: the halo
    is recomputed once per seam, not over half a tile. Never larger than ``tile``.
    """
    t = tile // align * align
    if length <= tile or t - 2 * halo < align:
        return tile  # one tile, or a tile the planner refuses with its own message
    n = -(-(length - 2 * halo) // (t - 2 * halo))
    w = -(-(length + 2 * halo * (n - 1)) // n)
    return min(-(-w // align) * align, t)


def tiled_gradients(
    model: nn.Module,
    image,
    mask,
    tile,
    *,
    loss: str = "ce",
    weights=None,
    class_weights=None,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "sum",
    geometry=None,
    memory_budget=None,
) -> TiledResult:
    """The whole-image loss and its gradient, computed tile by tile, without touching ``.grad``.

    Same arguments as :func:`tiled_backward`; ``geometry`` (a checked one, to skip the trace).
    Returns a :class:`TiledResult` whose ``grads`` follow ``[p for p in model.parameters() if p.requires_grad]``.
    """
    return _TiledPass(
        model, image, mask, tile, loss, weights, class_weights, ignore_index, reduction, geometry, memory_budget
    ).run()


def tiled_backward(
    model: nn.Module,
    image,
    mask,
    tile,
    *,
    loss: str = "ce",
    weights=None,
    class_weights=None,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "sum",
    memory_budget=None,
) -> float:
    """Add to the parameters' ``.grad`` the gradient of the whole-image loss, computed tile by tile.

    Equals ``L = pixelwise CE(model(image[None]), mask[None])`` followed by ``L.backward()``
    (to float rounding; tested <= 1e-10 relative in float64), with memory bounded by one tile.

    Args:
        model: a segmentation model ``[B, C, H, W] -> [B, K, H', W']`` without train-mode BatchNorm
            or Dropout and without layers that see the whole image (refused with the fix).
        image: ``[C, H, W]`` (or a batch ``[B, C, H, W]``) normalised tensor, or a lazy source
            (``fcnkit.inference.open_image``: a memory-mapped TIFF is read tile by tile).
        mask: ``[H', W']`` (``[B, H', W']``) targets of the model's output cells, int, 255 = ignore;
            a tensor or a numpy array (memory-mapped welcome).
        tile: largest tile side in input pixels (tiles are evened out: :func:`even_tile`), ``None`` = one tile, or
            ``"auto"``: the largest whose forward + backward fit ``memory_budget`` (default 512 MiB
            on CPU, half the free memory on CUDA).
        loss: ``"ce"``, the pixelwise cross-entropy of :func:`fcnkit.training.losses.pixelwise_loss`.
        weights: per-cell weights shaped like ``mask`` (a regime's weight map) or None.
        class_weights: per-class weights ``[K]`` or None.
        reduction: ``"sum"`` (sum of weighted cell losses) or ``"mean"`` (divided by the total
            weight of the whole image's counted cells: exactly ``pixelwise_loss``).

    Returns:
        The whole-image loss (float).
    """
    result = tiled_gradients(
        model,
        image,
        mask,
        tile,
        loss=loss,
        weights=weights,
        class_weights=class_weights,
        ignore_index=ignore_index,
        reduction=reduction,
        memory_budget=memory_budget,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        for p, g in zip(params, result.grads):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g
            else:
                p.grad += g
    return result.loss


class _TiledPass:
    """One tiled forward + backward over one image or a batch (see the module docstring)."""

    def __init__(
        self, model, image, mask, tile, loss, weights, class_weights, ignore_index, reduction, geometry, memory_budget
    ):
        if not isinstance(model, nn.Module):
            raise InputError(f"tiled_backward needs a torch.nn.Module, got {type(model).__name__}")
        if loss not in LOSSES:
            raise InputError(f"loss={loss!r} is not known; use one of {', '.join(LOSSES)}")
        if reduction not in REDUCTIONS:
            raise InputError(f"reduction={reduction!r} is not known; use one of {', '.join(REDUCTIONS)}")
        self.model, self.ignore_index, self.reduction = model, ignore_index, reduction
        self.sources, self.masks, self.weights = _per_image(image, mask, weights)
        p = next(model.parameters(), None)
        self.device = p.device if p is not None else torch.device("cpu")
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights).to(self.device)
        c, h, w = self.sources[0].shape
        self.geometry = tileable_geometry(model, c, geometry)
        if tile == "auto":
            from fcnkit.inference.predict import memory_budget_bytes

            tile = training_tile(model, self.geometry, c, memory_budget_bytes(self.device, memory_budget))
        if tile is not None and (not isinstance(tile, int) or isinstance(tile, bool) or tile < 1):
            raise InputError(f"tile={tile!r} must be None, a positive int or 'auto'")
        self.tile = tile
        self.params = [q for q in model.parameters() if q.requires_grad]

    def plan(self, size: tuple[int, int]) -> TilePlan:
        """The tile plan of one image (the inference planner: halo and alignment from the geometry),
        with the tiles evened out (:func:`even_tile`)."""
        if self.tile is None or self.tile >= max(size):
            return plan_tiles(size, size, 0, 1)
        halo, align = self.geometry.halo(), self.geometry.align
        tile = (even_tile(size[0], self.tile, halo[0], align[0]), even_tile(size[1], self.tile, halo[1], align[1]))
        return plan_tiles(size, tile, halo, align, "crop")

    def forward_tile(self, source, tile) -> torch.Tensor:
        """Logits ``[1, K, h, w]`` of one tile window (with autograd)."""
        from fcnkit.geometry.analytic import select_output

        x = source.read((tile.rows.start, tile.rows.stop), (tile.cols.start, tile.cols.stop))
        y = select_output(self.model(x[None].to(self.device, non_blocking=True)))
        if not isinstance(y, torch.Tensor) or y.dim() != 4:
            raise InputError(
                f"{type(self.model).__name__}: output is not a [B, K, H, W] score map; "
                "tiled training needs a segmentation model"
            )
        return y

    def cells(self, tile, out_shape) -> tuple[slice, slice]:
        """The tile's core cells in whole-output coordinates."""
        (r0, r1), (c0, c1) = (
            core_cells(span, n, s, o)
            for span, n, s, o in zip((tile.rows, tile.cols), out_shape, self.geometry.stride, self.geometry.offset)
        )
        return slice(r0, r1), slice(c0, c1)

    def weight(self, b: int, rows: slice, cols: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets and per-cell weights (0 for ignored cells) of a block of image ``b``'s cells."""
        target = _block(self.masks[b], rows, cols).to(self.device, torch.int64)
        valid = target != self.ignore_index
        weight = valid.to(torch.float64 if self._float64 else torch.float32)
        if self.class_weights is not None:
            weight = weight * self.class_weights.to(weight.dtype)[torch.where(valid, target, 0)]
        if self.weights[b] is not None:
            weight = weight * _block(self.weights[b], rows, cols).to(self.device, weight.dtype)
        return target, weight

    def run(self) -> TiledResult:
        self._float64 = bool(self.params) and self.params[0].dtype == torch.float64
        jobs, total, counted = [], 0.0, 0
        for b, source in enumerate(self.sources):
            plan, out_shape = self.plan(source.shape[1:]), tuple(self.masks[b].shape)
            for t in plan:
                rows, cols = self.cells(t, out_shape) if len(plan) > 1 else (slice(None), slice(None))
                _, weight = self.weight(b, rows, cols)
                w, n = float(weight.sum()), int((weight > 0).sum())
                total, counted = total + w, counted + n
                jobs.append((b, t, rows, cols, n > 0, len(plan) == 1, out_shape))
        denominator = max(total, torch.finfo(torch.float64).tiny) if self.reduction == "mean" else 1.0
        grads: list = [None] * len(self.params)
        loss_sum, ran = 0.0, 0
        for b, t, rows, cols, counts, whole, out_shape in jobs:
            if not counts:
                continue
            logits = self.forward_tile(self.sources[b], t)
            core = logits if whole else self._core(logits, t, rows, cols, out_shape)
            if tuple(core.shape[-2:]) != tuple(self.masks[b][rows, cols].shape):
                raise _shape_error(self.model, logits, self.masks[b].shape)
            target, weight = self.weight(b, rows, cols)
            ce = F.cross_entropy(core, target[None], reduction="none", ignore_index=self.ignore_index)[0]
            part = (ce * weight.to(ce.dtype)).sum() / denominator
            loss_sum += float(part.detach())
            if self.params:
                for k, g in enumerate(torch.autograd.grad(part, self.params, allow_unused=True)):
                    if g is not None:
                        grads[k] = g if grads[k] is None else grads[k].add_(g)
            ran += 1
            del logits, core, ce, part
        return TiledResult(loss_sum, grads, ran, len(jobs) - ran, counted)

    def _core(self, logits, t, rows: slice, cols: slice, out_shape) -> torch.Tensor:
        o_r, o_c = origin_cell(t.rows, self.geometry.stride[0]), origin_cell(t.cols, self.geometry.stride[1])
        last_r, last_c = t.rows.core_stop is None, t.cols.core_stop is None
        # the tile that ends at the image's end fixes the output size: it must match the mask's
        if (last_r and o_r + logits.shape[-2] != out_shape[0]) or (last_c and o_c + logits.shape[-1] != out_shape[1]):
            raise _shape_error(self.model, logits, out_shape, (o_r, o_c))
        return logits[..., rows.start - o_r : rows.stop - o_r, cols.start - o_c : cols.stop - o_c]


def _block(array, rows: slice, cols: slice) -> torch.Tensor:
    """``array[rows, cols]`` as a tensor: a tensor is sliced where it lives, a (memory-mapped) array read."""
    if isinstance(array, torch.Tensor):
        return array[rows, cols]
    return torch.as_tensor(np.asarray(array[rows, cols]))


def _shape_error(model, logits, mask_shape, origin=(0, 0)) -> InputError:
    size = (origin[0] + logits.shape[-2], origin[1] + logits.shape[-1])
    return InputError(
        f"{type(model).__name__} returns {size} score cells where the mask has {tuple(mask_shape)}; "
        "pass the mask of the model's output cells (for allconv, a dense model: output='dense')"
    )


def _per_image(image, mask, weights) -> tuple[list, list, list]:
    """One lazy source, mask ``[H', W']`` and weight map (or None) per image."""
    from fcnkit.inference.sources import TensorSource, as_source

    batched = isinstance(image, torch.Tensor) and image.dim() == 4
    sources = [TensorSource(x) for x in image] if batched else [as_source(image)]
    masks = list(mask) if batched else [mask]
    if len(masks) != len(sources) or any(getattr(m, "ndim", 0) != 2 for m in masks):
        raise InputError(
            f"mask of shape {tuple(getattr(mask, 'shape', ()))} does not fit the image "
            f"{tuple(getattr(image, 'shape', ()))}; pass [H', W'] per image ([B, H', W'] for a batch)"
        )
    maps: list = []
    if weights is None:
        maps = [None] * len(masks)
    else:
        maps = list(weights) if batched else [weights]
        if len(maps) != len(masks) or any(tuple(w.shape) != tuple(m.shape) for w, m in zip(maps, masks)):
            raise InputError(f"weights of shape {tuple(weights.shape)} must have the mask's shape {tuple(mask.shape)}")
    return sources, masks, maps
