"""Shared fixtures."""

import types

import numpy as np
import pytest
import torch

import fcnkit.data


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """fcnkit's user cache (the data-check cache) in a per-test folder, never the real ~/.cache."""
    monkeypatch.setenv("FCNKIT_CACHE_DIR", str(tmp_path_factory.mktemp("fcnkit-cache")))


@pytest.fixture
def one_thread():
    """Tiny ops on one thread: on a busy shared 2-core machine each op with 2 threads waits ~10 ms
    for the thread pool (measured: a tiny conv 12 ms vs 0.01 ms; ResNet-152 at 224 26 s vs under
    1 s). Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- a tiny in-test segmentation dataset, shared by the training tests ---------------------------
SQUARES_INFO = types.SimpleNamespace(
    name="squares",
    task="segmentation",
    num_classes=2,
    in_channels=1,
    class_names=["background", "square"],
    palette=[[0, 0, 0], [255, 0, 0]],
    mean=[0.5],
    std=[0.25],
)


class Squares(torch.utils.data.Dataset):
    """Noise images (uint8) with one bright 6x6 square (class 1), deterministic per seed; ``frame``
    rows at the top are labelled 255 (ignore). Normalised with mean 0.5, std 0.25 like a real dataset."""

    info = SQUARES_INFO

    def __init__(self, n: int, seed: int, size: int = 16, frame: int = 0):
        rng = np.random.default_rng(seed)
        self.items = []
        for _ in range(n):
            mask = np.zeros((size, size), np.int64)
            y, x = rng.integers(frame, size - 6 - frame, 2)
            mask[y : y + 6, x : x + 6] = 1
            image = (rng.random((size, size)) * 60 + mask * 150).astype(np.uint8)
            mask[:frame] = 255
            self.items.append((image, mask))

    def __len__(self):
        return len(self.items)

    def raw(self, i):
        return self.items[i]

    def __getitem__(self, i):
        image, mask = self.items[i]
        x = torch.from_numpy((image.astype(np.float32) / 255 - 0.5) / 0.25)[None]
        return {"image": x, "mask": torch.from_numpy(mask), "meta": {"name": str(i)}}


@pytest.fixture
def squares_data(monkeypatch):
    """Make ``fcnkit.data.load_dataset`` return :class:`Squares`: ``squares_data(train=8, val=4, **kw)``."""

    def use(train: int = 8, val: int = 4, **kw):
        monkeypatch.setattr(
            fcnkit.data,
            "load_dataset",
            lambda name, split="train", **_: Squares(
                train if split == "train" else val, 0 if split == "train" else 1, **kw
            ),
            raising=False,
        )

    return use
