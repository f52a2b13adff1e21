"""The one loss: pixelwise cross-entropy with per-cell weights (core: torch/numpy only).

Every training regime (whole image, loss sampling, class balancing, patchwise) is the same loss
with a different per-cell weight map, so the regimes never need a loss of their own::

    loss = sum_cells  w_cell * CE(logits_cell, target_cell)  /  sum_cells w_cell
    w_cell = class_weights[target_cell] * weight_map[cell]      (0 where target == ignore_index)

Dividing by the total weight (not the number of cells) keeps the loss scale, hence the learning
rate, independent of how many cells a regime keeps. With ``weight_map=None`` and
``class_weights=None`` this is exactly ``F.cross_entropy(..., ignore_index=255)``; with class
weights it equals ``F.cross_entropy(..., weight=class_weights)`` (PyTorch normalises the same way).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from fcnkit.constants import IGNORE_INDEX
from fcnkit.errors import InputError

__all__ = [
    "pixelwise_loss",
    "class_weights_from_masks",
    "CLASS_WEIGHT_MODES",
    "LOSSES",
    "segmentation_loss",
    "dice_loss",
    "focal_loss",
]

CLASS_WEIGHT_MODES = ("none", "inverse", "median")


def _cell_weights(target, weight_map, ignore_index, class_weights=None, dtype=torch.float32):
    """``(valid, weight)``: the cells that count and their weight in ``dtype``: 0 where ignored, else
    ``weight_map`` (or 1) times the class weight of the cell's target (if ``class_weights``); the one
    place every loss here takes them from."""
    valid = target != ignore_index
    weight = valid.to(dtype)
    if weight_map is not None:
        if weight_map.shape != target.shape:
            raise ValueError(f"weight_map {tuple(weight_map.shape)} must have the target's shape {tuple(target.shape)}")
        weight = weight * weight_map.to(device=target.device, dtype=dtype)
    if class_weights is not None:
        weight = weight * class_weights.to(device=target.device, dtype=dtype)[torch.where(valid, target, 0)]
    return valid, weight


def pixelwise_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight_map: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Weighted mean cross-entropy over the cells of ``logits [B, K, H, W]`` and ``target [B, H, W]``.

    ``weight_map [B, H, W]`` (float >= 0) weighs each cell (a regime's loss mask or sampling
    weights); ``class_weights [K]`` weighs each cell by its target class. Cells with
    ``target == ignore_index`` weigh 0. If no cell counts, the loss is 0 (still differentiable),
    so a batch made only of ignored cells does not produce NaN.
    """
    if logits.ndim != target.ndim + 1 or logits.shape[:1] + logits.shape[2:] != target.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match: expected [B, K, H, W] and "
            "[B, H, W]"
        )
    # cross_entropy is evaluated in (at least) float32 under autocast; ignored cells give 0
    ce = F.cross_entropy(logits, target, reduction="none", ignore_index=ignore_index)
    _, weight = _cell_weights(target, weight_map, ignore_index, class_weights, ce.dtype)
    total = weight.sum()
    # clamp: an all-ignored batch gives 0 / 1 = 0 instead of 0 / 0
    return (ce * weight).sum() / total.clamp_min(torch.finfo(ce.dtype).tiny)


def class_weights_from_masks(
    masks_or_counts: Iterable | np.ndarray | torch.Tensor,
    num_classes: int,
    mode: str = "none",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Per-class loss weights ``float32 [K]`` from training masks or pixel counts.

    ``masks_or_counts``: an iterable of masks (a list of integer arrays/tensors, or one
    ``[N, H, W]`` array; ``ignore_index`` skipped), or ONE array of pixel counts, per class
    ``[K]`` or per image and class ``[N, K]`` (a single 1-D or 2-D array is always counts).

    ``mode``:
      - ``"none"``: all ones.
      - ``"inverse"``: ``w_c = total / (n_present * count_c)``: inverse frequency, scaled so that
        the weighted number of pixels equals the unweighted one (mean weight per pixel = 1).
      - ``"median"``: median frequency balancing (Eigen & Fergus, 2015): ``w_c = median_f / f_c``
        with ``f_c`` = pixels of class c / total pixels of the images where c is present.
        From ``[K]`` counts (no per-image information) every class counts as present in the one
        pooled "image", i.e. ``f_c = count_c / total``.

    A class with no pixel gets weight 0: it has no cell to weigh.
    """
    if mode not in CLASS_WEIGHT_MODES:
        raise InputError(f"class_weights: unknown mode '{mode}'; use one of {', '.join(CLASS_WEIGHT_MODES)}")
    if mode == "none":
        return torch.ones(num_classes, dtype=torch.float32)
    counts = _per_image_counts(masks_or_counts, num_classes, ignore_index)  # [N, K] float64
    per_class = counts.sum(axis=0)
    present = per_class > 0
    if not present.any():
        raise InputError("class_weights: the training masks hold no labelled pixel; check the masks (all 255?)")
    weights = np.zeros(num_classes, dtype=np.float64)
    if mode == "inverse":
        weights[present] = per_class.sum() / (present.sum() * per_class[present])
    else:  # median
        image_pixels = counts.sum(axis=1, keepdims=True)  # [N, 1]
        pixels_where_present = (image_pixels * (counts > 0)).sum(axis=0)  # [K]
        freq = per_class[present] / pixels_where_present[present]
        weights[present] = np.median(freq) / freq
    return torch.from_numpy(weights.astype(np.float32))


def _per_image_counts(masks_or_counts, num_classes: int, ignore_index: int) -> np.ndarray:
    # one array of ndim 1 or 2 is counts; masks come as an iterable (list, or an [N, H, W] array)
    if isinstance(masks_or_counts, (np.ndarray, torch.Tensor)) and masks_or_counts.ndim in (1, 2):
        counts = np.asarray(
            masks_or_counts.cpu() if isinstance(masks_or_counts, torch.Tensor) else masks_or_counts, dtype=np.float64
        )
        if counts.shape[-1] != num_classes or (counts < 0).any():
            raise InputError(
                f"class_weights: counts of shape {counts.shape} do not fit {num_classes} classes; give [K] or [N, K] "
                "pixel counts"
            )
        return counts[None] if counts.ndim == 1 else counts
    rows = []
    for mask in masks_or_counts:
        m = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).astype(np.int64).ravel()
        m = m[m != ignore_index]
        if m.size and (m.min() < 0 or m.max() >= num_classes):
            raise InputError(
                f"class_weights: a mask holds label {int(m.max())} but there are {num_classes} classes; fix the masks "
                "or num_classes"
            )
        rows.append(np.bincount(m, minlength=num_classes).astype(np.float64))
    if not rows:
        raise InputError("class_weights: no training masks given; the training split is empty")
    return np.stack(rows)


# --- the other losses users expect: Dice, focal, CE + Dice (issue 11) ---------------------------
#: ``loss`` choices of the train config
LOSSES = ("ce", "dice", "focal", "ce+dice")
FOCAL_GAMMA = 2.0


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight_map: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    gamma: float = FOCAL_GAMMA,
) -> torch.Tensor:
    """Focal loss (Lin et al., 2017): ``(1 - p_t) ** gamma * CE``, weighted and normalised exactly as
    :func:`pixelwise_loss` (so ``gamma=0`` is that loss)."""
    valid, weight = _cell_weights(target, weight_map, ignore_index, class_weights)
    safe = torch.where(valid, target, 0)
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, safe[:, None])[:, 0]
    term = -((1 - log_p.exp()) ** gamma) * log_p
    return (term * weight).sum() / weight.sum().clamp_min(torch.finfo(torch.float32).tiny)


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight_map: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Soft Dice loss over the batch: ``1 - sum_c a_c D_c / sum_c a_c`` with per class
    ``D_c = (2 sum w p_c y_c + smooth) / (sum w (p_c + y_c) + smooth)``, ``p`` the softmax, ``y`` the
    one-hot target, ``w`` the cell weight (0 where ignored, times ``weight_map``) and ``a_c`` the class
    weight (1 without ``class_weights``). Classes absent from both target and prediction score
    ``D_c = 1`` thanks to ``smooth``, as in MONAI's ``DiceLoss(smooth_nr=smooth_dr=1)``."""
    _, weight = _cell_weights(target, weight_map, ignore_index)
    k = logits.shape[1]
    prob = F.softmax(logits.float(), dim=1)
    onehot = F.one_hot(torch.where(weight > 0, target, 0).clamp(0, k - 1), k).permute(0, 3, 1, 2).float()
    w = weight[:, None]
    dims = (0, 2, 3)
    intersection = (w * prob * onehot).sum(dims)
    total = (w * (prob + onehot)).sum(dims)
    dice = (2 * intersection + smooth) / (total + smooth)
    a = torch.ones(k, device=logits.device) if class_weights is None else class_weights.to(logits.device, torch.float32)
    return 1 - (a * dice).sum() / a.sum().clamp_min(torch.finfo(torch.float32).tiny)


def segmentation_loss(
    name: str,
    logits: torch.Tensor,
    target: torch.Tensor,
    weight_map: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """The loss ``name`` (one of :data:`LOSSES`); every one honours ``ignore_index``, the regime's
    ``weight_map`` and ``class_weights``. ``ce+dice`` is the plain sum (as MONAI's DiceCELoss)."""
    args = (logits, target, weight_map, class_weights, ignore_index)
    if name == "ce":
        return pixelwise_loss(*args)
    if name == "dice":
        return dice_loss(*args)
    if name == "focal":
        return focal_loss(*args)
    if name == "ce+dice":
        return pixelwise_loss(*args) + dice_loss(*args)
    raise InputError(f"loss: unknown value '{name}'; use one of {', '.join(LOSSES)}")
