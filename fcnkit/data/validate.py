"""One pass over every image and mask of the splits a training run uses, BEFORE it starts.

A bad mask found mid-epoch (or after training, in the report) leaves a half-made run behind;
here every pair is read once up front and the first problem is refused in one line:

- image decodable, and finite (float images: no NaN/inf)
- mask decodable, an index mask (mode P/L/I;16, integer TIFF), the size of its image
- mask labels within ``0..num_classes-1`` or 255 (ignore)

What was learnt per file (shape, finiteness, the set of labels) is cached by path + size + mtime
in a JSON file per dataset folder in the USER cache dir, ``$XDG_CACHE_HOME/fcnkit/datacheck/``
(default ``~/.cache/fcnkit/datacheck/``; ``FCNKIT_CACHE_DIR`` overrides the ``fcnkit`` folder):
never in the dataset folder, which may be read-only. A second run re-reads only files that changed;
an unwritable cache folder only costs the re-reading.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fcnkit.constants import IGNORE_INDEX
from fcnkit.data.io import read_image, read_mask
from fcnkit.errors import InputError

__all__ = ["validate_before_training", "FileFacts", "cache_file", "MAX_INFERRED_CLASSES"]

#: "largest label + 1" is never taken past this without the user saying so: label images hold
#: classes 0..254 (255 = ignore), so a larger label is a wrong file, not a class count
MAX_INFERRED_CLASSES = 255


def cache_file(root: str | os.PathLike) -> Path:
    """The cache file of the dataset folder ``root`` (in the user's cache dir, never in ``root``)."""
    base = os.environ.get("FCNKIT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fcnkit"
    )
    key = hashlib.sha1(str(Path(root).resolve()).encode("utf-8")).hexdigest()[:16]
    return Path(base) / "datacheck" / f"{key}.json"


def _signature(path: Path) -> list[int]:
    st = path.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


class FileFacts:
    """Per-file facts of one dataset folder, cached on disk by path + size + mtime."""

    def __init__(self, root: str | os.PathLike):
        self.path = cache_file(root)
        self.files: dict[str, dict[str, Any]] = {}
        self.dirty = False
        try:
            data = json.loads(self.path.read_text())
            if isinstance(data, dict) and data.get("version") == 1 and isinstance(data.get("files"), dict):
                self.files = data["files"]
        except (OSError, ValueError):
            pass

    def _get(self, path: Path, read) -> dict[str, Any]:
        key, sig = str(path), _signature(path)
        entry = self.files.get(key)
        if not isinstance(entry, dict) or entry.get("sig") != sig:
            entry = {"sig": sig, **read(path)}  # an InputError (undecodable file) is never cached
            self.files[key] = entry
            self.dirty = True
        return entry

    def image(self, path: Path) -> dict[str, Any]:
        """``{"shape": [h, w], "finite": bool}``."""

        def read(p: Path) -> dict[str, Any]:
            arr = read_image(p)
            finite = bool(np.isfinite(arr).all()) if arr.dtype.kind == "f" else True
            return {"shape": [int(arr.shape[0]), int(arr.shape[1])], "finite": finite}

        return self._get(path, read)

    def mask(self, path: Path) -> dict[str, Any]:
        """``{"shape": [h, w], "labels": sorted distinct labels}``."""

        def read(p: Path) -> dict[str, Any]:
            arr = read_mask(p)
            return {"shape": [int(arr.shape[0]), int(arr.shape[1])], "labels": np.unique(arr).tolist()}

        return self._get(path, read)

    def save(self) -> None:
        if not self.dirty:
            return
        from fcnkit.utils.atomic import atomic_write_text

        try:
            atomic_write_text(self.path, json.dumps({"version": 1, "files": self.files}))
            self.dirty = False
        except OSError:
            pass  # a read-only home or a full disk: the next run reads the files again, nothing worse


def _folder_sets(datasets: Iterable[Any]):
    for ds in datasets:
        while ds is not None and not hasattr(ds, "pairs") and hasattr(ds, "dataset"):
            ds = ds.dataset  # wrappers (augmentation, patches) keep the folder dataset as .dataset
        if ds is not None and hasattr(ds, "pairs") and hasattr(ds, "layout"):
            yield ds


def validate_before_training(datasets: Iterable[Any]) -> int:
    """Check every pair of every folder dataset in ``datasets`` (others are skipped: built-in data
    ships checked); returns the number of pairs checked. Raises the first problem as one
    :class:`~fcnkit.errors.InputError` with the file, the fix and a pointer to ``fcnkit data check``."""
    checked = 0
    for ds in _folder_sets(datasets):
        facts = FileFacts(ds.layout.root)
        k = int(ds.info.num_classes)
        try:
            for pair in ds.pairs:
                _check_pair(facts, pair, k, ds.layout.root)
                checked += 1
        finally:
            facts.save()
    return checked


def _check_pair(facts: FileFacts, pair, k: int, root: Path) -> None:
    more = f"; run `fcnkit data check {root}` to list every problem"
    image = facts.image(pair.image)
    if not image["finite"]:
        raise InputError(
            f"{pair.image}: the image holds NaN or inf pixels; replace them (e.g. numpy.nan_to_num) "
            f"and save it again{more}"
        )
    mask = facts.mask(pair.mask)
    if mask["shape"] != image["shape"]:
        (mh, mw), (ih, iw) = mask["shape"], image["shape"]
        raise InputError(
            f"{pair.mask}: mask is {mh}x{mw} but its image {pair.image.name} is {ih}x{iw}; "
            f"resize the mask with NEAREST to the image size{more}"
        )
    bad = [v for v in mask["labels"] if v < 0 or (v >= k and v != IGNORE_INDEX)]
    if bad:
        shown = ", ".join(str(v) for v in bad[:5])
        raise InputError(
            f"{pair.mask}: labels {shown} are outside 0..{k - 1} (255 = ignore); fix the mask or "
            f"declare more classes (classes.txt / --data-option num_classes=N){more}"
        )
