"""Lazy image sources: the model input, one tile at a time.

A source has ``shape`` ``(C, H, W)`` and ``read(rows, cols) -> float32 tensor [C, h, w]`` for
the slices ``rows = (y0, y1)``, ``cols = (x0, x1)``. A raw array (possibly a memory-mapped TIFF)
is normalised tile by tile with :func:`fcnkit.data.io.to_model_input`, the one path from raw
pixels to model input, so a huge image is never held as float32 in memory.
"""

from __future__ import annotations

import mmap
import os

import numpy as np
import torch

from fcnkit.errors import InputError

__all__ = ["TensorSource", "ArraySource", "open_image", "as_source", "drop_pages"]


def drop_pages(array) -> None:
    """Flush a memory-mapped array and drop its pages from this process's resident memory.

    The data stays on disk (and in the OS page cache); reading it again maps it back. Keeps the
    resident size of a run over a huge memory-mapped image or output bounded. No-op otherwise.
    """
    raw = getattr(array, "_mmap", None)
    if raw is None:
        return
    raw.flush()
    if hasattr(mmap, "MADV_DONTNEED"):
        try:
            raw.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


class TensorSource:
    """An already normalised ``[C, H, W]`` tensor."""

    def __init__(self, tensor: torch.Tensor):
        if tensor.dim() == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.dim() != 3:
            raise InputError(f"image has shape {list(tensor.shape)}; pass a normalised [C, H, W] tensor")
        self.tensor = tensor
        self.shape = tuple(int(v) for v in tensor.shape)

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
        return self.tensor[:, rows[0] : rows[1], cols[0] : cols[1]]


class ArraySource:
    """A raw ``(H, W)`` or ``(H, W, C)`` array (uint8/uint16/float, memmap welcome), normalised per tile."""

    def __init__(self, array: np.ndarray, channels: int, mean, std, name: str = "image"):
        if array.ndim not in (2, 3):
            raise InputError(f"{name}: array has shape {array.shape}; expected (H, W) or (H, W, C)")
        self.array, self.channels, self.mean, self.std, self.name = array, int(channels), mean, std, name
        self.shape = (self.channels, int(array.shape[0]), int(array.shape[1]))
        # fail now, with the file's name, rather than on the first tile
        from fcnkit.data.io import to_model_input

        try:
            to_model_input(array[:1, :1], self.channels, mean, std)
        except InputError as exc:
            raise InputError(f"{name}: {exc}") from None

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
        from fcnkit.data.io import to_model_input

        raw = self.array[rows[0] : rows[1], cols[0] : cols[1]]
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            raise InputError(
                f"{self.name}: the image holds NaN or inf pixels (rows {rows[0]}-{rows[1]}, "
                f"columns {cols[0]}-{cols[1]}); replace them (e.g. numpy.nan_to_num) and save it again"
            )
        out = to_model_input(raw, self.channels, self.mean, self.std)
        # a memory-mapped image: drop its pages after every tile. The kernel maps ~64 KB around
        # each page fault, so a tile of a wide image brings in far more than its own bytes.
        drop_pages(self.array)
        return out


def open_image(path: str | os.PathLike, channels: int, mean, std) -> ArraySource:
    """A lazy source for an image file: TIFFs memory-mapped where possible, compressed/tiled TIFFs and
    zarr/OME-Zarr folders read chunk by chunk (``zarr_io.open_lazy``), others decoded once (raw)."""
    from fcnkit.data.io import read_image
    from fcnkit.inference.zarr_io import open_lazy

    lazy = open_lazy(path)
    if lazy is not None:
        return ArraySource(lazy, channels, mean, std, name=str(path))
    return ArraySource(read_image(path, mmap=True), channels, mean, std, name=str(path))


def as_source(image):
    """A tensor, an object with ``shape`` and ``read``, or a raw-free numpy array (already normalised ``C, H, W``)."""
    if isinstance(image, torch.Tensor):
        return TensorSource(image)
    if hasattr(image, "read") and hasattr(image, "shape"):
        return image
    if isinstance(image, np.ndarray) and image.ndim == 3 and np.issubdtype(image.dtype, np.floating):
        return TensorSource(torch.from_numpy(np.ascontiguousarray(image)))
    raise InputError(
        f"image of type {type(image).__name__} is not understood; pass a normalised [C, H, W] tensor, "
        "or fcnkit.inference.open_image(path, channels, mean, std)"
    )
