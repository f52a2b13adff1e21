"""Training augmentation on ``torchvision.transforms.v2``: image and mask travel together as
``tv_tensors.Image`` and ``tv_tensors.Mask``, so every geometric transform moves both identically
and masks are only ever resampled NEAREST (they stay integer, holding their labels or 255).

Names, the same in YAML (``augment: [flip, rot90, "crop:128"]``) and on the command line
(``--augment flip,rot90,crop:128``); ``true`` means ``[flip, scale]``::

    scale[:LO-HI]   one factor s ~ U(LO, HI) (default 0.75-1.25): image bilinear, mask nearest
    crop[:N]        random N x N window (default 256); smaller images are padded, image 0, mask 255
    flip            horizontal flip, p = 0.5               (v2.RandomHorizontalFlip)
    vflip           vertical flip, p = 0.5                 (v2.RandomVerticalFlip)
    rot90           rotation by k * 90 degrees, k ~ {0, 1, 2, 3} (exact: no interpolation)
    color           brightness and contrast jitter 0.2     (v2.ColorJitter; the image only)

They run in the order above whatever the order given (a crop after the scale keeps its size).
Images are augmented in [0, 1] (after dtype scaling, before the mean/std normalisation), so colour
jitter means the same for 8- and 16-bit data. Reproducible: :func:`augment` runs the transforms under
``torch.random.fork_rng`` seeded with the given seed, so one seed gives one result, and the global
RNG is left as it was.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF
from torchvision.transforms.v2._utils import query_size

from fcnkit.constants import IGNORE_INDEX
from fcnkit.errors import InputError, did_you_mean

__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_AUGMENTATIONS",
    "check_augmentations",
    "build_augmentation",
    "augment",
    "RandomRot90",
    "RandomScaleFactor",
]

AUGMENTATIONS = ("scale", "crop", "flip", "vflip", "rot90", "color")  # also the order they run in
DEFAULT_AUGMENTATIONS = ("flip", "scale")
DEFAULT_CROP = 256


class RandomRot90(v2.Transform):
    """Rotate by ``k * 90`` degrees, ``k`` uniform in {0, 1, 2, 3}: exact for images and masks."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": int(torch.randint(0, 4, ()))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, torch.Tensor) or params["k"] == 0:
            return inpt
        out = torch.rot90(inpt.as_subclass(torch.Tensor), params["k"], dims=(-2, -1))
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


class RandomScaleFactor(v2.Transform):
    """Resize by one factor ``s ~ U(low, high)`` (v2 resize: bilinear for images, nearest for masks)."""

    def __init__(self, low: float = 0.75, high: float = 1.25):
        super().__init__()
        if not 0 < low <= high:
            raise InputError(f"augment scale:{low}-{high}: need 0 < LO <= HI, e.g. scale:0.5-2")
        self.low, self.high = float(low), float(high)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = query_size(flat_inputs)
        s = self.low + (self.high - self.low) * float(torch.rand(()))
        return {"size": [max(1, round(h * s)), max(1, round(w * s))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return TF.resize(inpt, params["size"], antialias=True)


def _split(name: str) -> tuple[str, str]:
    base, _, arg = str(name).partition(":")
    return base.strip(), arg.strip()


def check_augmentations(value: Any, where: str = "augment") -> list[str]:
    """``true``/``false``, a list, or comma-separated text -> the list of names; InputError with the fix."""
    if value is True:
        return list(DEFAULT_AUGMENTATIONS)
    if value is False or value is None:
        return []
    names = [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)):
        raise InputError(f"{where} must be true, false or a list of {', '.join(AUGMENTATIONS)}, got {value!r}")
    out = []
    for name in names:
        base, arg = _split(name)
        if base not in AUGMENTATIONS:
            raise InputError(
                f"{where}: unknown augmentation {name!r}{did_you_mean(base, AUGMENTATIONS)}; "
                f"use true, false or a list of {', '.join(AUGMENTATIONS)} (e.g. flip,rot90,crop:128)"
            )
        _build_one(base, arg, where)  # a bad argument fails now, not in a data loader worker
        out.append(f"{base}:{arg}" if arg else base)
    return out


def _build_one(base: str, arg: str, where: str):
    try:
        if base == "scale":
            low, high = (float(v) for v in arg.split("-")) if arg else (0.75, 1.25)
            return RandomScaleFactor(low, high)
        if base == "crop":
            size = int(arg) if arg else DEFAULT_CROP
            if size < 1:
                raise ValueError
            fill = {tv_tensors.Image: 0.0, tv_tensors.Mask: IGNORE_INDEX}
            return v2.RandomCrop(size, pad_if_needed=True, fill=fill)
    except ValueError:
        example = "scale:0.5-2" if base == "scale" else "crop:128"
        raise InputError(f"{where}: {base}:{arg} is not valid; e.g. {example}") from None
    if arg:
        raise InputError(f"{where}: {base} takes no argument, got {base}:{arg}")
    return {
        "flip": lambda: v2.RandomHorizontalFlip(0.5),
        "vflip": lambda: v2.RandomVerticalFlip(0.5),
        "rot90": RandomRot90,
        "color": lambda: v2.ColorJitter(brightness=0.2, contrast=0.2),
    }[base]()


def build_augmentation(names) -> v2.Compose:
    """A ``v2.Compose`` of the named augmentations, in the canonical order (module docstring)."""
    parsed = [_split(n) for n in check_augmentations(names)]
    parsed.sort(key=lambda item: AUGMENTATIONS.index(item[0]))
    return v2.Compose([_build_one(base, arg, "augment") for base, arg in parsed])


def augment(transform: v2.Compose, image: torch.Tensor, mask: torch.Tensor | None, seed: int):
    """``(image, mask)`` transformed together with the RNG seeded by ``seed``; ``image`` float [C, H, W]
    in [0, 1], ``mask`` int64 [H, W] or None (classification). Returns plain tensors."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if mask is None:
            return transform(tv_tensors.Image(image)).as_subclass(torch.Tensor), None
        out_image, out_mask = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
    return out_image.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor)
