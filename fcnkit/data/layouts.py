"""Finding the image/mask pairs of a user's dataset folder (no pixel is read here).

Two layouts are recognised:

``folder``::

    ROOT/images/<stem>.<png|jpg|tif|...>      ROOT/masks/<stem>.<png|tif|...>  (index masks, 255 = ignore)
    ROOT/classes.txt                           optional, one class name per line
    splits, first match wins:
      1. ROOT/train.txt, val.txt, test.txt     stems, one per line
      2. ROOT/train/{images,masks}/, ROOT/val/{images,masks}/, ROOT/test/{images,masks}/
      3. otherwise a split by hashing the stem: sha1(stem) % 100 < 80 -> train, < 90 -> val,
         else test (stable when files are added or removed: no image ever changes split)

``voc`` (PASCAL VOC, also found under ROOT/VOC2012 or ROOT/VOCdevkit/VOC2012)::

    JPEGImages/<stem>.jpg   SegmentationClass/<stem>.png   ImageSets/Segmentation/{train,val}.txt
    classes.txt or labelmap.txt (CVAT/Datumaro export)   optional: the dataset's own class names

Split fractions (``val_fraction``, ``test_fraction``, ``split_seed``) replace the hash split of a
folder without lists or subfolders by a seeded random split of the sorted stems (see
:func:`fraction_split`); a split too small to score is named by :func:`small_split_warnings`.

:func:`scan_layout` returns every pair per split plus the problems seen while listing (image
without mask, mask without image, duplicate stems, list entries without files), so that
:mod:`fcnkit.data.checks` can report all of them and the loader can refuse with the first one.
"""

from __future__ import annotations

import errno
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from fcnkit.data.base import SPLITS
from fcnkit.data.io import IMAGE_SUFFIXES
from fcnkit.errors import InputError, MissingFileError

__all__ = [
    "Pair",
    "Problem",
    "Layout",
    "scan_layout",
    "hash_split",
    "fraction_split",
    "small_split_warnings",
    "MASK_SUFFIXES",
    "VOC_CLASSES",
    "MIN_SCORED_IMAGES",
]

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".gif")
HASH_FRACTIONS = (80, 90)  # cumulative percent: train < 80 <= val < 90 <= test
#: a validation/test split with fewer images gives scores too noisy to compare runs by
MIN_SCORED_IMAGES = 5
CLASS_FILES = ("classes.txt", "labelmap.txt")  # labelmap.txt: CVAT/Datumaro VOC exports ("name:r,g,b::")
VOC_CLASSES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]


@dataclass(frozen=True)
class Problem:
    """One problem with a dataset: the file at fault and what is wrong with it (plus the fix)."""

    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass(frozen=True)
class Pair:
    stem: str
    image: Path
    mask: Path


@dataclass
class Layout:
    """The pairs of each split of a dataset folder, and the problems found while pairing."""

    kind: str  # "folder" | "voc"
    root: Path
    split_source: str  # "lists" | "subfolders" | "hash" | "voc"
    splits: dict[str, list[Pair]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    classes_file: Path | None = None

    def describe(self, split: str) -> str:
        """Where ``split`` comes from, for error messages."""
        if self.split_source == "lists":
            return f"{self.root / (split + '.txt')}"
        if self.split_source == "subfolders":
            return f"{self.root / split}/"
        if self.split_source == "voc":
            return f"{self.root / 'ImageSets' / 'Segmentation' / (split + '.txt')}"
        if self.split_source == "fractions":
            return f"the seeded fraction split of {self.root / 'images'}/"
        return f"the hash split (80/10/10 by stem) of {self.root / 'images'}/"


def hash_split(stem: str) -> str:
    """The split of ``stem`` in the hash layout: sha1 of the UTF-8 stem, mod 100, 80/10/10."""
    bucket = int(hashlib.sha1(stem.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "train" if bucket < HASH_FRACTIONS[0] else "val" if bucket < HASH_FRACTIONS[1] else "test"


def fraction_split(stems, val_fraction: float, test_fraction: float, seed: int = 0) -> dict[str, str]:
    """``{stem: split}``: the sorted stems shuffled with ``random.Random(seed)``; the first
    ``round(val_fraction * n)`` go to val, the next ``round(test_fraction * n)`` to test (at least
    one each when its fraction is > 0 and there are enough stems), the rest to train."""
    import random

    order = sorted(stems)
    random.Random(seed).shuffle(order)
    n = len(order)
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 and n > 1 else 0
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 and n > 2 else 0
    if n_val + n_test >= n:
        raise InputError(
            f"val_fraction {val_fraction} + test_fraction {test_fraction} leave no training image "
            f"out of {n}; lower the fractions"
        )
    return {stem: "val" if i < n_val else "test" if i < n_val + n_test else "train" for i, stem in enumerate(order)}


def small_split_warnings(layout: Layout, splits=("val", "test")) -> list[str]:
    """One line per split with 1..MIN_SCORED_IMAGES-1 images: its scores are noise, and the fix."""
    out = []
    for split in splits:
        n = len(layout.splits.get(split, []))
        if 0 < n < MIN_SCORED_IMAGES:
            out.append(
                f"{layout.describe(split)}: the {split} split has only {n} image{'s' if n != 1 else ''}, too few "
                f"to score (fewer than {MIN_SCORED_IMAGES}); set --val-fraction/--test-fraction (e.g. 0.2) "
                f"or list more stems in {split}.txt"
            )
    return out


def _class_file(*folders: Path) -> Path | None:
    for folder in folders:
        for name in CLASS_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def _files(folder: Path, suffixes, problems: list[Problem] | None = None) -> dict[str, list[Path]]:
    by_stem: dict[str, list[Path]] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".") or p.suffix.lower() not in suffixes:
                continue
            if p.is_file():
                by_stem.setdefault(p.stem, []).append(p)
            elif p.is_symlink() and problems is not None:  # not silently skipped: the user meant a file
                try:
                    p.resolve(strict=True)
                    why = "does not point at a file"
                except RuntimeError:
                    why = "is a symlink loop"
                except OSError as exc:  # Python >= 3.13 reports a loop as ELOOP
                    why = "is a symlink loop" if exc.errno == errno.ELOOP else "is a broken symlink (no such target)"
                problems.append(Problem(str(p), f"{why}; point it at the real file or remove it"))
    return by_stem


def _pair_folder(images: Path, masks: Path, problems: list[Problem]) -> dict[str, Pair]:
    imgs = _files(images, IMAGE_SUFFIXES, problems)
    msks = _files(masks, IMAGE_SUFFIXES, problems)  # listed with every suffix so a JPEG mask can be named
    pairs = {}
    for stem, paths in imgs.items():
        if len(paths) > 1:
            problems.append(
                Problem(str(paths[1]), f"two images with stem '{stem}' ({paths[0].name}, {paths[1].name}); keep one")
            )
        mask_paths = [m for m in msks.get(stem, []) if m.suffix.lower() in MASK_SUFFIXES]
        if not mask_paths:
            jpeg = msks.get(stem)
            hint = (
                f"{jpeg[0].name} is lossy JPEG, which corrupts class indices; save it as PNG"
                if jpeg
                else f"add {masks / (stem + '.png')} or remove the image"
            )
            problems.append(Problem(str(paths[0]), f"image has no mask; {hint}"))
            continue
        if len(mask_paths) > 1:
            problems.append(Problem(str(mask_paths[1]), f"two masks with stem '{stem}'; keep one"))
        pairs[stem] = Pair(stem, paths[0], mask_paths[0])
    for stem, paths in msks.items():
        if stem not in imgs:
            problems.append(
                Problem(str(paths[0]), f"mask has no image; add {images / stem}.<png|jpg|tif> or remove the mask")
            )
    return pairs


def _read_list(path: Path) -> list[str]:
    stems = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name = line.split()[0]  # VOC-style "stem  1" lines keep only the stem
            stems.append(Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES else name)
    return stems


def _voc_root(root: Path) -> Path | None:
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() and (candidate / "SegmentationClass").is_dir():
            return candidate
    return None


def _scan_voc(root: Path, given: Path) -> Layout:
    layout = Layout("voc", root, "voc", classes_file=_class_file(root, given))
    lists = root / "ImageSets" / "Segmentation"
    for split in SPLITS:
        list_file = lists / f"{split}.txt"
        layout.splits[split] = []
        if not list_file.is_file():
            continue
        for stem in _read_list(list_file):
            img, msk = root / "JPEGImages" / f"{stem}.jpg", root / "SegmentationClass" / f"{stem}.png"
            missing = [p for p in (img, msk) if not p.is_file()]
            for p in missing:
                layout.problems.append(
                    Problem(
                        str(p), f"listed in {list_file.name} but missing; add it or remove '{stem}' from {list_file}"
                    )
                )
            if not missing:
                layout.splits[split].append(Pair(stem, img, msk))
    if not (lists / "train.txt").is_file():
        layout.problems.append(
            Problem(
                str(lists / "train.txt"),
                "missing: a VOC folder needs ImageSets/Segmentation/train.txt (and val.txt) listing image stems",
            )
        )
    return layout


def scan_layout(
    root, val_fraction: float | None = None, test_fraction: float | None = None, split_seed: int = 0
) -> Layout:
    """Pair the images and masks of the dataset folder ``root``; see the module docstring.

    ``val_fraction``/``test_fraction`` (with ``split_seed``) ask for a seeded random split instead of
    the hash split; a folder whose splits are given by lists or subfolders refuses them.
    Raises :class:`MissingFileError` when ``root`` is not a folder. An unknown layout is reported
    as a problem with the root as its file (``splits`` empty) so callers can show the fix.
    """
    layout = _scan(Path(root).expanduser())
    if val_fraction is None and test_fraction is None:
        return layout
    if layout.split_source != "hash":
        if layout.kind == "unknown":
            return layout
        raise InputError(
            f"{layout.describe('val')}: this dataset defines its splits ({layout.split_source}); "
            "drop --val-fraction/--test-fraction, or remove the split lists to split by fraction"
        )
    pairs = {p.stem: p for split_pairs in layout.splits.values() for p in split_pairs}
    assignment = fraction_split(pairs, float(val_fraction or 0.0), float(test_fraction or 0.0), int(split_seed))
    layout.splits = {s: [pairs[stem] for stem in sorted(pairs) if assignment[stem] == s] for s in SPLITS}
    layout.split_source = "fractions"
    return layout


def _scan(root: Path) -> Layout:
    if not root.is_dir():
        raise MissingFileError(f"{root}: dataset folder not found; check the path")
    voc = _voc_root(root)
    if voc is not None:
        return _scan_voc(voc, root)
    classes = root / "classes.txt"
    classes_file = classes if classes.is_file() else None
    if (root / "images").is_dir():
        layout = Layout("folder", root, "hash", classes_file=classes_file)
        pairs = _pair_folder(root / "images", root / "masks", layout.problems)
        if not (root / "masks").is_dir():
            layout.problems.append(
                Problem(
                    str(root / "masks"),
                    "missing: put one mask per image in masks/ (same stem, index PNG, 255 = ignore)",
                )
            )
        lists = {s: root / f"{s}.txt" for s in SPLITS}
        if any(p.is_file() for p in lists.values()):
            layout.split_source = "lists"
            for split, list_file in lists.items():
                layout.splits[split] = []
                for stem in _read_list(list_file) if list_file.is_file() else []:
                    if stem in pairs:
                        layout.splits[split].append(pairs[stem])
                    else:
                        layout.problems.append(
                            Problem(
                                str(list_file),
                                f"'{stem}' has no image/mask pair in images/ and masks/; fix the name or remove the "
                                "line",
                            )
                        )
        else:
            layout.splits = {s: [] for s in SPLITS}
            for stem, pair in pairs.items():
                layout.splits[hash_split(stem)].append(pair)
        return layout
    if any((root / s / "images").is_dir() for s in SPLITS):
        layout = Layout("folder", root, "subfolders", classes_file=classes_file)
        for split in SPLITS:
            sub = root / split
            if not (sub / "images").is_dir():
                layout.splits[split] = []
                continue
            if not (sub / "masks").is_dir():
                layout.problems.append(
                    Problem(
                        str(sub / "masks"),
                        "missing: put one mask per image in masks/ (same stem, index PNG, 255 = ignore)",
                    )
                )
            layout.splits[split] = list(_pair_folder(sub / "images", sub / "masks", layout.problems).values())
        return layout
    layout = Layout("unknown", root, "none", splits={s: [] for s in SPLITS})
    layout.problems.append(
        Problem(
            str(root),
            "unknown dataset layout; expected images/ + masks/ (optionally train/ val/ test/ subfolders holding them) "
            "or a PASCAL VOC folder (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)",
        )
    )
    return layout
