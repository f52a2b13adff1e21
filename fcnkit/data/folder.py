"""User datasets: a ``folder`` of images/ + masks/, or a PASCAL VOC folder (see :mod:`.layouts`).

What a folder dataset learns from its files, all from the TRAINING split so every split agrees:

- ``num_classes``: the lines of ``classes.txt`` (VOC also: CVAT's ``labelmap.txt``), else the option
  ``num_classes``, else the largest label over the training masks (ignoring 255) + 1. Names come from
  the file, else ``class_0 ...``, except a VOC folder with exactly 21 classes: PASCAL's names.
  ``info.class_source`` says which of these it was (``fcnkit train`` prints it).
- options ``val_fraction``, ``test_fraction``, ``split_seed``: a seeded split (:mod:`.layouts`).
- ``in_channels``: 1 if the first training image is grey (L, I;16, grey TIFF), else 3.
- ``mean``/``std``: per channel over the training images after dtype scaling (at most the first
  :data:`MAX_STAT_IMAGES` in sorted order, so a large set does not stall on its first use).

These are computed on first use of ``info`` (or of a sample) and cached per process, keyed by the
training files and their modification times, so an edited dataset is re-read.

VOC has no public test masks: ``split="test"`` needs ``ImageSets/Segmentation/test.txt`` with
masks present; otherwise it is an :class:`InputError` that says to use ``val``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from fcnkit.constants import IGNORE_INDEX
from fcnkit.data.base import (
    ArrayDataset,
    DatasetInfo,
    channel_stats,
    check_split,
    resolve_options,
)
from fcnkit.data.io import read_image, read_mask, voc_palette
from fcnkit.data.layouts import VOC_CLASSES, Layout, Pair, scan_layout
from fcnkit.data.palette import distinct_palette
from fcnkit.errors import InputError

__all__ = ["FolderDataset", "MAX_STAT_IMAGES", "infer_num_classes", "image_channels"]

MAX_STAT_IMAGES = 1000


def image_channels(arr: np.ndarray) -> int:
    """1 for a grey image (``(H, W)``, one channel, or grey + alpha), else 3."""
    return 1 if arr.ndim == 2 or arr.shape[-1] in (1, 2) else 3


def infer_num_classes(mask_paths, root: str | None = None) -> int:
    """Largest label other than 255 over the masks, + 1; at most ``MAX_INFERRED_CLASSES``, else an
    InputError naming the mask (a 16-bit mask holding 1000 is a wrong file, not 1001 classes).

    With ``root`` the labels of each mask come from the dataset's file cache (:mod:`.validate`).
    """
    from fcnkit.data.validate import MAX_INFERRED_CLASSES, FileFacts

    facts = FileFacts(root) if root is not None else None
    top, where = -1, None
    try:
        for p in mask_paths:
            labels = np.asarray(facts.mask(Path(p))["labels"] if facts else np.unique(read_mask(p)))
            labels = labels[labels != IGNORE_INDEX]
            if labels.size and int(labels.max()) > top:
                top, where = int(labels.max()), p
    finally:
        if facts is not None:
            facts.save()
    if top + 1 > MAX_INFERRED_CLASSES:
        raise InputError(
            f"{where}: holds label {top}, so 'largest label + 1' would make {top + 1} classes "
            f"(more than {MAX_INFERRED_CLASSES}); fix the mask, or if the classes are real list them "
            "in classes.txt (or pass --data-option num_classes=N)"
        )
    return top + 1


def _read_classes(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.name == "labelmap.txt":  # CVAT/Datumaro: "# label:color_rgb:parts:actions", "name:r,g,b::"
        lines = [line.split(":")[0] for line in lines if not line.startswith("#")]
    names = lines
    if len(names) < 2:
        raise InputError(
            f"{path}: lists {len(names)} class name(s); write one name per line, background first (at least 2)"
        )
    return names


@lru_cache(maxsize=32)
def _folder_info(
    root: str, kind: str, train: tuple[tuple[str, str, int], ...], classes_file: str | None, num_classes: int | None
) -> DatasetInfo:
    images = [Path(img) for img, _, _ in train]
    masks = [Path(msk) for _, msk, _ in train]
    if not images:
        raise InputError(
            f"{root}: the training split is empty, so classes and mean/std cannot be derived; add training images"
        )
    if classes_file:
        names, source = _read_classes(Path(classes_file)), Path(classes_file).name
    else:
        k = num_classes if num_classes is not None else infer_num_classes(masks, root)
        source = "num_classes" if num_classes is not None else f"the labels in the training masks (0..{k - 1})"
        if k < 2:
            raise InputError(
                f"{root}: the training masks hold only label 0 (255 = ignore); if 255 marks foreground, "
                "save it as 1, or list the classes in classes.txt"
            )
        # PASCAL's names only for PASCAL's 21 classes: a 2-class VOC export is not "aeroplane"
        names = list(VOC_CLASSES) if kind == "voc" and k == len(VOC_CLASSES) else [f"class_{i}" for i in range(k)]
    in_channels = 3 if kind == "voc" else image_channels(read_image(images[0]))
    if num_classes is not None and num_classes != len(names):
        raise InputError(
            f"{root}: num_classes={num_classes} but {source} lists {len(names)} names; drop one of the two"
        )
    mean, std = channel_stats((read_image(p) for p in images[:MAX_STAT_IMAGES]), in_channels)
    return DatasetInfo(
        name=root,
        task="segmentation",
        num_classes=len(names),
        in_channels=in_channels,
        class_names=names,
        mean=mean,
        # PASCAL's colours for PASCAL's classes (its masks use them), else colours that can be told apart
        palette=voc_palette(len(names)) if names == list(VOC_CLASSES) else distinct_palette(len(names)),
        std=std,
        class_source=source,
    )


class FolderDataset(ArrayDataset):
    """Segmentation samples from a user folder (``folder`` or ``voc`` layout).

    Option ``num_classes`` overrides the inferred number of classes; ``val_fraction``,
    ``test_fraction`` and ``split_seed`` split a folder without lists by seeded fractions.
    ``meta`` has ``name`` (the stem), ``image_path`` and ``mask_path``.
    """

    def __init__(self, root, split: str = "train", **options):
        valid = {"num_classes": None, "val_fraction": None, "test_fraction": None, "split_seed": 0}
        opts = resolve_options(str(root), options, valid)
        for key in ("val_fraction", "test_fraction"):
            value = opts[key]
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1
            ):
                raise InputError(f"{root}: {key}={value!r} must be a number in [0, 1), e.g. 0.2")
        self.layout: Layout = scan_layout(
            root, opts["val_fraction"], opts["test_fraction"], int(opts["split_seed"] or 0)
        )
        root_name = str(self.layout.root)
        self.split = check_split(split, root_name)
        self._num_classes = opts.get("num_classes")
        if self._num_classes is not None and (
            isinstance(self._num_classes, bool) or not isinstance(self._num_classes, int) or self._num_classes < 2
        ):
            raise InputError(f"{root_name}: num_classes={self._num_classes!r} must be an integer >= 2")
        layout = self.layout
        if layout.kind == "unknown":
            p = layout.problems[0]
            raise InputError(f"{p.file}: {p.message}")
        self.pairs: list[Pair] = layout.splits.get(self.split, [])
        self._refuse_problems()
        if not self.pairs:
            if layout.kind == "voc" and self.split == "test":
                raise InputError(
                    f"{layout.describe('test')}: VOC has no test masks; use split='val' (or add test.txt with masks)"
                )
            raise InputError(
                f"{layout.describe(self.split)}: split '{self.split}' of {layout.root} is empty; add images to it, "
                "or list stems in train.txt/val.txt/test.txt (or use train/ val/ test/ subfolders)"
            )
        self._info: DatasetInfo | None = None

    def _refuse_problems(self) -> None:
        # a pair problem in ANY split is refused: the loader must not silently train on a subset
        problems = self.layout.problems
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise InputError(f"{problems[0]}{more}; run `fcnkit data check {self.layout.root}` to list every problem")

    @property  # computed lazily where the base class has a plain attribute
    def info(self) -> DatasetInfo:  # type: ignore[override]
        """Dataset description; computed from the training split on first use, then cached."""
        if self._info is None:
            train = tuple(
                (str(p.image), str(p.mask), p.image.stat().st_mtime_ns ^ p.mask.stat().st_mtime_ns)
                for p in self.layout.splits.get("train", [])
            )
            classes = str(self.layout.classes_file) if self.layout.classes_file else None
            self._info = _folder_info(str(self.layout.root), self.layout.kind, train, classes, self._num_classes)
        return self._info

    def __len__(self) -> int:
        return len(self.pairs)

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        pair = self.pairs[self._index(index)]
        image, mask = read_image(pair.image), read_mask(pair.mask)
        if image.dtype.kind == "f" and not np.isfinite(image).all():  # evaluation reads here, unvalidated
            raise InputError(
                f"{pair.image}: the image holds NaN or inf pixels; replace them (e.g. numpy.nan_to_num) "
                "and save it again"
            )
        if image.shape[:2] != mask.shape:
            raise InputError(
                f"{pair.mask}: mask is {mask.shape[0]}x{mask.shape[1]} but its image is "
                f"{image.shape[0]}x{image.shape[1]}; resize the mask with NEAREST to the image size"
            )
        k = self.info.num_classes
        bad = (mask < 0) | ((mask >= k) & (mask != IGNORE_INDEX))
        if bad.any():
            values = sorted(set(np.unique(mask[bad]).tolist()))[:5]
            raise InputError(
                f"{pair.mask}: labels {values} are outside 0..{k - 1} (255 = ignore); fix the mask or raise "
                "num_classes / classes.txt"
            )
        return image, mask

    def _meta(self, index: int) -> dict:
        pair = self.pairs[index]
        return {"name": pair.stem, "image_path": str(pair.image), "mask_path": str(pair.mask)}
