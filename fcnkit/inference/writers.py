"""Where stitched logits go: sinks that receive final output blocks, and the files made from them.

A sink gets each output cell exactly once, as blocks ``write((y0, y1), (x0, x1), logits[K, h, w])``
in the order tiles finish, so nothing needs the whole ``K x H x W`` logits in memory:
:class:`TensorSink` keeps them (the Python API), :class:`NpySink` streams logits or
probabilities into a memory-mapped ``.npy`` (flushed and dropped from memory as it goes),
:class:`LabelSink` keeps only the arg-max (uint8). Label images are written as a palette PNG up
to ``PNG_MAX_PIXELS`` and as a tiled, palette TIFF above it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from fcnkit.errors import InputError
from fcnkit.inference.sources import drop_pages as _release

__all__ = ["TensorSink", "NpySink", "LabelSink", "Fanout", "write_labels", "write_overlay", "PNG_MAX_PIXELS"]

PNG_MAX_PIXELS = 1 << 25  # 32 Mpx (e.g. 5792 x 5792): above it, labels go to a tiled TIFF
# zlib level 1: lossless like Pillow's default 6, 2x faster on a 512x512 RGB overlay (51 -> 24 ms) and
# 3x on labels, for files a little larger (labels 14 vs 12 kB on noise); encoding was 18% of predict's time
PNG_COMPRESS_LEVEL = 1


def _open_memmap(path: Path, dtype, shape) -> np.memmap:
    """A new memory-mapped ``.npy`` whose blocks are reserved on disk now (``posix_fallocate``): a full
    disk is then a one-line error here instead of a SIGBUS when a page is written later."""
    from fcnkit.utils.outputs import preallocate

    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
    try:
        preallocate(path, os.path.getsize(path))
    except BaseException:
        del array
        raise
    return array


class TensorSink:
    """Keeps the logits ``[K, H, W]`` in a preallocated tensor (``result``)."""

    def __init__(self, shape: tuple[int, int, int], dtype=torch.float32):
        self.result = torch.zeros(shape, dtype=dtype)

    def write(self, rows, cols, block: torch.Tensor) -> None:
        self.result[:, rows[0] : rows[1], cols[0] : cols[1]] = block

    def close(self) -> None:
        pass


class NpySink:
    """Streams ``[K, H, W]`` float32 blocks into a memory-mapped ``.npy`` file at ``path``.

    ``softmax=True`` stores class probabilities instead of logits. ``result`` is the memmap.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int], softmax: bool = False):
        self.path, self.softmax = Path(path), softmax
        self.result = _open_memmap(self.path, np.float32, shape)

    def write(self, rows, cols, block: torch.Tensor) -> None:
        if self.softmax:
            block = torch.softmax(block.float(), dim=0)
        self.result[:, rows[0] : rows[1], cols[0] : cols[1]] = block.detach().cpu().numpy()
        _release(self.result)  # written blocks go to disk, not into our resident memory

    def close(self) -> None:
        _release(self.result)


class LabelSink:
    """Keeps the arg-max labels ``uint8 [H, W]``; in a memory-mapped scratch file if ``scratch`` is given."""

    def __init__(self, size: tuple[int, int], num_classes: int, scratch: str | os.PathLike | None = None):
        if num_classes > 255:
            raise InputError(f"model has {num_classes} classes; label images hold at most 255 (255 = ignore)")
        self.result: np.ndarray
        if scratch is not None:
            self.result = _open_memmap(Path(scratch), np.uint8, size)
        else:
            self.result = np.zeros(size, dtype=np.uint8)

    def write(self, rows, cols, block: torch.Tensor) -> None:
        # max(0).indices = argmax(0) (first maximum), 4-5x faster on a CPU [K, H, W] (benchmarks/README.md)
        self.result[rows[0] : rows[1], cols[0] : cols[1]] = block.max(0).indices.to(torch.uint8).cpu().numpy()
        _release(self.result)

    def close(self) -> None:
        if isinstance(self.result, np.memmap):
            _release(self.result)


class Fanout:
    """Send every block to several sinks (labels + probabilities, say)."""

    def __init__(self, *sinks):
        self.sinks = [s for s in sinks if s is not None]

    def write(self, rows, cols, block) -> None:
        for s in self.sinks:
            s.write(rows, cols, block)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def _palette_array(palette) -> np.ndarray:
    from fcnkit.data.io import full_palette  # the 256-entry palette save_label_png uses

    return full_palette(palette)


def write_labels(path: Path, labels: np.ndarray, palette, tiff: bool, extratags=None) -> None:
    """Labels as a palette PNG, or (``tiff``) a 256x256-tiled palette TIFF; ``path`` is written as is.
    ``extratags``: tifffile tag tuples for the TIFF (a GeoTIFF georeference, :mod:`fcnkit.inference.geotiff`)."""
    if not tiff:
        from PIL import Image

        img = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
        img.putpalette(_palette_array(palette).reshape(-1).tolist())
        img.save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        return
    import tifffile

    colormap = _palette_array(palette).T.astype(np.uint16) * 257
    tifffile.imwrite(
        path, labels, photometric="palette", colormap=colormap, tile=(256, 256), compression="zlib", extratags=extratags
    )


def _display_scale(image: np.ndarray):
    """(lo, hi) to stretch a non-uint8 image for display, from a strided sample (1st/99th percentile)."""
    if image.dtype == np.uint8:
        return None
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 1e6)))
    sample = np.asarray(image[::step, ::step], dtype=np.float32)
    lo, hi = np.percentile(sample, [1, 99]) if sample.size else (0.0, 1.0)
    return float(lo), float(hi)


def write_overlay(path: Path, image: np.ndarray, labels: np.ndarray, palette, max_pixels: int = PNG_MAX_PIXELS) -> int:
    """The labels blended over the image, as a PNG, built in bands of rows; returns the downscale factor
    (1 unless the image has more than ``max_pixels``, then every f-th pixel is shown)."""
    from PIL import Image

    from fcnkit.data.io import overlay

    h, w = labels.shape
    f = 1
    while (h // f) * (w // f) > max_pixels:
        f += 1
    scale = _display_scale(image)
    rows = list(range(0, h, 512 * f))
    out = np.empty(((h + f - 1) // f, (w + f - 1) // f, 3), dtype=np.uint8)
    for y in rows:
        band = np.asarray(image[y : y + 512 * f : f, ::f])
        if scale is not None:
            lo, hi = scale
            band = np.clip((band.astype(np.float32) - lo) / max(hi - lo, 1e-12) * 255.0, 0, 255).astype(np.uint8)
        out[y // f : y // f + band.shape[0]] = overlay(band, labels[y : y + 512 * f : f, ::f], palette)
        _release(image)  # a memory-mapped input: its pages need not stay resident
    Image.fromarray(out, mode="RGB").save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return f
