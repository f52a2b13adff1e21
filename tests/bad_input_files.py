"""Builders of bad (and a few good) input files for tests/test_bad_inputs.py, all in a tmp folder.

``Assets(root)`` builds the shared good files once (a tiny checkpoint, a run folder around it, a
folder dataset); every ``bad_*`` function writes one broken variant into the folder it is given
and returns its path.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image


class Evil:
    """Unpickling this would create a file: proof that a loader unpickled what it should not."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


def write_dataset(root: Path, *, n: int = 4, size: int = 16, classes: list[str] | None = None) -> Path:
    """A folder dataset: images/ + masks/ (labels 0/1), train.txt/val.txt, classes.txt."""
    rng = np.random.default_rng(0)
    stems = [f"s{i}" for i in range(n)]
    for i, stem in enumerate(stems):
        mask = np.zeros((size, size), np.uint8)
        mask[4:10, 4 + i % 4 : 10 + i % 4] = 1
        _png(root / "images" / f"{stem}.png", (rng.random((size, size)) * 60 + mask * 150).astype(np.uint8))
        _png(root / "masks" / f"{stem}.png", mask)
    (root / "train.txt").write_text("\n".join(stems[: n // 2]) + "\n")
    (root / "val.txt").write_text("\n".join(stems[n // 2 :]) + "\n")
    (root / "classes.txt").write_text("\n".join(classes or ["background", "square"]) + "\n")
    return root


class Assets:
    """The good files every case starts from (built once per test module)."""

    def __init__(self, root: Path):
        from fcnkit.checkpoint import save_checkpoint
        from fcnkit.engine.config import TrainConfig, save_config
        from fcnkit.models.registry import build_model

        self.root = root
        self.data = write_dataset(root / "data")
        torch.manual_seed(0)
        model = build_model("allconv", num_classes=2, in_channels=1, width=4, stages=2)
        train = {"data": str(self.data), "model": "allconv"}
        self.config = {
            "task": "segmentation",
            "num_classes": 2,
            "in_channels": 1,
            "classes": ["background", "square"],
            "palette": [[0, 0, 0], [255, 0, 0]],
            "normalization": {"mean": [0.2], "std": [0.25]},
            "train": train,
        }
        self.ckpt = save_checkpoint(root / "ckpt", model, dict(self.config))
        self.run = root / "run"
        shutil.copytree(self.ckpt, self.run / "best")
        save_config(
            TrainConfig(
                data=str(self.data),
                model="allconv",
                model_options={"width": 4, "stages": 2},
                out=str(self.run),
                epochs=1,
                device="cpu",
            ),
            self.run / "config.yaml",
        )
        torch.save({"state_dict": {k: v for k, v in model.state_dict().items()}, "epoch": 0}, self.run / "trainer.ckpt")
        self.image = _png(root / "images" / "good.png", (np.arange(256).reshape(16, 16) % 200).astype(np.uint8))
        self.weights = root / "resnet18_bad_head.pth"

    # --- checkpoints ---------------------------------------------------------------------------
    def checkpoint_with(self, folder: Path, edit=None, weights=None) -> Path:
        """A copy of the good checkpoint; ``edit(config)`` changes config.json, ``weights(state)`` the tensors."""
        from safetensors.torch import load_file, save_file

        shutil.copytree(self.ckpt, folder)
        if edit is not None:
            config = json.loads((folder / "config.json").read_text())
            result = edit(config)
            text = result if isinstance(result, (str, bytes)) else json.dumps(config if result is None else result)
            (folder / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
        if weights is not None:
            state = load_file(str(folder / "model.safetensors"))
            result = weights(state)
            if isinstance(result, bytes):
                (folder / "model.safetensors").write_bytes(result)
            else:
                save_file(state if result is None else result, str(folder / "model.safetensors"))
        return folder

    def run_with(self, folder: Path, trainer_bytes: bytes | None = None, trainer_obj=None) -> Path:
        """A copy of the run folder with another trainer.ckpt."""
        shutil.copytree(self.run, folder)
        if trainer_bytes is not None:
            (folder / "trainer.ckpt").write_bytes(trainer_bytes)
        if trainer_obj is not None:
            torch.save(trainer_obj, folder / "trainer.ckpt")
        return folder

    def dataset_with(self, folder: Path, edit) -> Path:
        """A copy of the good dataset, changed by ``edit(folder)``."""
        shutil.copytree(self.data, folder)
        edit(folder)
        return folder


# --- bad image files -----------------------------------------------------------------------------
def png_bomb(path: Path, width: int = 60000, height: int = 60000) -> Path:
    """A PNG whose header claims ``width x height`` pixels (a few bytes of data): a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def truncated(path: Path, source: Path, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def garbage(path: Path, n: int = 200) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8)))
    return path


def tiff(path: Path, array: np.ndarray, **kw) -> Path:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, **kw)
    return path


def float_tiff(path: Path, value: float) -> Path:
    arr = np.full((16, 16), 0.5, np.float32)
    arr[3, 5] = value
    return tiff(path, arr)


def symlink_loop(folder: Path, name: str) -> Path:
    a, b = folder / name, folder / f"{Path(name).stem}_b{Path(name).suffix}"
    os.symlink(b.name, a)
    os.symlink(a.name, b)
    return a


def user_folder(path: Path) -> Path:
    """A folder holding a file of the user's (fcnkit must not delete or write into it)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "thesis.tex").write_text("years of work\n")
    return path
