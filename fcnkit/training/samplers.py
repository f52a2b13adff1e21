"""Patch samplers for patchwise training: where the N x N crops of an image come from (core: torch).

A patch is an ``N x N`` crop of the image and the SAME crop of its mask, "centred" on a pixel
``(cy, cx)`` (for even ``N`` the centre is the lower-right of the middle four, i.e. local index
``(N - 1) // 2``); beyond the image border the image is padded with 0 and the mask with 255, so
padding never enters the loss::

        top = cy - (N - 1) // 2
        +--------------------- image -------------------+
        |      +------ N ------+                        |
        |      |       x       |  x = (cy, cx)          |      crop(image) and crop(mask) are
        |      +---------------+                        |      cut by the same slice, pixel for
        |                                         +-----|---+  pixel
        +-----------------------------------------|-----+ 0 |  <- image 0, mask 255 outside
                                                  +---------+

Samplers (each returns centres ``[n, 2]`` as int64 ``(cy, cx)``):
  - ``uniform``: every pixel of the image equally likely as a centre.
  - ``class-balanced``: a class drawn uniformly among the classes present in the mask (255
    excluded), then a pixel of that class uniformly: each present class is the centre class of
    ``1 / (number present)`` of the patches in expectation, however rare it is.
  - ``grid``: centres ``(stride - 1) // 2 + k * stride`` for ``k < ceil(size / stride)``: with
    ``stride = N`` (default) non-overlapping tiles covering the image, the last ones padded;
    their count depends on the image size.

:class:`PatchDataset` turns a dataset of whole images into one of patch stacks (one item = the
patches of one image) and :func:`patch_collate` concatenates them, so a batch of ``B`` images
gives ``B * patches_per_image`` independent forward passes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from fcnkit.constants import IGNORE_INDEX
from fcnkit.errors import InputError, did_you_mean

__all__ = [
    "SAMPLERS",
    "crop_patches",
    "uniform_centres",
    "class_balanced_centres",
    "grid_centres",
    "PatchDataset",
    "patch_collate",
]

SAMPLERS = ("uniform", "class-balanced", "grid")


def crop_patches(image: torch.Tensor, mask: torch.Tensor | None, centres: torch.Tensor, size: int):
    """Crops ``[n, C, size, size]`` of ``image [C, H, W]`` (and ``[n, size, size]`` of ``mask [H, W]``)
    centred at ``centres [n, 2]``; outside the image: image 0, mask 255."""
    if size < 1:
        raise InputError(f"patch_size must be >= 1, got {size}; use e.g. patch_size: rf")
    before, after = (size - 1) // 2, size // 2
    h, w = image.shape[-2:]
    pad = (0, 0, 0, 0)  # left, right, top, bottom: once, by the largest overhang; then crops are slices
    if len(centres):
        (y0, x0), (y1, x1) = centres.min(0).values.tolist(), centres.max(0).values.tolist()
        pad = (max(0, before - x0), max(0, x1 + after - (w - 1)), max(0, before - y0), max(0, y1 + after - (h - 1)))
    padded = F.pad(image, pad, value=0.0)
    padded_mask = None if mask is None else F.pad(mask, pad, value=IGNORE_INDEX)
    images, masks = [], []
    for cy, cx in centres.tolist():
        top, left = cy - before + pad[2], cx - before + pad[0]
        images.append(padded[:, top : top + size, left : left + size])
        if padded_mask is not None:
            masks.append(padded_mask[top : top + size, left : left + size])
    out_images = torch.stack(images) if images else image.new_zeros((0, image.shape[0], size, size))
    if mask is None:
        return out_images, None
    return out_images, torch.stack(masks) if masks else mask.new_full((0, size, size), IGNORE_INDEX)


def uniform_centres(shape: tuple[int, int], n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` centres drawn uniformly over the ``H x W`` pixels."""
    h, w = shape
    flat = torch.randint(0, h * w, (n,), generator=generator)
    return torch.stack([flat // w, flat % w], dim=1)


def class_balanced_centres(mask: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` centres: a class uniform among those present in ``mask``, then one of its pixels.

    A mask with no labelled pixel (all 255) falls back to :func:`uniform_centres`.
    """
    labelled = mask[mask != IGNORE_INDEX]
    classes = torch.unique(labelled)
    if classes.numel() == 0:
        return uniform_centres((int(mask.shape[0]), int(mask.shape[1])), n, generator)
    picks = torch.randint(0, classes.numel(), (n,), generator=generator)
    w = mask.shape[1]
    centres = torch.empty((n, 2), dtype=torch.int64)
    for k, c in enumerate(classes.tolist()):
        chosen = (picks == k).nonzero().flatten()
        if chosen.numel() == 0:
            continue
        pixels = (mask.flatten() == c).nonzero().flatten()
        flat = pixels[torch.randint(0, pixels.numel(), (chosen.numel(),), generator=generator)]
        centres[chosen, 0], centres[chosen, 1] = flat // w, flat % w
    return centres


def grid_centres(shape: tuple[int, int], stride: int) -> torch.Tensor:
    """Centres ``(stride - 1) // 2 + k * stride``, ``k < ceil(size / stride)`` (rows, then columns).

    Tile ``k`` of a patch of size ``stride`` starts at pixel ``k * stride``, so these patches cover
    the image; the last row/column may be centred beyond the border (the crop pads it).
    """
    if stride < 1:
        raise InputError(f"grid stride must be >= 1, got {stride}; use e.g. stride: 16")
    ys = torch.arange(-(-shape[0] // stride)) * stride + (stride - 1) // 2
    xs = torch.arange(-(-shape[1] // stride)) * stride + (stride - 1) // 2
    return torch.cartesian_prod(ys, xs).reshape(-1, 2)


class PatchDataset(torch.utils.data.Dataset):
    """Item ``i`` = the patches of image ``i`` of ``dataset``: ``{"image": [n, C, N, N], "mask":
    [n, N, N], "meta": [{..., "patch": [cy, cx]} per patch]}`` (batch with :func:`patch_collate`).

    ``sampler``: ``uniform`` | ``class-balanced`` (``patches_per_image`` random centres) or ``grid``
    (every ``stride``-th centre; ``patches_per_image`` unused). Random centres come from a
    generator seeded from torch's global RNG per item (seeded by ``seed_everything`` and reseeded
    per DataLoader worker): runs are reproducible, epochs differ; ``generator`` fixes it instead.
    """

    def __init__(
        self,
        dataset,
        *,
        sampler: str = "uniform",
        patch_size: int,
        patches_per_image: int = 4,
        stride: int | None = None,
        generator: torch.Generator | None = None,
    ):
        if sampler not in SAMPLERS:
            raise InputError(
                f"patch sampler '{sampler}' is not known{did_you_mean(sampler, SAMPLERS)}; use one of "
                f"{', '.join(SAMPLERS)}"
            )
        if patches_per_image < 1:
            raise InputError(f"patches_per_image must be >= 1, got {patches_per_image}; raise it")
        self.dataset, self.sampler, self.patch_size = dataset, sampler, int(patch_size)
        self.patches_per_image = int(patches_per_image)
        self.stride = int(stride or patch_size)
        self.generator = generator
        self.info = getattr(dataset, "info", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def centres(self, mask: torch.Tensor) -> torch.Tensor:
        """The centres this dataset's sampler picks for ``mask [H, W]``."""
        if self.sampler == "grid":
            return grid_centres((int(mask.shape[0]), int(mask.shape[1])), self.stride)
        generator = self.generator or torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
        if self.sampler == "uniform":
            return uniform_centres((int(mask.shape[0]), int(mask.shape[1])), self.patches_per_image, generator)
        return class_balanced_centres(mask, self.patches_per_image, generator)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.dataset[i]
        centres = self.centres(sample["mask"])
        images, masks = crop_patches(sample["image"], sample["mask"], centres, self.patch_size)
        meta = dict(sample.get("meta") or {})
        return {"image": images, "mask": masks, "meta": [dict(meta, patch=c) for c in centres.tolist()]}


def patch_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate the patch stacks of several images into one batch of independent items.

    ``num_images`` keeps the number of source images (the per-step log counts both).
    """
    if not batch:
        raise ValueError("patch_collate got an empty batch")
    return {
        "image": torch.cat([b["image"] for b in batch]),
        "mask": torch.cat([b["mask"] for b in batch]),
        "meta": [m for b in batch for m in b["meta"]],
        "num_images": len(batch),
    }
