"""What ``fcnkit predict`` checks and adapts before an image meets the model (issue 11).

Intensity: training records the input's dtype and range (:func:`input_stats`, in the checkpoint's
``input``); at predict each image's range after dtype scaling is compared with it::

    train: uint8 PNGs, unit range p1..p99 = 0.05..0.80
    input: raw uint16 TIFF (12-bit camera), unit range 0.001..0.06    -> far: refused, unless
        --intensity match   map the input's p1..p99 onto the training's p1..p99 (linear), or
        --force             predict anyway (a warning says why the result may be garbage)

Size: ``scale`` (a factor) or ``resize`` (``HxW``, or ``train`` = the training images' median size)
resamples the image before the model (bilinear) and the labels back to the input grid (nearest).
Inputs: files, folders (``recursive`` for sub-folders) and glob patterns (``**`` allowed), so a
quoted glob works where the shell does not expand it.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from fcnkit.errors import InputError, MissingFileError

__all__ = [
    "expand_inputs",
    "input_stats",
    "image_stats",
    "intensity_check",
    "MatchedSource",
    "resized_source",
    "target_size",
    "FAR_RATIO",
    "InputSettings",
    "input_settings",
]

#: the input's p99 (after dtype scaling) this many times below/above the training's is "far"
FAR_RATIO = 4.0
_SAMPLE_PIXELS = 1 << 20


class InputSettings(NamedTuple):
    """What a checkpoint says about its input and output: channels, normalisation, class colours."""

    channels: int
    mean: list
    std: list
    palette: list


def input_settings(config: dict) -> InputSettings:
    """The :class:`InputSettings` of a checkpoint's config; defaults where it is silent: 3 channels,
    no normalisation (mean 0, std 1), the VOC palette of ``num_classes`` (default 21)."""
    from fcnkit.data.io import voc_palette

    norm = config.get("normalization") or {}
    channels = int(config.get("in_channels", 3))
    mean, std = norm.get("mean", [0.0] * channels), norm.get("std", [1.0] * channels)
    palette = config.get("palette") or voc_palette(int(config.get("num_classes", 21)))
    return InputSettings(channels, mean, std, palette)


def expand_inputs(inputs, recursive: bool = False) -> list[Path]:
    """Files as given; folders expand to the images inside them (``recursive``: also in sub-folders);
    glob patterns (``*``, ``?``, ``[``, ``**``) to the images they match. Sorted, no duplicates."""
    from fcnkit.data.io import IMAGE_SUFFIXES

    def images(paths):
        return sorted(
            p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = images(p.rglob("*") if recursive else p.iterdir())
            if not found:
                where = (
                    "this folder or its sub-folders" if recursive else "this folder (--recursive searches sub-folders)"
                )
                raise MissingFileError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) in {where}; point at image files")
            out += found
        elif p.is_file():
            out.append(p)
        elif glob.has_magic(str(item)):
            found = images(Path(f) for f in glob.glob(os.path.expanduser(str(item)), recursive=True))
            if not found:
                raise MissingFileError(f"{item}: no image matches this pattern; check it (** matches sub-folders)")
            out += found
        else:
            raise MissingFileError(f"{p}: input image not found; check the path")
    unique = list(dict.fromkeys(out))
    stems: dict[str, Path] = {}
    for p in unique:
        if p.stem in stems:
            raise InputError(
                f"{p}: same name as {stems[p.stem]}, their outputs would collide; "
                "predict them into different --out folders"
            )
        stems[p.stem] = p
    return unique


def _sample(array: np.ndarray) -> np.ndarray:
    h, w = array.shape[:2]
    step = max(1, int(np.sqrt(h * w / _SAMPLE_PIXELS)))
    return np.asarray(array[::step, ::step])


def image_stats(array: np.ndarray) -> dict[str, Any]:
    """``{"dtype", "p1", "p99"}`` of one raw image (p1/p99 after dtype scaling, on a strided sample)."""
    from fcnkit.data.io import to_unit_float

    unit = to_unit_float(_sample(array))
    p1, p99 = np.percentile(unit, [1, 99])
    return {"dtype": str(array.dtype), "p1": float(p1), "p99": float(p99)}


def input_stats(dataset, max_images: int = 20) -> dict[str, Any] | None:
    """What training saw: ``{"dtype", "p1", "p99", "size": [median H, median W], "images"}`` over the
    first ``max_images`` raw training images (None for a dataset without ``raw``)."""
    if not hasattr(dataset, "raw") or len(dataset) == 0:
        return None
    stats, sizes = [], []
    for i in range(min(max_images, len(dataset))):
        image = np.asarray(dataset.raw(i)[0])
        stats.append(image_stats(image))
        sizes.append(image.shape[:2])
    dtypes = [s["dtype"] for s in stats]
    return {
        "dtype": max(set(dtypes), key=dtypes.count),
        "p1": float(np.median([s["p1"] for s in stats])),
        "p99": float(np.median([s["p99"] for s in stats])),
        "size": [int(np.median([s[0] for s in sizes])), int(np.median([s[1] for s in sizes]))],
        "images": len(stats),
    }


def intensity_check(
    name: str, array: np.ndarray, trained: dict | None, mode: str = "check", force: bool = False
) -> tuple[tuple[float, float] | None, str | None]:
    """``(affine, warning)`` for one input: ``affine = (a, b)`` maps its unit values ``u -> a u + b``
    (``mode="match"``), else None; ``warning`` a line to print, or None. A far range (module docstring)
    is an InputError unless ``force`` or ``mode="match"``."""
    if not trained or mode == "off":
        return None, None
    have = image_stats(array)
    far = have["p99"] * FAR_RATIO < trained["p99"] or have["p99"] > trained["p99"] * FAR_RATIO
    what = (
        f"{have['dtype']} values at {have['p1']:.3g}..{have['p99']:.3g} of full scale, but the model was "
        f"trained on {trained['dtype']} images at {trained['p1']:.3g}..{trained['p99']:.3g} (p1..p99)"
    )
    if mode == "match":
        span = max(have["p99"] - have["p1"], 1e-12)
        a = (trained["p99"] - trained["p1"]) / span
        note = f"{name}: {what}; mapped onto the training range (--intensity match)"
        return (a, trained["p1"] - a * have["p1"]), note
    if far and not force:
        raise InputError(
            f"{name}: {what}; predictions would be garbage. Pass --intensity match to map its range "
            "onto the training range, or --force to predict anyway"
        )
    if far:
        return None, f"{name}: {what}; predicting anyway (--force), expect poor results"
    if have["dtype"] != trained["dtype"]:
        return None, f"{name}: {have['dtype']} image, the model was trained on {trained['dtype']} (range similar)"
    return None, None


class MatchedSource:
    """A lazy source like :class:`fcnkit.inference.sources.ArraySource`, with the unit values mapped
    ``u -> a u + b`` before the mean/std normalisation."""

    def __init__(self, array: np.ndarray, channels: int, mean, std, affine: tuple[float, float]):
        self.array, self.channels, self.mean, self.std, self.affine = array, int(channels), mean, std, affine
        self.shape = (self.channels, int(array.shape[0]), int(array.shape[1]))

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
        from fcnkit.data.io import to_model_input, to_unit_float

        a, b = self.affine
        unit = to_unit_float(np.asarray(self.array[rows[0] : rows[1], cols[0] : cols[1]]))
        unit = unit * np.float32(a) + np.float32(b)
        return to_model_input(unit.astype(np.float32), self.channels, self.mean, self.std)


def target_size(size: tuple[int, int], scale: float | None, resize, trained: dict | None) -> tuple[int, int] | None:
    """The size the model sees, or None for the input's own: ``scale`` a factor, ``resize`` ``(h, w)``
    or ``"train"`` (the training images' median size, from the checkpoint)."""
    if scale is not None and resize is not None:
        raise InputError("--scale and --resize both given; use one")
    if scale is not None:
        if not scale > 0:
            raise InputError(f"--scale {scale}: must be a positive factor, e.g. 0.5")
        return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    if resize == "train":
        if not trained or not trained.get("size"):
            raise InputError("--resize train: the checkpoint does not record its training size; give --resize HxW")
        return int(trained["size"][0]), int(trained["size"][1])
    if resize is not None:
        h, w = resize
        return int(h), int(w)
    return None


def resized_source(source, size: tuple[int, int]):
    """The whole (normalised) image resampled bilinear (antialiased) to ``size``, as a tensor source."""
    from fcnkit.inference.sources import TensorSource

    _, h, w = source.shape
    x = source.read((0, h), (0, w))[None].float()
    resized = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return TensorSource(resized[0])
