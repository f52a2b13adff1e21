"""Datasets for fcnkit: built-in real data (no downloads), user folders, transforms, checks.

load_dataset(name_or_path, split="train", **options) -> Dataset
    built-ins: digits, digit-canvas, nuclei, brain-mri (see ``list_datasets()``); any other
    argument is a folder (images/ + masks/, or PASCAL VOC)
sample = ds[i]   {"image": float32 [C, H, W] normalised, "mask": int64 [H, W] (255 = ignore)
                  | "label": int64 [], "meta": {"name", "index", ...}}
ds.info          DatasetInfo(name, task, num_classes, in_channels, class_names, palette, mean, std)
ds.raw(i)        (image in its native dtype, mask | label)
pad_collate      batches of mixed sizes (pad 0 / 255)
check_dataset    every problem of a dataset folder, as Problem(file, message)
"""

from fcnkit.data.base import DatasetInfo
from fcnkit.data.checks import Problem, check_dataset
from fcnkit.data.collate import pad_collate
from fcnkit.data.registry import list_datasets, load_dataset
from fcnkit.data.transforms import (
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
)

__all__ = [
    "load_dataset",
    "list_datasets",
    "DatasetInfo",
    "pad_collate",
    "check_dataset",
    "Problem",
    "Compose",
    "RandomHorizontalFlip",
    "RandomCrop",
    "RandomScale",
]
