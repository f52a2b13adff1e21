"""A tiny run and images for the serve tests (no training: an untrained
allconv with widened random weights, so its labels vary from pixel to pixel)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

import fcnkit
from fcnkit.checkpoint import CheckpointConfig, model_spec, save_checkpoint
from fcnkit.data.io import to_model_input, voc_palette

CLASSES = ["background", "ring", "blob", "edge"]
MEAN, STD = [0.5], [0.25]


def make_run(folder: Path, seed: int, classes=CLASSES) -> Path:
    torch.manual_seed(seed)
    model = fcnkit.build_model("allconv", num_classes=4, in_channels=1, width=4, stages=2).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=0.15)
    config = CheckpointConfig(
        model=model_spec(model),
        task="segmentation",
        num_classes=4,
        in_channels=1,
        classes=list(classes),
        palette=voc_palette(4),
        normalization={"mean": MEAN, "std": STD},
    ).to_dict()
    save_checkpoint(folder / "best", model, config)
    return folder


def make_image(path: Path, shape=(48, 60), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    img = (127 + 100 * np.sin(x / 5.0) * np.cos(y / 7.0) + rng.normal(0, 20, shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)
    return img


def expected_labels(run: Path, image: np.ndarray) -> np.ndarray:
    """What fcnkit.predict says, whole image: the reference for the page."""
    model, _ = fcnkit.load_checkpoint(run)
    return fcnkit.predict(model, to_model_input(image, 1, MEAN, STD)).argmax(0).numpy()
