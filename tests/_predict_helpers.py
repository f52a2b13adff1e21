"""Tiny models and checkpoints shared by the predict tests (Dask, zarr, registry, staged, convert):
one definition of the 3-class checkpoint config, of the "score layers start at zero" fix-up and of
the small conv stack the tiled/convert tests build on."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fcnkit.checkpoint import CheckpointConfig, save_checkpoint


def abc_config(mean, std) -> dict:
    """The checkpoint config of a 3-class RGB segmentation run (classes a, b, c)."""
    return {
        "task": "segmentation",
        "num_classes": 3,
        "in_channels": 3,
        "classes": ["a", "b", "c"],
        "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]],
        "normalization": {"mean": list(mean), "std": list(std)},
    }


def save_abc_run(folder: Path, model: nn.Module, mean, std) -> Path:
    """Save ``model`` as ``folder/run/best`` with :func:`abc_config`; returns the run folder."""
    return save_checkpoint(folder / "run" / "best", model, abc_config(mean, std)).parent


def save_grey_run(folder: Path, trained: dict) -> Path:
    """``folder/run/best``: an untrained 1-channel, 2-class allconv (classes bg, fg; mean 0.4, std 0.2)
    whose checkpoint records ``trained`` as its training images' statistics (``input``); returns the run."""
    from types import SimpleNamespace

    from fcnkit.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("allconv", num_classes=2, in_channels=1, width=4)
    info = SimpleNamespace(
        task="segmentation",
        num_classes=2,
        in_channels=1,
        class_names=["bg", "fg"],
        palette=[[0, 0, 0], [255, 0, 0]],
        mean=[0.4],
        std=[0.2],
    )
    cfg = CheckpointConfig.from_info(model.fcnkit_spec, info, input=dict(trained))
    return save_checkpoint(folder / "run" / "best", model, cfg).parent


def randomise_zero_parameters(model: nn.Module, std: float, *, weights_only: bool = False) -> nn.Module:
    """Random normal values for the parameters that start at all zeros (FCN's score layers; with
    ``weights_only`` not the biases): otherwise every logit is 0 and equalities hold trivially."""
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0 and (p.dim() > 1 or not weights_only):
                p.normal_(0, std)
    return model


def tiny_conv_features() -> list[nn.Module]:
    """Two padded 3x3 conv + ReLU + 2x2 max-pool stages, RGB -> 4 channels at stride 4."""
    return [
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    ]
