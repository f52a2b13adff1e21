"""``nuclei``: StarDist's 512 x 512 fluorescence image (uint16, 1 channel), background/nucleus.

One image, so the splits are horizontal bands separated by 40-row gaps. The largest nucleus is
39 px tall, so no nucleus can touch two bands (tests check the instance ids)::

    row   0 +-------------------------------+
            |  train   rows [0, 288)        |  cut into tiles (default 128 x 128, stride 64,
            |  (72 nuclei touch it)         |  plus a last row/column of tiles flush with the
            |                               |  band's edge): 4 x 7 = 28 samples per epoch
    row 288 +- - - - - - gap (unused) - - - +
    row 328 +-------------------------------+
            |  val     rows [328, 408)      |  one sample, 80 x 512 (24 nuclei)
    row 408 +- - - - - - gap (unused) - - - +
    row 448 +-------------------------------+
            |  test    rows [448, 512)      |  one sample, 64 x 512 (23 nuclei)
    row 512 +-------------------------------+

Label 1 where the instance mask is > 0, else 0. mean/std: all pixels of the train band (each once,
whatever the tiling) after uint16 scaling (/65535). The image's values only reach ~235 of 65535;
normalisation makes that harmless, and keeping uint16 means ``fcnkit predict img2d.tif`` sees the
same numbers.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fcnkit.data.base import (
    ArrayDataset,
    DatasetInfo,
    channel_stats,
    check_split,
    resolve_options,
)
from fcnkit.data.sources import stardist_nuclei
from fcnkit.errors import InputError

__all__ = ["NucleiDataset", "REGIONS", "tile_starts"]

# (row0, row1, col0, col1) of each split's band, half-open
REGIONS = {"train": (0, 288, 0, 512), "val": (328, 408, 0, 512), "test": (448, 512, 0, 512)}
DEFAULT_TILE = 128


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets covering ``[0, length)`` with tiles of ``tile`` every ``stride``; the last is flush."""
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


@lru_cache(maxsize=1)
def _nuclei_stats() -> tuple[list[float], list[float]]:
    image, _ = stardist_nuclei()
    r0, r1, c0, c1 = REGIONS["train"]
    return channel_stats([image[r0:r1, c0:c1]], 1)


class NucleiDataset(ArrayDataset):
    """Segmentation samples ``{"image": float32 [1, h, w], "mask": int64 [h, w], "meta"}``.

    Options (train only; val/test are always their whole band): ``tile`` (default 128; ``None`` or
    0 = the whole train band as one sample) and ``stride`` (default ``tile // 2``).
    ``meta["rows"]``/``meta["cols"]`` give the sample's half-open window in the 512 x 512 image.
    """

    def __init__(self, split: str = "train", **options):
        opts = resolve_options("nuclei", options, {"tile": DEFAULT_TILE, "stride": None})
        self.split = check_split(split, "nuclei")
        self._image, instances = stardist_nuclei()
        self._labels = (instances > 0).astype(np.uint8)
        r0, r1, c0, c1 = REGIONS[self.split]
        tile, stride = opts["tile"], opts["stride"]
        if self.split != "train" or not tile:
            self.windows = [(r0, r1, c0, c1)]
        else:
            tile = int(tile)
            stride = tile // 2 if stride is None else int(stride)
            if tile > min(r1 - r0, c1 - c0):
                raise InputError(
                    f"nuclei: tile={tile} is larger than the train band ({r1 - r0} x {c1 - c0}); use tile <= {r1 - r0}"
                )
            if stride < 1:
                raise InputError(f"nuclei: stride={stride} must be >= 1; pass stride=tile // 2 or leave it out")
            self.windows = [
                (r0 + y, r0 + y + tile, c0 + x, c0 + x + tile)
                for y in tile_starts(r1 - r0, tile, stride)
                for x in tile_starts(c1 - c0, tile, stride)
            ]
        mean, std = _nuclei_stats()
        self.info = DatasetInfo(
            name="nuclei",
            task="segmentation",
            num_classes=2,
            in_channels=1,
            class_names=["background", "nucleus"],
            mean=mean,
            std=std,
        )

    def __len__(self) -> int:
        return len(self.windows)

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        a, b, c, d = self.windows[self._index(index)]
        return self._image[a:b, c:d], self._labels[a:b, c:d]

    def _meta(self, index: int) -> dict:
        a, b, c, d = self.windows[index]
        return {"name": f"nuclei/{self.split}/r{a}-{b}_c{c}-{d}", "rows": [a, b], "cols": [c, d]}
