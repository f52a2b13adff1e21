"""GeoTIFF georeference passthrough: the tags that place an input TIFF on the Earth, copied onto its mask.

Read with tifffile only (the stack's TIFF library; rasterio/GDAL are not needed): the GeoTIFF 1.x
tags of the first page,

    33550 ModelPixelScaleTag     (sx, sy, sz): ground units per pixel
    33922 ModelTiepointTag       (I, J, K, X, Y, Z)...: raster point (I, J) lies at (X, Y)
    34264 ModelTransformationTag 4x4 raster -> model matrix (instead of scale + tiepoint)
    34735 GeoKeyDirectoryTag     the CRS (e.g. ProjectedCSTypeGeoKey 3072 = EPSG code)
    34736 GeoDoubleParamsTag     doubles the key directory points into
    34737 GeoAsciiParamsTag      strings the key directory points into

are returned as tifffile ``extratags`` tuples and written unchanged onto a mask of the same size
(``fcnkit predict`` writes masks at the input's size, also after ``--scale``/``--resize``).
GDAL_NODATA (42113) and GDAL_METADATA (42112) are not copied: a label map has no nodata value and
GDAL's statistics of the input do not describe it. :func:`rescale_geo_tags` adapts the tags to an
output grid of another size; :func:`georeference` gives a JSON-able summary (zarr attributes).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GEO_TAGS", "ZARR_KEY", "add_georeference", "geo_tags", "georeference", "rescale_geo_tags"]

PIXEL_SCALE, TIEPOINT, TRANSFORMATION = 33550, 33922, 34264
GEO_KEYS, GEO_DOUBLES, GEO_ASCII = 34735, 34736, 34737
GEO_TAGS = (PIXEL_SCALE, TIEPOINT, TRANSFORMATION, GEO_KEYS, GEO_DOUBLES, GEO_ASCII)
PLACING_TAGS = (PIXEL_SCALE, TIEPOINT, TRANSFORMATION)  # without one of these, a CRS alone places nothing
ZARR_KEY = "fcnkit:georeference"  # the zarr attribute that carries georeference() in OME-Zarr outputs
_RASTER_TYPE_KEY, _PIXEL_IS_POINT = 1025, 2
_NAMES = {
    PIXEL_SCALE: "model_pixel_scale",
    TIEPOINT: "model_tiepoint",
    TRANSFORMATION: "model_transformation",
    GEO_KEYS: "geo_key_directory",
    GEO_DOUBLES: "geo_double_params",
    GEO_ASCII: "geo_ascii_params",
}

TagTuple = tuple[int, int, int, Any, bool]


def geo_tags(path: str | os.PathLike) -> list[TagTuple] | None:
    """The GeoTIFF tags of the first page of ``path`` as tifffile ``extratags`` tuples
    ``(code, dtype, count, value, writeonce)``; None for a non-TIFF (PNG, zarr folder, ...), an
    unreadable TIFF (its reader reports that) or a TIFF without a georeference."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return None
    import tifffile

    out: list[TagTuple] = []
    with contextlib.suppress(Exception), tifffile.TiffFile(path) as tif:  # broken files: open_image says why
        tags = tif.pages.first.tags
        for code in GEO_TAGS:
            tag = tags.get(code)
            if tag is None:
                continue
            value = tag.value
            if int(tag.dtype) == 2:  # ASCII: tifffile recounts it (with the terminating NUL) when writing
                out.append((code, 2, 0, str(value), True))
            else:
                values = tuple(np.ravel(np.asarray(value)).tolist())
                out.append((code, int(tag.dtype), len(values), values, True))
    if not any(t[0] in PLACING_TAGS for t in out):
        return None
    return out


def _values(tags: list[TagTuple], code: int):
    return next((t[3] for t in tags if t[0] == code), None)


def _pixel_is_point(tags: list[TagTuple]) -> bool:
    keys = _values(tags, GEO_KEYS) or ()
    for i in range(4, len(keys) - 3, 4):  # header of 4 shorts, then (key, location, count, value)
        if keys[i] == _RASTER_TYPE_KEY and keys[i + 1] == 0:
            return keys[i + 3] == _PIXEL_IS_POINT
    return False


def rescale_geo_tags(tags: list[TagTuple], src_size: tuple[int, int], dst_size: tuple[int, int]) -> list[TagTuple]:
    """``tags`` of an ``src_size`` (H, W) raster, adapted to the same extent resampled to ``dst_size``:
    pixel scale times the pixel size ratio, tiepoint raster coordinates and the transformation's
    raster columns divided by it (pixel centres stay centres for PixelIsPoint rasters)."""
    fy, fx = src_size[0] / dst_size[0], src_size[1] / dst_size[1]  # input pixels per output pixel
    point = _pixel_is_point(tags)

    def raster(i: float, f: float) -> float:  # an input raster coordinate on the output grid
        return (i + 0.5) / f - 0.5 if point else i / f

    out: list[TagTuple] = []
    for code, dtype, count, value, once in tags:
        if code == PIXEL_SCALE:
            value = (value[0] * fx, value[1] * fy, *value[2:])
        elif code == TIEPOINT:
            value = tuple(
                v
                for k in range(0, len(value), 6)
                for v in (raster(value[k], fx), raster(value[k + 1], fy), *value[k + 2 : k + 6])
            )
        elif code == TRANSFORMATION:
            m = np.asarray(value, dtype=np.float64).reshape(4, 4)
            shift = 0.5 * (fx - 1) * m[:, 0] + 0.5 * (fy - 1) * m[:, 1] if point else 0.0
            m = m @ np.diag([fx, fy, 1.0, 1.0])
            m[:, 3] += shift
            value = tuple(m.ravel().tolist())
        out.append((code, dtype, count, value, once))
    return out


def georeference(tags: list[TagTuple]) -> dict[str, Any]:
    """A JSON-able summary of ``tags``: each tag's values by name and, where scale + one tiepoint or
    a transformation place the raster, ``geotransform`` in GDAL order
    ``(x0, dx/dcol, dx/drow, y0, dy/dcol, dy/drow)`` for the top-left pixel corner."""
    out: dict[str, Any] = {_NAMES[code]: (list(v) if not isinstance(v, str) else v) for code, _, _, v, _ in tags}
    scale, ties, matrix = _values(tags, PIXEL_SCALE), _values(tags, TIEPOINT), _values(tags, TRANSFORMATION)
    half = 0.5 if _pixel_is_point(tags) else 0.0  # PixelIsPoint: raster (0, 0) is the first pixel's centre
    if matrix is not None:
        m = np.asarray(matrix, dtype=np.float64).reshape(4, 4)
        x0, y0 = m[0, 3] - half * (m[0, 0] + m[0, 1]), m[1, 3] - half * (m[1, 0] + m[1, 1])
        out["geotransform"] = [x0, m[0, 0], m[0, 1], y0, m[1, 0], m[1, 1]]
    elif scale is not None and ties is not None and len(ties) == 6:
        i, j, _, x, y, _ = ties
        x0, y0 = x - (i + half) * scale[0], y + (j + half) * scale[1]
        out["geotransform"] = [x0, scale[0], 0.0, y0, 0.0, -scale[1]]
    return out


def add_georeference(zarr_group, tags: list[TagTuple] | None) -> bool:
    """Store :func:`georeference` of ``tags`` as the ``"fcnkit:georeference"`` attribute of a zarr
    group (or the path of one, e.g. an OME-Zarr label pyramid); nothing for ``tags=None``.
    Returns whether it did."""
    if not tags:
        return False
    if isinstance(zarr_group, (str, os.PathLike)):
        import zarr

        zarr_group = zarr.open_group(str(zarr_group), mode="r+")
    zarr_group.attrs[ZARR_KEY] = georeference(tags)
    return True
