"""``check_dataset``: read every file of a dataset folder and report EVERY problem, not the first.

Problems found (each names the file at fault and the fix):

- unknown layout, empty dataset, empty training split, a stem listed in two splits
- image without mask, mask without image, duplicate stems, list entries without files
- unreadable / corrupt / truncated image or mask (every file is fully decoded)
- RGB (or other colour) mask: colours are not class indices
- image/mask size mismatch
- labels >= num_classes other than 255 (``num_classes``: the argument, else classes.txt (VOC also
  labelmap.txt), else inferred as the loader does: largest training label + 1)
- float images holding NaN/inf; broken symlinks and symlink loops among the files
- an inferred class count ("largest label + 1") above MAX_INFERRED_CLASSES (a wrong label, e.g.
  1000 in a 16-bit mask, is named rather than taken as 1001 classes)
- warnings (not problems): a validation/test split too small to score
- masks holding only 0 and 255 (255 means ignore, so such a dataset would have nothing to learn)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fcnkit.constants import IGNORE_INDEX
from fcnkit.data.io import read_image, read_mask
from fcnkit.data.layouts import Pair, Problem, scan_layout, small_split_warnings
from fcnkit.data.validate import MAX_INFERRED_CLASSES
from fcnkit.errors import InputError

__all__ = ["Problem", "CheckReport", "check_dataset", "inspect_dataset"]


@dataclass
class CheckReport:
    """What :func:`inspect_dataset` found: the problems and, for the summary, what was counted."""

    root: str
    kind: str
    problems: list[Problem] = field(default_factory=list)
    num_images: int = 0
    num_classes: int | None = None
    splits: dict[str, int] = field(default_factory=dict)
    #: not problems, but worth saying (e.g. a validation split too small to score)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _message(exc: InputError, path: Path) -> str:
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _declared_classes(layout, num_classes: int | None, problems: list[Problem]) -> int | None:
    if num_classes is not None:
        return int(num_classes)
    if layout.classes_file is not None:
        names = [
            ln
            for ln in layout.classes_file.read_text(encoding="utf-8").splitlines()
            if ln.strip() and not ln.startswith("#")
        ]
        if len(names) < 2:
            problems.append(
                Problem(
                    str(layout.classes_file),
                    f"lists {len(names)} class name(s); write one name per line, background first (at least 2)",
                )
            )
            return None
        return len(names)
    return None  # inferred from the training masks below


def _unique_pairs(layout) -> tuple[list[tuple[str, Pair]], list[Problem]]:
    seen: dict[Path, str] = {}
    pairs, problems = [], []
    for split, split_pairs in layout.splits.items():
        for pair in split_pairs:
            if pair.image in seen:
                if seen[pair.image] != split:
                    problems.append(
                        Problem(
                            str(pair.image),
                            f"in both the '{seen[pair.image]}' and '{split}' splits; a sample must be in one split "
                            "only",
                        )
                    )
                continue
            seen[pair.image] = split
            pairs.append((split, pair))
    return pairs, problems


def inspect_dataset(path: str | os.PathLike, num_classes: int | None = None) -> CheckReport:
    """Check the dataset folder ``path``; returns a :class:`CheckReport` (see the module docstring)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        return CheckReport(str(root), "missing", [Problem(str(root), "dataset folder not found; check the path")])
    layout = scan_layout(root)
    report = CheckReport(str(layout.root), layout.kind, list(layout.problems))
    if layout.kind == "unknown":
        return report
    problems = report.problems
    pairs, dup_problems = _unique_pairs(layout)
    problems.extend(dup_problems)
    report.splits = {s: len(p) for s, p in layout.splits.items()}
    report.warnings = small_split_warnings(layout)
    report.num_images = len(pairs)
    if not pairs:
        problems.append(
            Problem(
                str(layout.root),
                "empty dataset: no image/mask pairs found; add images/ and masks/ with matching file names",
            )
        )
        return report
    if not layout.splits.get("train"):
        problems.append(
            Problem(
                layout.describe("train"), "the training split is empty; add training images (or fix the split lists)"
            )
        )
    declared = _declared_classes(layout, num_classes, problems)

    labels: list[tuple[str, Path, np.ndarray]] = []  # (split, mask file, unique labels)
    for split, pair in pairs:
        image = mask = None
        try:
            image = read_image(pair.image)
        except InputError as exc:
            problems.append(Problem(str(pair.image), _message(exc, pair.image)))
        try:
            mask = read_mask(pair.mask)
        except InputError as exc:
            problems.append(Problem(str(pair.mask), _message(exc, pair.mask)))
        if image is not None and image.dtype.kind == "f" and not np.isfinite(image).all():
            problems.append(
                Problem(
                    str(pair.image),
                    "the image holds NaN or inf pixels; replace them (e.g. numpy.nan_to_num) and save it again",
                )
            )
        if mask is None:
            continue
        if image is not None and image.shape[:2] != mask.shape:
            problems.append(
                Problem(
                    str(pair.mask),
                    f"mask is {mask.shape[0]}x{mask.shape[1]} but its image {pair.image.name} is "
                    f"{image.shape[0]}x{image.shape[1]}; resize the mask with NEAREST to the image size",
                )
            )
        labels.append((split, pair.mask, np.unique(mask)))

    k = declared
    if k is None:
        train_max = [
            int(u[u != IGNORE_INDEX].max()) for s, _, u in labels if s == "train" and (u != IGNORE_INDEX).any()
        ]
        k = max(train_max) + 1 if train_max else None
        if k is not None and k > MAX_INFERRED_CLASSES:
            top = next(
                f
                for s, f, u in labels
                if s == "train" and (u != IGNORE_INDEX).any() and int(u[u != IGNORE_INDEX].max()) == k - 1
            )
            problems.append(
                Problem(
                    str(top),
                    f"holds label {k - 1}, so 'largest label + 1' would make {k} classes "
                    f"(more than {MAX_INFERRED_CLASSES}); fix the mask, or if the classes are real "
                    "list them in classes.txt (or pass --num-classes N)",
                )
            )
    report.num_classes = k
    if declared is None and k is not None and k < 2:
        problems.append(
            Problem(
                str(layout.root),
                "the training masks hold only label 0, so there is nothing to learn; label the objects 1, 2, ... "
                "(255 = ignore)",
            )
        )
    if k is not None:
        for _, file, u in labels:
            bad = u[(u < 0) | ((u >= k) & (u != IGNORE_INDEX))]
            if bad.size:
                shown = ", ".join(str(int(v)) for v in bad[:5])
                problems.append(
                    Problem(
                        str(file),
                        f"labels {shown} are outside 0..{k - 1} (255 = ignore); fix the mask or declare more classes "
                        "(classes.txt / --num-classes)",
                    )
                )
    if (
        labels
        and all(set(u.tolist()) <= {0, IGNORE_INDEX} for _, _, u in labels)
        and any((u == IGNORE_INDEX).any() for _, _, u in labels)
    ):
        problems.append(
            Problem(
                str(layout.root),
                "every mask holds only 0 and 255, but 255 means ignore; if 255 marks the foreground, save it as 1",
            )
        )
    return report


def check_dataset(path: str | os.PathLike, num_classes: int | None = None) -> list[Problem]:
    """Every problem of the dataset folder ``path`` as ``Problem(file, message)``; empty when fine."""
    return inspect_dataset(path, num_classes).problems
