"""Building blocks: conv blocks and downsampling layers.

Downsampling kinds (all halve the grid, so the effective stride is ``2 ** count``):

    "maxpool"      MaxPool2d(2, 2)
    "avgpool"      AvgPool2d(2, 2)
    "strided"      a learned Conv2d(C, C, 2, stride 2) + norm + ReLU: the All Convolutional Net's
                   replacement of a pool by a convolution with the same footprint, so the
                   receptive field and the cell centres are those of the 2x2 pool
    "strided-only" no layer at all: the model builder raises the stride of the conv that precedes
                   the pool to 2 (fewer layers, a 3x3 stride-2 conv; cells centred differently)
    "none"         no downsampling (stride 1)

All layers are plain ``nn.Conv2d`` / ``nn.MaxPool2d`` / ``nn.AvgPool2d`` / norm / ``nn.ReLU``
modules in ``nn.Sequential`` containers, so tools that walk a model (receptive-field analysis,
pooling <-> strided surgery) see them.
"""

from __future__ import annotations

import math

from torch import nn

from fcnkit.models.registry import check_choice

__all__ = ["NORMS", "PADDINGS", "DOWNSAMPLE_KINDS", "conv_block", "downsample", "make_norm"]

NORMS = ("batch", "group", "none")
PADDINGS = ("same", "valid")
DOWNSAMPLE_KINDS = ("maxpool", "avgpool", "strided", "strided-only", "none")


def make_norm(norm: str, channels: int) -> nn.Module:
    """``"batch"`` -> BatchNorm2d, ``"group"`` -> GroupNorm (8 groups, or fewer if C is not divisible),
    ``"none"`` -> Identity."""
    check_choice("norm", norm, NORMS)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    return nn.Identity()


def conv_block(
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: int = 3,
    stride: int = 1,
    padding: str = "same",
    norm: str = "batch",
) -> nn.Sequential:
    """``Conv2d -> norm -> ReLU``. ``padding="same"`` pads ``(k - 1) // 2`` (keeps the size at stride 1),
    ``"valid"`` pads nothing.

    The conv has no bias when a norm follows (the norm's shift replaces it).
    """
    check_choice("padding", padding, PADDINGS)
    pad = (kernel_size - 1) // 2 if padding == "same" else 0
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=pad, bias=norm == "none")
    return nn.Sequential(conv, make_norm(norm, out_channels), nn.ReLU(inplace=True))


def downsample(kind: str, channels: int, *, norm: str = "batch") -> nn.Module:
    """A layer that halves the grid: ``"maxpool"``, ``"avgpool"``, ``"strided"`` (see module docstring).

    ``"none"`` gives ``nn.Identity``; ``"strided-only"`` has no layer of its own (the builder
    raises the stride of the preceding conv instead) and is rejected here.
    """
    kinds = [k for k in DOWNSAMPLE_KINDS if k != "strided-only"]
    if kind == "strided-only":
        raise ValueError("'strided-only' has no layer: raise the stride of the preceding conv instead")
    check_choice("downsample", kind, kinds)
    if kind == "maxpool":
        return nn.MaxPool2d(2, 2)
    if kind == "avgpool":
        return nn.AvgPool2d(2, 2)
    if kind == "strided":
        return conv_block(channels, channels, kernel_size=2, stride=2, padding="valid", norm=norm)
    return nn.Identity()
