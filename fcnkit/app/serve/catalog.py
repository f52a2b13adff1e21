"""What a viewer serves: runs (model + geometry + class names) and images (given or uploaded).

The HTTP layer only ever names things by id, never by path: an id is looked up here, so a
request cannot reach a file the user did not give (no path traversal by construction). Uploads
are written into the server's own cache folder, under a name derived from their content.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fcnkit.errors import InputError, MissingFileError

__all__ = ["Limits", "ServedRun", "ServedImage", "Catalog", "NotFound", "TooLarge", "load_run"]

_ID = re.compile(r"^[a-z0-9]{1,40}$")
MASK_SUFFIXES = (".png", ".tif", ".tiff")


class NotFound(MissingFileError):
    """An id the server does not know (answered with HTTP 404)."""


class TooLarge(InputError):
    """An upload over the byte or pixel limit (answered with HTTP 413)."""


@dataclass(frozen=True)
class Limits:
    """Upload limits: encoded bytes and decoded pixels (the decoded size is checked from the file
    header before anything is decoded, so a small "decompression bomb" file is refused cheaply)."""

    max_upload_bytes: int = 64 << 20
    max_pixels: int = 1 << 26  # 8192 x 8192


@dataclass
class ServedRun:
    """A loaded checkpoint: the model in eval mode on ``device``, its geometry and its classes."""

    id: str
    name: str
    key: str  # content key of the weights (cache folders are keyed by it)
    model: Any
    config: dict
    geometry: Any
    device: str
    channels: int
    mean: list
    std: list
    classes: list[str]
    palette: list[list[int]]
    min_side: int = 1

    def describe(self) -> dict:
        g = self.geometry
        return {
            "id": self.id,
            "name": self.name,
            "classes": self.classes,
            "palette": self.palette,
            "model": self.config["model"]["name"],
            "in_channels": self.channels,
            "geometry": {
                "size": list(g.size),
                "stride": list(g.stride),
                "offset": list(g.offset),
                "align": list(g.align),
            },
        }


@dataclass
class ServedImage:
    id: str
    name: str
    path: Path
    size: tuple[int, int]  # (H, W)
    mask_path: Path | None = None
    uploaded: bool = False

    def describe(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "height": self.size[0],
            "width": self.size[1],
            "has_mask": self.mask_path is not None,
            "uploaded": self.uploaded,
        }


def _key(*parts) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:20]


def file_key(path: Path) -> str:
    """A key of a file's path, size and modification time (a changed file gets a new key)."""
    st = path.stat()
    return _key(path.resolve(), st.st_size, st.st_mtime_ns)


def load_run(path, index: int, device: str = "cpu") -> ServedRun:
    """Load a run (or checkpoint) folder for serving; a classifier or a broken folder is an InputError."""
    from fcnkit.app.predict_inputs import input_settings
    from fcnkit.checkpoint import CONFIG, WEIGHTS, load_checkpoint, resolve_checkpoint
    from fcnkit.geometry import receptive_field

    ckpt = resolve_checkpoint(path)
    model, config = load_checkpoint(ckpt, map_location=device)
    if config.get("task", "segmentation") != "segmentation":
        raise InputError(f"{path}: checkpoint is a {config.get('task')} model; fcnkit serve needs a segmentation run")
    channels, mean, std, palette = input_settings(config)
    k = int(config.get("num_classes", 21))
    classes = [str(c) for c in (config.get("classes") or [f"class {i}" for i in range(k)])]
    geometry = receptive_field(model, in_channels=channels)
    return ServedRun(
        id=str(index),
        name=Path(path).resolve().name,
        key=_key(file_key(ckpt / WEIGHTS), file_key(ckpt / CONFIG)),  # new weights or config: new predictions
        model=model,
        config=config,
        geometry=geometry,
        device=str(device),
        channels=channels,
        mean=mean,
        std=std,
        classes=classes,
        palette=[list(map(int, c)) for c in palette],
        min_side=int(getattr(model, "min_input_size", 1)),
    )


def image_size(path: Path, limits: Limits, name: str | None = None) -> tuple[int, int]:
    """``(H, W)`` from the file header (nothing decoded); refuses files over ``limits.max_pixels``."""
    from PIL import Image, UnidentifiedImageError

    name = name or path.name
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.pages[0].shape
            h, w = (shape[1], shape[2]) if len(shape) == 3 and shape[0] <= 4 < shape[-1] else (shape[0], shape[1])
        else:
            with Image.open(path) as img:
                w, h = img.size
    except (UnidentifiedImageError, OSError, ValueError, IndexError, SyntaxError) as exc:
        raise InputError(f"{name}: not a readable image ({type(exc).__name__}); upload a PNG, JPEG or TIFF") from None
    except Exception:  # noqa: BLE001 - tifffile raises many kinds on broken files
        raise InputError(f"{name}: not a readable image; upload a PNG, JPEG or TIFF") from None
    if h * w > limits.max_pixels:
        raise TooLarge(
            f"{name}: {w}x{h} pixels is over this server's limit of {limits.max_pixels} pixels; "
            "crop the image or restart fcnkit serve with a larger --max-pixels"
        )
    return int(h), int(w)


def find_mask(image: Path, masks_dir: Path | None) -> Path | None:
    """The mask of ``image`` in ``masks_dir``: same stem (or stem + ``_mask``), PNG or TIFF."""
    if masks_dir is None:
        return None
    for stem in (image.stem, f"{image.stem}_mask"):
        for suffix in MASK_SUFFIXES:
            if (masks_dir / f"{stem}{suffix}").is_file():
                return masks_dir / f"{stem}{suffix}"
    return None


@dataclass
class Catalog:
    """The runs and images of one server, its cache folder and its limits."""

    runs: dict[str, ServedRun]
    cache_dir: Path
    limits: Limits = field(default_factory=Limits)
    images: dict[str, ServedImage] = field(default_factory=dict)
    _pixels: OrderedDict = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, run_id: str) -> ServedRun:
        if not isinstance(run_id, str) or run_id not in self.runs:
            raise NotFound(f"run {run_id!r} is not served here; GET /api/runs lists the runs")
        return self.runs[run_id]

    def image(self, image_id: str) -> ServedImage:
        if not isinstance(image_id, str) or not _ID.match(image_id) or image_id not in self.images:
            raise NotFound(f"image {image_id!r} is not served here; GET /api/runs lists the images")
        return self.images[image_id]

    def add_file(self, path, mask_path=None) -> ServedImage:
        """Serve an image the user named on the command line (its mask, if any, must match its size)."""
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"{path}: image not found; check the path")
        size = image_size(path, Limits(max_pixels=1 << 40))  # the user's own files: no pixel limit
        image = ServedImage(id=file_key(path), name=path.name, path=path, size=size, mask_path=mask_path)
        self._check(image)
        self.images[image.id] = image
        return image

    def add_upload(self, data: bytes, filename: str, mask: bytes | None = None, mask_name: str = "") -> ServedImage:
        """Store an uploaded image (and optional mask: an index PNG or TIFF) in the cache folder and serve it."""
        from fcnkit.data.io import IMAGE_SUFFIXES
        from fcnkit.utils.atomic import atomic_write_bytes

        suffix = Path(filename or "").suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            raise InputError(f"upload {filename!r}: unsupported file type; upload one of {', '.join(IMAGE_SUFFIXES)}")
        for what, blob in (("image", data), ("mask", mask)):
            if blob is not None and len(blob) > self.limits.max_upload_bytes:
                raise TooLarge(
                    f"upload {filename!r}: {what} of {len(blob)} bytes is over the limit of "
                    f"{self.limits.max_upload_bytes} bytes; restart fcnkit serve with a larger "
                    "--max-upload-mb"
                )
        if not data:
            raise InputError(f"upload {filename!r}: the file is empty; choose an image file")
        digest = hashlib.sha256(data + b"\0" + (mask or b"")).hexdigest()[:20]
        image_id = "u" + digest
        if image_id in self.images:
            return self.images[image_id]
        folder = self.cache_dir / "uploads"
        path = folder / f"{image_id}{suffix}"
        mask_suffix = Path(mask_name).suffix.lower() if Path(mask_name).suffix.lower() in MASK_SUFFIXES else ".png"
        mask_path = folder / f"{image_id}_mask{mask_suffix}" if mask else None
        tmp = folder / f".{image_id}.check{suffix}"
        folder.mkdir(parents=True, exist_ok=True)
        try:  # check a private copy first: nothing is published under the image's id until it reads
            tmp.write_bytes(data)
            size = image_size(tmp, self.limits, Path(filename).name)
            image = ServedImage(id=image_id, name=Path(filename).name, path=tmp, size=size, uploaded=True)
            if mask and mask_path is not None:
                atomic_write_bytes(mask_path, mask)
                image.mask_path = mask_path
            self._check(image)
            atomic_write_bytes(path, data)
        except BaseException:
            if mask_path is not None:
                mask_path.unlink(missing_ok=True)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        image.path = path
        with self._lock:  # the checked pixels are the published file's: keep them under its path
            array = self._pixels.pop(tmp, None)
            if array is not None:
                self._pixels[path] = array
        self.images[image_id] = image
        return image

    def _check(self, image: ServedImage) -> None:
        """Decode the image and mask once, so a bad file is refused before it is served."""
        from fcnkit.data.io import read_mask, to_model_input

        array = self.pixels(image)
        name = image.name
        for run in self.runs.values():
            if min(image.size) < run.min_side:
                raise InputError(
                    f"{name}: {image.size[1]}x{image.size[0]} is smaller than run {run.name}'s minimum "
                    f"input of {run.min_side}x{run.min_side} pixels; use a larger image"
                )
            try:
                to_model_input(array[:1, :1], run.channels, run.mean, run.std)
            except InputError as exc:
                raise InputError(f"{name}: {exc}") from None
        if image.mask_path is not None:
            try:
                mask = read_mask(image.mask_path)
            except InputError as exc:
                raise InputError(f"mask of {name}: {str(exc).split(': ', 1)[-1]}") from None
            if mask.shape != tuple(image.size):
                raise InputError(
                    f"mask of {name} is {mask.shape[1]}x{mask.shape[0]} but the image is "
                    f"{image.size[1]}x{image.size[0]}; give the mask of this image"
                )

    def pixels(self, image: ServedImage) -> np.ndarray:
        """The image's raw array (TIFFs memory-mapped); the last few are kept in memory."""
        from fcnkit.data.io import read_image

        with self._lock:
            if image.path in self._pixels:
                self._pixels.move_to_end(image.path)
                return self._pixels[image.path]
        try:
            array = read_image(image.path, mmap=True)
        except InputError as exc:
            raise InputError(f"{image.name}: {str(exc).split(': ', 1)[-1]}") from None
        with self._lock:
            self._pixels[image.path] = array
            while len(self._pixels) > 4:
                self._pixels.popitem(last=False)
        return array

    def describe(self) -> dict:
        return {
            "runs": [r.describe() for r in self.runs.values()],
            "images": [i.describe() for i in self.images.values()],
            "limits": {"max_upload_bytes": self.limits.max_upload_bytes, "max_pixels": self.limits.max_pixels},
        }


def default_cache_dir() -> Path:
    """A fresh private folder for this server's uploads and predictions."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="fcnkit-serve-", dir=os.environ.get("TMPDIR")))
