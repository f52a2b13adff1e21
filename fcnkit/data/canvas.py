"""``digit-canvas``: real MNIST digits pasted on a blank canvas, labelled per pixel (11 classes).

Each canvas (grey uint8, default 64 x 84 = H x W) holds 1 to 3 digits drawn from the SAME split of
``digits`` (so train/val/test canvases never share a source digit), each pasted whole at a random
position inside the canvas::

    +------------------------------------+   image: pixelwise max of the pasted digits
    |   +------+                         |   mask : 0 = background, k + 1 = digit k, set where
    |   |  3   |      +------+           |          THAT digit's intensity > 0.5 (> 127.5 of 255,
    |   +------+   +--|--+   |           |          i.e. >= 128); a later digit overwrites an
    |              |  7  | 1 |           |          earlier one's label where it is itself > 0.5
    |              +-----+---+           |
    +------------------------------------+

Generation is seeded (``seed``) and vectorised over canvases. Every random quantity has its own
stream spawned from ``SeedSequence([seed, split])``, so canvas ``i`` is the same whatever ``count``.
mean/std come from the default 2,000 training canvases of the same ``size`` and ``seed``, so they
are the same for every split and every ``count``.
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
from fcnkit.data.digits import digit_split
from fcnkit.data.sources import mnist_5k
from fcnkit.errors import InputError

__all__ = ["DigitCanvasDataset", "make_canvases", "paste_digits", "DEFAULT_SIZE", "DEFAULT_COUNTS", "LABEL_THRESHOLD"]

DEFAULT_SIZE = (64, 84)
DEFAULT_COUNTS = {"train": 2000, "val": 300, "test": 300}
DEFAULT_SEED = 0
MAX_DIGITS = 3
DIGIT = 28
LABEL_THRESHOLD = 127  # label where intensity > 127, i.e. > 127.5 of 255 for integer pixels
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
CLASS_NAMES = ["background"] + [str(k) for k in range(10)]


@lru_cache(maxsize=16)
def make_canvases(split: str, size: tuple[int, int], count: int, seed: int):
    """Generate ``count`` canvases; returns read-only arrays.

    ``images`` uint8 ``(N, H, W)``, ``masks`` uint8 ``(N, H, W)``, ``sources`` int64 ``(N, 3)``
    (rows of mnist_5k, -1 for unused slots, in paste order) and ``positions`` int64 ``(N, 3, 2)``
    (top-left ``(y, x)`` of each pasted digit).
    """
    digits, labels = mnist_5k()
    pool = digit_split(split)
    h, w = size
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, _SPLIT_CODE[split]]).spawn(4)]
    n_digits = streams[0].integers(1, MAX_DIGITS + 1, size=count)
    sources = pool[streams[1].integers(0, len(pool), size=(count, MAX_DIGITS))]
    ys = streams[2].integers(0, h - DIGIT + 1, size=(count, MAX_DIGITS))
    xs = streams[3].integers(0, w - DIGIT + 1, size=(count, MAX_DIGITS))
    sources[np.arange(MAX_DIGITS)[None, :] >= n_digits[:, None]] = -1

    images = np.zeros((count, h, w), dtype=np.uint8)
    masks = np.zeros((count, h, w), dtype=np.uint8)
    for slot in range(MAX_DIGITS):  # one vectorised paste per slot: each canvas appears once
        m = np.flatnonzero(sources[:, slot] >= 0)
        src = sources[m, slot]
        paste_digits(images, masks, m, digits[src], labels[src] + 1, ys[m, slot], xs[m, slot])
    positions = np.stack([ys, xs], axis=-1)
    positions[sources < 0] = -1
    for a in (images, masks, sources, positions):
        a.setflags(write=False)
    return images, masks, sources, positions


def paste_digits(images, masks, which, digits, classes, ys, xs) -> None:
    """Paste ``digits[j]`` (uint8 ``(M, h, w)``) into canvas ``which[j]`` at top-left ``(ys[j], xs[j])``.

    In place, vectorised over ``j`` (each canvas at most once per call): ``images`` takes the
    pixelwise max; ``masks`` takes ``classes[j]`` where the digit's own pixel is > LABEL_THRESHOLD
    and keeps its old label elsewhere, so a later paste overwrites an earlier one only where the
    later digit is itself bright.
    """
    digits = np.asarray(digits)
    n = np.asarray(which)[:, None, None]
    rows = np.asarray(ys)[:, None, None] + np.arange(digits.shape[1])[None, :, None]
    cols = np.asarray(xs)[:, None, None] + np.arange(digits.shape[2])[None, None, :]
    images[n, rows, cols] = np.maximum(images[n, rows, cols], digits)
    cls = np.asarray(classes).astype(masks.dtype)[:, None, None]
    masks[n, rows, cols] = np.where(digits > LABEL_THRESHOLD, cls, masks[n, rows, cols])


def _parse_size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"digit-canvas: size={size!r} is not (H, W); pass size=(64, 84) or a single int") from None
    if h < DIGIT or w < DIGIT:
        raise InputError(f"digit-canvas: size={size!r} is smaller than a {DIGIT}x{DIGIT} digit; use H, W >= {DIGIT}")
    return h, w


def _int_option(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"digit-canvas: {name}={value!r} must be an integer >= {minimum}")
    return int(value)


@lru_cache(maxsize=8)
def _canvas_stats(size: tuple[int, int], seed: int) -> tuple[list[float], list[float]]:
    images = make_canvases("train", size, DEFAULT_COUNTS["train"], seed)[0]
    return channel_stats([images.reshape(-1, images.shape[-1])], 1)


class DigitCanvasDataset(ArrayDataset):
    """Segmentation samples ``{"image": float32 [1, H, W], "mask": int64 [H, W], "meta"}``.

    Options: ``size=(H, W)`` (default 64 x 84), ``count`` (canvases in this split; default 2000 for
    train, 300 for val and test), ``seed`` (default 0). ``meta`` records ``digits`` (rows of
    mnist_5k used, paste order), ``digit_labels`` and ``positions`` (top-left ``[y, x]``).
    """

    def __init__(self, split: str = "train", **options):
        opts = resolve_options("digit-canvas", options, {"size": DEFAULT_SIZE, "count": None, "seed": DEFAULT_SEED})
        self.split = check_split(split, "digit-canvas")
        self.size = _parse_size(opts["size"])
        count = DEFAULT_COUNTS[self.split] if opts["count"] is None else opts["count"]
        self.count = _int_option("count", count, 1)
        self.seed = _int_option("seed", opts["seed"], 0)
        self._images, self._masks, self._sources, self._positions = make_canvases(
            self.split, self.size, self.count, self.seed
        )
        self._labels = mnist_5k()[1]
        mean, std = _canvas_stats(self.size, self.seed)
        self.info = DatasetInfo(
            name="digit-canvas",
            task="segmentation",
            num_classes=11,
            in_channels=1,
            class_names=list(CLASS_NAMES),
            mean=mean,
            std=std,
        )

    def __len__(self) -> int:
        return self.count

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        i = self._index(index)
        return self._images[i], self._masks[i]

    def _meta(self, index: int) -> dict:
        used = self._sources[index] >= 0
        sources = self._sources[index][used]
        return {
            "name": f"digit-canvas/{self.split}/{index:05d}",
            "digits": [int(s) for s in sources],
            "digit_labels": [int(self._labels[s]) for s in sources],
            "positions": [[int(y), int(x)] for y, x in self._positions[index][used]],
        }
