"""Reading images and masks from disk, and the ONE path from a raw array to a model input.

Training, evaluation and prediction all call :func:`to_model_input`, so a model sees the same
numbers for an image whether it came from a built-in dataset, a folder or ``fcnkit predict``:

    raw array (uint8 | uint16 | float)  --scale by dtype-->  [0, 1]  --channels-->  C
        --(x - mean) / std-->  float32 tensor (C, H, W)

Masks are int64 class indices with 255 = ignore (``IGNORE_INDEX``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fcnkit.constants import IGNORE_INDEX
from fcnkit.errors import InputError, MissingFileError

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_SUFFIXES",
    "read_image",
    "read_mask",
    "to_unit_float",
    "to_channels",
    "to_model_input",
    "voc_palette",
    "full_palette",
    "colorize",
    "overlay",
    "save_label_png",
    "display_uint8",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
#: a compressed (not memory-mappable) TIFF is decoded whole; above this many pixels it is refused
#: (the same bound Pillow puts on PNG/JPEG: twice ``Image.MAX_IMAGE_PIXELS``)
TIFF_MAX_DECODED_PIXELS = 2 * 89_478_485
_TIFF = (".tif", ".tiff")


def _check_exists(path: Path, what: str) -> None:
    if not path.is_file():
        raise MissingFileError(f"{path}: {what} not found; check the path")


def read_image(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Read an image as ``(H, W)`` or ``(H, W, C)`` in its own dtype (uint8, uint16 or float32).

    TIFFs are read with tifffile (``mmap=True`` memory-maps uncompressed ones so huge images are
    read lazily); everything else with Pillow, fully decoded so truncated files fail here.
    """
    path = Path(path)
    _check_exists(path, "image")
    if path.suffix.lower() in _TIFF:
        return _read_tiff(path, mmap)
    try:
        with Image.open(path) as img:
            img.load()
            return _pil_to_array(img)
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"{path}: {_short(exc)}; if the image is genuine, save it as an uncompressed TIFF "
            "(read lazily) and predict it with --tile auto"
        ) from None
    except MemoryError:
        raise InputError(
            f"{path}: too large to decode in memory; save it as an uncompressed TIFF (read lazily) "
            "and predict it with --tile auto"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(
            f"{path}: cannot decode image ({_short(exc)}); the file is corrupt or truncated, re-export it"
        ) from None


def _pil_to_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("1", "L", "LA", "RGB", "RGBA"):
        pass
    elif mode.startswith("I;16"):
        return np.asarray(img, dtype=np.uint16)
    elif mode == "I":
        arr = np.asarray(img, dtype=np.int64)
        return arr.astype(np.uint16) if arr.min() >= 0 and arr.max() <= 65535 else arr.astype(np.float32)
    elif mode == "F":
        return np.asarray(img, dtype=np.float32)
    else:  # CMYK, YCbCr, LAB, HSV, ...
        img = img.convert("RGB")
    arr = np.asarray(img)
    return arr.astype(np.uint8) if arr.dtype == bool else arr


def _read_tiff(path: Path, mmap: bool) -> np.ndarray:
    import tifffile

    arr: np.ndarray
    try:
        if mmap:
            try:
                arr = tifffile.memmap(path, mode="r")
            except ValueError:  # compressed or tiled: not memory-mappable
                arr = _decode_tiff(path)
        else:
            arr = _decode_tiff(path)
    except InputError:
        raise
    except MemoryError:
        raise InputError(
            f"{path}: TIFF too large to decode in memory; save it uncompressed (read lazily) "
            "and predict it with --tile auto"
        ) from None
    except Exception as exc:  # tifffile raises many types for broken files
        raise InputError(
            f"{path}: cannot decode TIFF ({_short(exc)}); the file is corrupt or truncated, re-export it"
        ) from None
    arr = np.squeeze(arr) if arr.ndim > 3 else arr
    if arr.ndim == 3 and arr.shape[0] <= 4 < arr.shape[-1]:  # planar (C, H, W) -> (H, W, C)
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim not in (2, 3):
        raise InputError(
            f"{path}: TIFF has shape {arr.shape}; fcnkit reads 2-D images (H, W) or (H, W, C), save one plane per file"
        )
    return arr


def _decode_tiff(path: Path) -> np.ndarray:
    """Decode a whole TIFF, after checking its size in the header (a decompression-bomb guard)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0] if tif.series else None
        if series is not None:
            shape = tuple(int(v) for v in series.shape)
            channels = (
                shape[-1]
                if len(shape) == 3 and shape[-1] <= 4
                else shape[0]
                if len(shape) == 3 and shape[0] <= 4
                else 1
            )
            pixels = int(np.prod(shape)) // channels
            if pixels > TIFF_MAX_DECODED_PIXELS:
                raise InputError(
                    f"{path}: compressed TIFF of shape {tuple(series.shape)} would be decoded whole "
                    f"({pixels / 1e6:.0f} Mpx > {TIFF_MAX_DECODED_PIXELS / 1e6:.0f} Mpx); save it uncompressed "
                    "(memory-mapped, read lazily) and predict it with --tile auto"
                )
        return tif.asarray()


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask of class indices as int64 ``(H, W)``; 255 means ignore.

    Accepted: index/palette PNG (mode ``P``, ``L``, ``I;16``), or a single-channel integer TIFF.
    An RGB mask is refused (its colours are not class indices).
    """
    path = Path(path)
    _check_exists(path, "mask")
    if path.suffix.lower() in _TIFF:
        arr = _read_tiff(path, mmap=False)
    else:
        try:
            with Image.open(path) as img:
                img.load()
                if img.mode not in ("P", "L", "1", "I", "I;16"):
                    raise InputError(
                        f"{path}: mask has mode {img.mode}; save masks as index or palette PNG (mode P or L) "
                        "holding class indices, 255 = ignore"
                    )
                arr = np.asarray(img)
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise InputError(
                f"{path}: cannot decode mask ({_short(exc)}); the file is corrupt or truncated, re-export it"
            ) from None
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise InputError(
            f"{path}: mask must be one channel of integer class indices, got shape {arr.shape} {arr.dtype}; save it as "
            "an index PNG"
        )
    return arr.astype(np.int64)


def to_unit_float(arr: np.ndarray) -> np.ndarray:
    """Scale by dtype to float32 in [0, 1]: uint8 / 255, uint16 / 65535; floats pass through."""
    if arr.dtype == np.uint8 or arr.dtype == bool:
        return arr.astype(np.float32) / (1.0 if arr.dtype == bool else 255.0)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    return np.asarray(arr, dtype=np.float32)


def to_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` float -> ``(channels, H, W)``: drop alpha, grey <-> RGB."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] in (2, 4):  # LA / RGBA: alpha is not image content
        arr = arr[..., :-1]
    have = arr.shape[-1]
    if have == channels:
        out = arr
    elif channels == 1 and have == 3:  # ITU-R 601 luma, as Pillow's convert("L")
        out = (arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114)[..., None]
    elif have == 1:
        out = np.repeat(arr, channels, axis=-1)
    else:
        raise InputError(
            f"image has {have} channels but the model takes {channels}; convert the image to {channels} channels"
        )
    return np.ascontiguousarray(np.moveaxis(out, -1, 0), dtype=np.float32)


def to_model_input(arr: np.ndarray, channels: int, mean, std) -> torch.Tensor:
    """Raw array -> normalised float32 tensor ``(channels, H, W)``; the one path used everywhere."""
    x = to_channels(to_unit_float(np.asarray(arr)), channels)
    mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return torch.from_numpy((x - mean) / std)


def voc_palette(num_classes: int = 256) -> list[list[int]]:
    """The PASCAL VOC colour map (class 0 black, 1 dark red, ...), ``num_classes`` RGB triples."""
    palette = []
    for i in range(num_classes):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.append([r, g, b])
    return palette


def full_palette(palette) -> np.ndarray:
    """The 256-entry RGB table of a palette PNG/TIFF colormap: the classes, then 255 = ignore colour."""
    full = np.zeros((256, 3), dtype=np.uint8)
    full[: len(palette)] = np.asarray(palette, dtype=np.uint8)[:256]
    full[IGNORE_INDEX] = (224, 224, 192)  # VOC's colour for "ignore"
    return full


def colorize(labels: np.ndarray, palette) -> np.ndarray:
    """Labels ``(H, W)`` -> RGB uint8 ``(H, W, 3)``; 255 shows in VOC's ignore colour."""
    labels = np.asarray(labels)
    if labels.dtype != np.uint8:
        labels = np.clip(labels, 0, 255).astype(np.uint8)
    return np.take(full_palette(palette), labels, axis=0)  # = table[labels], 4x faster


def display_uint8(arr: np.ndarray) -> np.ndarray:
    """Any image array -> RGB uint8 for viewing (16-bit/float stretched to the 1-99th percentile)."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):
        arr = arr[..., :-1]
    if arr.dtype != np.uint8:
        a = arr.astype(np.float32)
        lo, hi = np.percentile(a, [1, 99]) if a.size else (0.0, 1.0)
        arr = np.clip((a - lo) / max(hi - lo, 1e-12) * 255.0, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    elif arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr


def overlay(image: np.ndarray, labels: np.ndarray, palette, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised labels over the image; background (class 0) stays unblended."""
    base = display_uint8(image)
    colour = colorize(labels, palette)
    if alpha == 0.5:  # the default, in integers (6x faster, same pixels; tests/test_overlay_fast.py)
        return _mean_uint8(base, colour, np.asarray(labels) == 0)
    fg = (np.asarray(labels) != 0)[..., None]
    out = np.where(fg, (1 - alpha) * base.astype(np.float32) + alpha * colour.astype(np.float32), base)
    return out.round().astype(np.uint8)


def _mean_uint8(a: np.ndarray, b: np.ndarray, keep_a: np.ndarray) -> np.ndarray:
    """``round((a + b) / 2)`` rounding halves to even (as float ``.round()``) in uint8; ``a`` where ``keep_a``."""
    odd = np.bitwise_xor(a, b)
    out = np.bitwise_and(a, b)
    out += odd >> 1  # floor((a + b) / 2) without overflow
    odd &= out  # a remainder of 1/2 (odd bit 0 set) on an odd floor: round up to the even neighbour
    odd &= 1
    out += odd
    out[keep_a] = a[keep_a]
    return out


def save_label_png(path: str | os.PathLike, labels: np.ndarray, palette) -> None:
    """Write labels as a palette PNG (mode P) atomically; values must be in 0..255."""
    from fcnkit.utils.atomic import atomic_path

    img = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    img.putpalette(full_palette(palette).reshape(-1).tolist())
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__
