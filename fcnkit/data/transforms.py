"""Paired image/mask transforms on the sample dict, driven by an explicit ``torch.Generator``.

Every transform is called as ``t(sample, generator)`` and returns a NEW sample dict
(``{"image": float32 [C, H, W], "mask": int64 [H, W], "meta"}``; classification samples with
``"label"`` are handled too: only the image changes). The same generator state gives the same
result, so augmentation is reproducible. Masks are only ever moved, never interpolated: they
keep int64 and contain only their original values or 255 (ignore, used for padding)::

    RandomHorizontalFlip(p)         flip image and mask together with probability p
    RandomScale(min, max)           one factor s ~ U(min, max): image bilinear, mask NEAREST
    RandomCrop((h, w))              same window in image and mask; smaller inputs are first padded
                                    bottom/right, image with 0 and mask with 255
    Compose([t1, t2, ...])          apply in order with the same generator
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from fcnkit.constants import IGNORE_INDEX
from fcnkit.errors import InputError

__all__ = ["Compose", "RandomHorizontalFlip", "RandomCrop", "RandomScale"]

Sample = dict[str, Any]


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator) -> int:
    """Uniform integer in [0, high] inclusive."""
    return int(torch.randint(0, high + 1, (), generator=generator))


class Compose:
    """Apply ``transforms`` in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, generator: torch.Generator) -> Sample:
        for t in self.transforms:
            sample = t(sample, generator)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomHorizontalFlip:
    """Flip left-right with probability ``p`` (one draw per call, even when ``p`` is 0 or 1)."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise InputError(f"RandomHorizontalFlip: p={p} must be in [0, 1]")
        self.p = p

    def __call__(self, sample: Sample, generator: torch.Generator) -> Sample:
        out = dict(sample)
        if _uniform(generator) < self.p:
            out["image"] = sample["image"].flip(-1)
            if "mask" in sample:
                out["mask"] = sample["mask"].flip(-1)
        return out

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def _pad_to(sample: Sample, h: int, w: int) -> Sample:
    H, W = sample["image"].shape[-2:]
    ph, pw = max(h - H, 0), max(w - W, 0)
    if not (ph or pw):
        return sample
    out = dict(sample)
    out["image"] = F.pad(sample["image"], (0, pw, 0, ph), value=0.0)
    if "mask" in sample:
        out["mask"] = F.pad(sample["mask"], (0, pw, 0, ph), value=IGNORE_INDEX)
    return out


class RandomCrop:
    """Crop a random ``size = (h, w)`` window (an int means square), padding first if smaller."""

    def __init__(self, size):
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        if h < 1 or w < 1:
            raise InputError(f"RandomCrop: size={size!r} must be positive")
        self.size = (int(h), int(w))

    def __call__(self, sample: Sample, generator: torch.Generator) -> Sample:
        h, w = self.size
        sample = _pad_to(sample, h, w)
        H, W = sample["image"].shape[-2:]
        y, x = _randint(H - h, generator), _randint(W - w, generator)
        out = dict(sample)
        out["image"] = sample["image"][..., y : y + h, x : x + w]
        if "mask" in sample:
            out["mask"] = sample["mask"][..., y : y + h, x : x + w]
        return out

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size})"


def _nearest_index(n_out: int, n_in: int) -> torch.Tensor:
    # centre-aligned nearest neighbour (as PIL NEAREST / torch 'nearest-exact'), in integers
    idx = torch.floor((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out)).long()
    return idx.clamp_(0, n_in - 1)


class RandomScale:
    """Rescale by one factor ``s ~ U(min_scale, max_scale)``: image bilinear, mask NEAREST."""

    def __init__(self, min_scale: float = 0.5, max_scale: float = 2.0):
        if not 0 < min_scale <= max_scale:
            raise InputError(f"RandomScale: need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)

    def __call__(self, sample: Sample, generator: torch.Generator) -> Sample:
        s = self.min_scale + (self.max_scale - self.min_scale) * _uniform(generator)
        H, W = sample["image"].shape[-2:]
        h, w = max(1, round(H * s)), max(1, round(W * s))
        out = dict(sample)
        if (h, w) == (H, W):
            return out
        image = sample["image"]
        out["image"] = F.interpolate(image[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0].to(
            image.dtype
        )
        if "mask" in sample:
            rows, cols = _nearest_index(h, H), _nearest_index(w, W)
            out["mask"] = sample["mask"][..., rows[:, None], cols[None, :]]
        return out

    def __repr__(self) -> str:
        return f"RandomScale({self.min_scale}, {self.max_scale})"
