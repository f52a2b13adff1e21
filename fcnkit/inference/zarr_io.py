"""Huge images in and out: lazy zarr / OME-Zarr / compressed tiled TIFF input, zarr and OME-Zarr output.

Input (:func:`open_lazy`): a zarr array or OME-Zarr image folder, or a TIFF that cannot be
memory-mapped (compressed or tiled: ``tifffile.aszarr`` decodes only the chunks a tile touches),
seen as an ``(H, W)`` or ``(H, W, C)`` array that is read slice by slice - what
:class:`~fcnkit.inference.sources.ArraySource` normalises tile by tile.

Output: :class:`ZarrSink` streams float32 logits/probabilities ``[K, H, W]`` into a zarr array
(chunks of ``CHUNK`` pixels); :func:`write_label_pyramid` writes a label map as an OME-Zarr
(NGFF 0.4, zarr format 2: what napari-ome-zarr, vizarr and Fiji's MoBIE read) multiscale
pyramid, every level half the previous one (nearest: a label stays a label), with the palette as
``image-label`` colours::

    NAME_mask.ome.zarr/   .zattrs: multiscales (axes y, x; scale 1, 2, 4, ...), image-label colours
        0/  H x W         uint8, chunks CHUNK x CHUNK
        1/  H/2 x W/2
        ...               until a level fits in one chunk
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcnkit.errors import InputError

__all__ = ["CHUNK", "LazyArray", "ZarrSink", "finish_label_pyramid", "open_lazy", "write_label_pyramid"]

CHUNK = 512
_TIFF = (".tif", ".tiff")


class LazyArray:
    """A zarr array seen as ``(H, W)`` or ``(H, W, C)``: ``axes`` maps those to the stored axes."""

    def __init__(self, array, axes: tuple[int, ...], fixed: dict[int, int], store=None):
        self.array, self.axes, self.fixed = array, axes, fixed
        self._store = store  # a tifffile.aszarr store holds the file open: closed with this array
        self.shape = tuple(int(array.shape[a]) for a in axes)
        self.ndim = len(axes)
        self.dtype = np.dtype(array.dtype)

    def __getitem__(self, index) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        index = index + (slice(None),) * (self.ndim - len(index))
        full: list[slice | int] = [slice(None)] * self.array.ndim
        for axis, value in self.fixed.items():
            full[axis] = value
        for a, item in zip(self.axes, index):
            full[a] = item
        out = np.asarray(self.array[tuple(full)])
        kept = [a for a in range(self.array.ndim) if not isinstance(full[a], int)]  # stored order
        order = [kept.index(a) for a in self.axes if a in kept]
        return np.transpose(out, order) if order != sorted(order) else out

    def close(self) -> None:
        """Close the file behind the array (TIFF); zarr folders hold nothing open."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def __array__(self, dtype=None, copy=None):
        out = self[tuple(slice(None) for _ in range(self.ndim))]
        return out.astype(dtype) if dtype is not None else out


def _ome_axes(group) -> tuple[object, list[str]]:
    ms = group.attrs.get("multiscales")
    if not ms:
        raise InputError(
            f"{group.store}: zarr group without OME-Zarr 'multiscales'; point at an array or an OME-Zarr image"
        )
    ms = ms[0]
    names = [a["name"] if isinstance(a, dict) else a for a in ms.get("axes", ["t", "c", "z", "y", "x"])]
    return group[ms["datasets"][0]["path"]], names


def _as_hwc(array, names: list[str] | None, path) -> LazyArray:
    nd = array.ndim
    if names is None:  # a plain array: (H, W), (H, W, C) or (C, H, W) with few channels
        if nd == 2:
            return LazyArray(array, (0, 1), {})
        if nd == 3:
            return LazyArray(array, (0, 1, 2) if array.shape[2] <= 4 < array.shape[0] else (1, 2, 0), {})
        raise InputError(f"{path}: zarr array has shape {array.shape}; fcnkit reads (H, W), (H, W, C) or (C, H, W)")
    fixed = {}
    for i, n in enumerate(names):
        if n not in ("y", "x", "c"):
            if array.shape[i] != 1:
                raise InputError(f"{path}: axis '{n}' has {array.shape[i]} planes; save one 2-D plane (t, z of size 1)")
            fixed[i] = 0
    axes = tuple(names.index(n) for n in ("y", "x") if n in names)
    if len(axes) != 2:
        raise InputError(f"{path}: OME-Zarr axes {names} have no y and x")
    if "c" in names:
        axes = axes + (names.index("c"),)
    return LazyArray(array, axes, fixed)


def open_lazy(path: str | os.PathLike):
    """A lazily read ``(H, W[, C])`` array for zarr/OME-Zarr folders and compressed/tiled TIFFs;
    None for anything else (and for TIFFs that can be memory-mapped: they already are lazy)."""
    path = Path(path)
    is_zarr = path.is_dir() and any((path / f).exists() for f in ("zarr.json", ".zarray", ".zgroup"))
    if is_zarr:
        import zarr

        node = zarr.open(str(path), mode="r")
        if isinstance(node, zarr.Group):
            array, names = _ome_axes(node)
            return _as_hwc(array, names, path)
        return _as_hwc(node, None, path)
    if path.suffix.lower() not in _TIFF or not path.is_file():
        return None
    import tifffile

    with contextlib.suppress(Exception):  # compressed or tiled: not memory-mappable, read through aszarr
        tifffile.memmap(path, mode="r")
        return None  # uncompressed and contiguous: memory-mapped by read_image
    import zarr

    try:
        store = tifffile.imread(path, aszarr=True, level=0)
        array = zarr.open(store, mode="r")
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types for broken files
        raise InputError(
            f"{path}: cannot decode TIFF ({str(exc).splitlines()[0][:120]}); the file is corrupt or truncated, "
            "re-export it"
        ) from None
    if isinstance(array, zarr.Group):
        array = array["0"]  # a pyramid (OME-TIFF levels): level 0
    shape = tuple(array.shape)  # type: ignore[union-attr]  # level 0 of a TIFF store is an array
    planar = len(shape) == 3 and shape[0] <= 4 < shape[-1]  # (C, H, W)
    try:
        _check_decode_unit(path, array, planar)
        lazy = LazyArray(array, (1, 2, 0), {}) if planar else _as_hwc(array, None, path)
    except BaseException:
        store.close()
        raise
    lazy._store = store
    return lazy


def _check_decode_unit(path: Path, array, planar: bool) -> None:
    """A compressed TIFF is decoded one chunk (tile or strip) at a time: refuse one whose chunk is
    bigger than the in-memory decode limit of :mod:`fcnkit.data.io` (a decompression bomb, or one
    huge strip that would be decoded whole)."""
    from fcnkit.data import io

    chunk = tuple(int(c) for c in array.chunks)
    pixels = int(np.prod(chunk[1:] if planar else chunk[:2]))
    if pixels > io.TIFF_MAX_DECODED_PIXELS:
        raise InputError(
            f"{path}: compressed TIFF with a {'x'.join(map(str, chunk))} chunk would be decoded whole "
            f"({pixels / 1e6:.3g} Mpx > {io.TIFF_MAX_DECODED_PIXELS / 1e6:.3g} Mpx); save it with small tiles "
            "(tifffile.imwrite(..., tile=(1024, 1024))) or uncompressed, and predict it with --tile auto"
        )


class ZarrSink:
    """Streams ``[K, H, W]`` float32 blocks (logits, or probabilities with ``softmax``) into a zarr array."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int], softmax: bool = False, chunk: int = CHUNK):
        import zarr

        self.softmax = softmax
        self.result = zarr.create_array(
            str(path),
            shape=tuple(shape),
            chunks=(shape[0], chunk, chunk),
            dtype="float32",
            zarr_format=2,
            overwrite=True,
        )

    def write(self, rows, cols, block: torch.Tensor) -> None:
        if self.softmax:
            block = torch.softmax(block.float(), dim=0)
        self.result[:, rows[0] : rows[1], cols[0] : cols[1]] = block.detach().float().cpu().numpy()

    def close(self) -> None:
        pass


def write_label_pyramid(path: str | os.PathLike, labels, palette=None, chunk: int = CHUNK, name: str = "labels") -> int:
    """Write ``labels`` (uint8 ``(H, W)``, any sliceable array) as an OME-Zarr label pyramid at ``path``
    (a folder, written as is: wrap it in ``atomic_dir``); returns the number of levels."""
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    h, w = labels.shape
    level = root.create_array("0", shape=(h, w), chunks=(chunk, chunk), dtype="uint8")
    for y in range(0, h, _band(w, chunk)):
        level[y : y + _band(w, chunk)] = np.asarray(labels[y : y + _band(w, chunk)], dtype=np.uint8)
    return finish_label_pyramid(root, palette, chunk, name)


def _band(width: int, chunk: int) -> int:
    return max(chunk, (1 << 24) // max(width, 1) // chunk * chunk)  # rows per write: ~16 Mpx, whole chunks


def finish_label_pyramid(root, palette=None, chunk: int = CHUNK, name: str = "labels") -> int:
    """Add the halved levels ``1, 2, ...`` below an existing level ``"0"`` of the zarr group ``root``
    and the OME-Zarr metadata; returns the number of levels."""
    level, n = root["0"], 1
    while max(level.shape) > chunk:
        prev = level
        hh, ww = (prev.shape[0] + 1) // 2, (prev.shape[1] + 1) // 2
        level = root.create_array(str(n), shape=(hh, ww), chunks=(chunk, chunk), dtype="uint8", overwrite=True)
        band = _band(ww, chunk)
        for y in range(0, hh, band):
            level[y : y + band] = np.asarray(prev[2 * y : 2 * (y + band) : 2, ::2])
        n += 1
    datasets = [
        {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [2.0**i, 2.0**i]}]} for i in range(n)
    ]
    attrs: dict[str, Any] = {
        "multiscales": [
            {
                "version": "0.4",
                "name": name,
                "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                "datasets": datasets,
                "type": "nearest",
            }
        ]
    }
    if palette is not None:
        attrs["image-label"] = {
            "version": "0.4",
            "colors": [{"label-value": i, "rgba": [int(c) for c in rgb] + [255]} for i, rgb in enumerate(palette)],
        }
    root.attrs.update(attrs)
    return n
