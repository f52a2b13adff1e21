"""Deep-zoom tiles: the image as PNG tiles, labels as raw uint8 tiles, at levels 0 (full size),
1 (half), 2, ... down to a level whose one tile holds the whole image::

    level z, tile (ty, tx) covers image pixels
        rows [ty * T * 2^z, (ty + 1) * T * 2^z)   cols [tx * T * 2^z, (tx + 1) * T * 2^z)   T = TILE
    and holds them reduced 2^z times (image: box filter; labels: every 2^z-th pixel, as labels
    must not be averaged)

Label tiles are raw bytes (``width`` x ``height`` in the response headers), so the page reads
class indices exactly, without any colour management in the browser's PNG decoder.
"""

from __future__ import annotations

import io
import math

import numpy as np

from fcnkit.app.serve.catalog import NotFound

__all__ = ["TILE", "levels", "tile_window", "image_tile", "label_tile", "display_range"]

TILE = 256


def levels(size: tuple[int, int]) -> int:
    """Number of zoom levels of an image of ``size`` ``(H, W)``."""
    return max(0, math.ceil(math.log2(max(size) / TILE))) + 1 if max(size) > TILE else 1


def tile_window(size: tuple[int, int], z: int, ty: int, tx: int) -> tuple[int, int, int, int, int]:
    """``(y0, y1, x0, x1, factor)`` in image pixels of a tile; a tile outside the image is NotFound."""
    h, w = size
    if not 0 <= z < levels(size):
        raise NotFound(f"zoom level {z} does not exist for a {w}x{h} image (levels 0..{levels(size) - 1})")
    f = 1 << z
    y0, x0 = ty * TILE * f, tx * TILE * f
    if ty < 0 or tx < 0 or y0 >= h or x0 >= w:
        raise NotFound(f"tile ({z}, {ty}, {tx}) is outside the {w}x{h} image")
    return y0, min(h, y0 + TILE * f), x0, min(w, x0 + TILE * f), f


def display_range(array: np.ndarray) -> tuple[float, float] | None:
    """Display stretch of a non-8-bit image: its 1st-99th percentile (from a subsample), once per image."""
    if array.dtype == np.uint8:
        return None
    step = max(1, int(math.sqrt(array.shape[0] * array.shape[1] / 1e6)))
    sample = np.asarray(array[::step, ::step], dtype=np.float32)
    lo, hi = np.percentile(sample, [1, 99]) if sample.size else (0.0, 1.0)
    return float(lo), float(max(hi, lo + 1e-12))


def image_tile(array: np.ndarray, stretch, z: int, ty: int, tx: int) -> bytes:
    """A PNG tile of the image (grey or RGB, 8 bits)."""
    from PIL import Image

    y0, y1, x0, x1, f = tile_window(array.shape[:2], z, ty, tx)
    region = np.asarray(array[y0:y1, x0:x1])
    if region.ndim == 3 and region.shape[-1] in (2, 4):
        region = region[..., :-1]
    if region.ndim == 3 and region.shape[-1] == 1:
        region = region[..., 0]
    if stretch is not None:
        lo, hi = stretch
        region = np.clip((region.astype(np.float32) - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(region))
    if f > 1:
        img = img.reduce(f)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def label_tile(labels: np.ndarray, z: int, ty: int, tx: int) -> tuple[bytes, int, int]:
    """Raw uint8 class indices of a tile, row-major; returns ``(bytes, width, height)``."""
    y0, y1, x0, x1, f = tile_window(labels.shape, z, ty, tx)
    block = np.ascontiguousarray(labels[y0:y1:f, x0:x1:f], dtype=np.uint8)
    return block.tobytes(), block.shape[1], block.shape[0]
