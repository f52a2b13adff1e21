"""What every fcnkit dataset shares: :class:`DatasetInfo`, the sample contract, option checks.

A dataset only has to say how to read sample ``i`` in its own dtype (``raw(i)``); the base class
turns that into the sample every consumer sees, through the one normalisation path
(:func:`fcnkit.data.io.to_model_input`)::

    raw(i) -> (uint8/uint16 image, int mask | int label)
           -> {"image": float32 [C, H, W], "mask": int64 [H, W] | "label": int64 [], "meta": {...}}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from fcnkit.data.io import to_channels, to_model_input, to_unit_float
from fcnkit.errors import InputError, did_you_mean

__all__ = ["DatasetInfo", "ArrayDataset", "SPLITS", "check_split", "resolve_options", "channel_stats"]

SPLITS = ("train", "val", "test")


@dataclass
class DatasetInfo:
    """Everything a model, a checkpoint and a report need to know about a dataset.

    ``mean``/``std`` are per-channel statistics of the TRAINING split after dtype scaling (uint8/255,
    uint16/65535), identical for every split of the same dataset and options; they go into the
    checkpoint so that prediction normalises exactly as training did.
    """

    name: str
    task: str  # "segmentation" | "classification"
    num_classes: int
    in_channels: int
    class_names: list[str]
    palette: list[list[int]] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    #: where the class list came from (e.g. "classes.txt"); empty for built-in datasets
    class_source: str = ""

    def __post_init__(self):
        if not self.palette:  # colours that can be told apart (fcnkit.data.palette)
            from fcnkit.data.palette import distinct_palette

            self.palette = distinct_palette(self.num_classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy (plain lists, ints and floats)."""
        return asdict(self)


class ArrayDataset(torch.utils.data.Dataset):
    """Base class: subclasses set ``info`` and define ``__len__``, ``raw(i)`` and ``_meta(i)``.

    ``raw(i)`` returns ``(image, mask)`` for segmentation (mask: integer ``(H, W)``, 255 = ignore)
    or ``(image, label)`` for classification, the image in its native dtype. Arrays handed out by
    built-in sets may be read-only views of a per-process cache: copy before writing to them.
    """

    info: DatasetInfo

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def raw(self, index: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def _meta(self, index: int) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _index(self, index: int) -> int:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        return i

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self._index(index)
        image, target = self.raw(i)
        info = self.info
        x = to_model_input(image, info.in_channels, info.mean, info.std)
        meta = {"index": i, **self._meta(i)}
        if info.task == "classification":
            return {"image": x, "label": torch.tensor(int(target), dtype=torch.int64), "meta": meta}
        mask = torch.from_numpy(np.array(target, dtype=np.int64, copy=True))
        return {"image": x, "mask": mask, "meta": meta}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.info.name!r}, split={getattr(self, 'split', '?')!r}, n={len(self)})"


def check_split(split: str, dataset: str) -> str:
    """Return ``split`` or raise :class:`InputError` naming the valid splits."""
    if split not in SPLITS:
        raise InputError(
            f"unknown split '{split}' for dataset '{dataset}'{did_you_mean(split, SPLITS)}; use one of: "
            f"{', '.join(SPLITS)}"
        )
    return split


def resolve_options(dataset: str, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Merge ``given`` over ``defaults``; an unknown key is an :class:`InputError` with the valid ones."""
    for key in given:
        if key not in defaults:
            valid = ", ".join(defaults) if defaults else "none"
            raise InputError(
                f"unknown option '{key}' for dataset '{dataset}'{did_you_mean(key, defaults)}; valid options: {valid}"
            )
    return {**defaults, **given}


def channel_stats(images: Iterable[np.ndarray], channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over all pixels of ``images`` after dtype scaling (float64 sums).

    A channel with (near) zero spread gets std 1.0 so normalising never divides by zero.
    """
    total = np.zeros(channels, dtype=np.float64)
    total_sq = np.zeros(channels, dtype=np.float64)
    count = 0
    for arr in images:
        x = to_channels(to_unit_float(np.asarray(arr)), channels).astype(np.float64)
        total += x.sum(axis=(1, 2))
        total_sq += np.square(x).sum(axis=(1, 2))
        count += x.shape[1] * x.shape[2]
    if count == 0:
        raise InputError("no training pixels to compute mean/std from; the training split is empty")
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0)
    std = np.sqrt(var)
    std = np.where(std < 1e-12, 1.0, std)
    return [float(v) for v in mean], [float(v) for v in std]
