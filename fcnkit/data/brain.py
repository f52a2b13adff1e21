"""``brain-mri``: 2-D slices of the MNI152 2009a T1 template (uint8), background / grey / white matter.

Labels, per voxel, from nilearn's probability maps (uint8, probability = value / 255):
grey matter (1) where ``gm >= 128`` (i.e. p >= 0.5, since 127/255 < 0.5 <= 128/255), white matter
(2) where ``wm >= 128``; where both hold the larger wins (a tie goes to grey matter; in this
template GM + WM never both reach 0.5); everything else (CSF, skull, air) is background (0).

Slices of three orientations, rotated so the top of the image is anterior (axial) or superior
(coronal, sagittal); their sizes differ, so this set exercises variable input sizes::

    axial    (fixed z)  233 x 197      coronal  (fixed y)  189 x 197      sagittal (fixed x)  189 x 233

A slice is kept when at least 2 % of its pixels are GM or WM. The template is exactly left-right
symmetric about x = 98, so sagittal slices come from one hemisphere only (x >= 98): otherwise a
validation slice would be the mirror image of a training slice.

Split, per orientation, along the kept slice indices (block = 5 slices, gap = 6 slices)::

    kept:  |---- train ----| gap | val | gap |---- train ----| gap | test | gap |---- train ----|
                                 ^ centred at 1/3 of the kept range      ^ centred at 2/3

so no training slice is within 6 slices of a val/test slice. ``step`` (default 3) keeps every
step-th of the training slices; val/test keep their whole blocks (5 per orientation, 15 in all).
Caveat: slices of different orientations of one volume intersect along lines, so a coronal
training slice does cross the axial validation block; the split is per orientation, as documented.
mean/std: all pixels of all training-eligible slices (before ``step``), T1 / 255.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fcnkit.data.base import (
    ArrayDataset,
    DatasetInfo,
    channel_stats,
    check_split,
    resolve_options,
)
from fcnkit.data.sources import mni152_volumes
from fcnkit.errors import InputError

__all__ = ["BrainMRIDataset", "slice_plan", "ORIENTATIONS", "BLOCK", "GAP"]

ORIENTATIONS = ("axial", "coronal", "sagittal")
_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}
MIDLINE_X = 98  # plane of left-right symmetry of the template
MIN_BRAIN_FRACTION = 0.02
PROB_THRESHOLD = 128  # uint8 value of p = 0.5, rounded up: p >= 0.5  <=>  value >= 128
BLOCK = 5
GAP = 6
DEFAULT_STEP = 3


@lru_cache(maxsize=1)
def _label_volume() -> np.ndarray:
    _, gm, wm = mni152_volumes()
    labels = np.zeros(gm.shape, dtype=np.uint8)
    labels[(gm >= PROB_THRESHOLD) & (gm >= wm)] = 1
    labels[(wm >= PROB_THRESHOLD) & (wm > gm)] = 2
    labels.setflags(write=False)
    return labels


def _upright(plane: np.ndarray) -> np.ndarray:
    # every plane comes out as (first remaining axis, second remaining axis); both second axes
    # (y for axial, z for coronal and sagittal) point anterior/superior, so rotating by 90 degrees
    # counter-clockwise puts them at the top of the image.
    return np.ascontiguousarray(np.rot90(plane))


def _slice(volume: np.ndarray, orientation: str, k: int) -> np.ndarray:
    return _upright(np.take(volume, k, axis=_AXIS[orientation]))


@lru_cache(maxsize=1)
def slice_plan() -> dict[str, dict[str, list[int]]]:
    """``{orientation: {"train": [...], "val": [...], "test": [...]}}``: slice indices (before ``step``)."""
    labels = _label_volume()
    plan = {}
    for o in ORIENTATIONS:
        axis = _AXIS[o]
        other = tuple(a for a in range(3) if a != axis)
        fraction = (labels > 0).sum(axis=other) / np.prod([labels.shape[a] for a in other])
        kept = np.flatnonzero(fraction >= MIN_BRAIN_FRACTION)
        if o == "sagittal":
            kept = kept[kept >= MIDLINE_X]
        blocks = {}
        for split, where in (("val", 1 / 3), ("test", 2 / 3)):
            centre = int(round(where * (len(kept) - 1)))
            start = centre - BLOCK // 2
            blocks[split] = [int(k) for k in kept[start : start + BLOCK]]
        held = np.array(blocks["val"] + blocks["test"])
        far = np.abs(kept[:, None] - held[None, :]).min(axis=1) > GAP
        plan[o] = {"train": [int(k) for k in kept[far]], **blocks}
    return plan


@lru_cache(maxsize=1)
def _brain_stats() -> tuple[list[float], list[float]]:
    t1 = mni152_volumes()[0]
    plan = slice_plan()
    return channel_stats((_slice(t1, o, k) for o in ORIENTATIONS for k in plan[o]["train"]), 1)


class BrainMRIDataset(ArrayDataset):
    """Segmentation samples ``{"image": float32 [1, H, W], "mask": int64 [H, W], "meta"}``.

    Option ``step`` (default 3): keep every step-th training slice of each orientation.
    ``meta`` has ``orientation`` and ``slice`` (the voxel index along the fixed axis).
    """

    def __init__(self, split: str = "train", **options):
        opts = resolve_options("brain-mri", options, {"step": DEFAULT_STEP})
        self.split = check_split(split, "brain-mri")
        step = opts["step"]
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
            raise InputError(f"brain-mri: step={step!r} must be an integer >= 1 (1 = every training slice)")
        plan = slice_plan()
        self.slices = [
            (o, k)
            for o in ORIENTATIONS
            for k in (plan[o][self.split][:: int(step)] if self.split == "train" else plan[o][self.split])
        ]
        self._t1 = mni152_volumes()[0]
        self._labels = _label_volume()
        mean, std = _brain_stats()
        self.info = DatasetInfo(
            name="brain-mri",
            task="segmentation",
            num_classes=3,
            in_channels=1,
            class_names=["background", "grey matter", "white matter"],
            mean=mean,
            std=std,
        )

    def __len__(self) -> int:
        return len(self.slices)

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        o, k = self.slices[self._index(index)]
        return _slice(self._t1, o, k), _slice(self._labels, o, k)

    def _meta(self, index: int) -> dict:
        o, k = self.slices[index]
        return {"name": f"brain-mri/{o}/{k:03d}", "orientation": o, "slice": k}
