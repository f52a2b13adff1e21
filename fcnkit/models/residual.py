"""Residual all-convolutional nets (``resallconv``, ``resallconv_cls``): three ways for a skip
connection to cross a drop in resolution (ResNet's 1x1 projection vs FishNet's pooling).

Body: the ``allconv`` stem (``stem_depth`` conv blocks at full resolution, no skip), then
``stages`` stages of ``depth`` residual blocks. A block is two 3x3 convs (conv -> norm -> ReLU,
conv -> norm) plus a skip path, merged, then ReLU (ResNet's basic block). Stage ``i`` has
``width * 2 ** min(i, 3)`` channels. The FIRST block of every stage halves the grid and grows the
channels ``C -> C'``: its main path starts with the ``downsample`` layer and its skip path is
``skip_downsample``; the other blocks keep grid and channels and have an identity skip in every
variant, so the variants differ only where resolution drops::

      x [C, n x n]
      |-- main:  [downsample] -> conv 3x3 (C -> C') -> conv 3x3 (C' -> C' or C' - C) ------ F(x)
      |          "strided-only": the first conv has stride 2 (ResNet; the default)
      |          "maxpool" / "avgpool": a 2x2 pool first;  "strided": a learned 2x2 stride-2 conv first
      |-- skip:  "conv1x1"      1x1 conv, stride 2, C -> C', + norm          ResNet's projection ("I-conv")
      |          "pool"         2x2 max-pool; channels C -> C' by ZERO-PADDING  FishNet-style, no weights
      |          "pool-concat"  2x2 max-pool; channels by CONCATENATION: F(x) gives the C' - C new ones
      v
      out = relu(F(x) + skip)                 "conv1x1", "pool"
      out = relu(cat[pool(x), F(x)])          "pool-concat" (the pooled input passes on untouched)

FishNet (Sun et al., NeurIPS 2018) argues that the projection on the skip ("isolated
convolution") hinders the direct propagation of gradients to shallow layers; with "pool" and
"pool-concat" the only operation between a block's input and output on the skip path is a
max-pool. Where the channels do not grow (stages beyond 3, capped at ``8 * width``), "pool-concat"
has nothing to concatenate and is "pool" (identity channels); "conv1x1" projects only where the
grid or the channels change. "pool-concat" has fewer parameters (its second conv is narrower).

Grids: every halving maps ``n`` cells to ``ceil(n / 2)`` on both paths (pools with
``ceil_mode=True``, the 2x2 strided conv after one zero row/column at the bottom/right, the
stride-2 3x3 conv with padding 1, the stride-2 1x1 conv), so the merge is defined at every input
size, odd sizes included. Padding is "same" only: with "valid" convolutions the main path shrinks
and the skip would need a crop (use ``allconv`` for valid nets). Centres: a 2x2 pool cell is
centred on input pixel ``2i + 1/2``, a stride-2 1x1 or 3x3 conv cell on ``2i``; a block's window
is the union of its two paths' windows, as ``fcnkit.receptive_field`` traces it from the real
operations (the model's ``receptive_field``/``stride``/``offset`` and its feature taps come from
that trace).

Heads and outputs are ``allconv``'s (``output="dense" | "coarse"``, FCN-style score ``skips``,
global average pooling for ``resallconv_cls``); see :mod:`fcnkit.models.allconv`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from fcnkit.errors import InputError
from fcnkit.geometry import Geometry, receptive_field
from fcnkit.geometry.features import tap_geometry
from fcnkit.models._builders import SEGMENTER_HEAD, model_builder
from fcnkit.models.allconv import AllConvClassifier, AllConvNet
from fcnkit.models.blocks import DOWNSAMPLE_KINDS, NORMS, conv_block, make_norm
from fcnkit.models.features import FeatureInfo, FeatureTap
from fcnkit.models.registry import check_choice, check_int, register

__all__ = [
    "ResidualBlock",
    "ResAllConvNet",
    "ResAllConvClassifier",
    "residual_body",
    "resallconv",
    "resallconv_cls",
    "SKIP_DOWNSAMPLE_KINDS",
]

SKIP_DOWNSAMPLE_KINDS = ("conv1x1", "pool", "pool-concat")


class ResidualBlock(nn.Module):
    """One residual block (module docstring): ``main`` and ``skip`` are ``nn.Sequential`` chains
    (``skip`` empty = identity); the skip is zero-padded (``pad_channels``) or concatenated
    (``concat``) when the channels grow without a projection.

    ``downsample=None`` (or ``"none"``) keeps the grid.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, downsample: str | None, skip_downsample: str, norm: str = "batch"
    ):
        super().__init__()
        check_choice("skip_downsample", skip_downsample, SKIP_DOWNSAMPLE_KINDS)
        downsample = downsample or "none"
        check_choice("downsample", downsample, DOWNSAMPLE_KINDS)
        if out_channels < in_channels:
            raise ValueError(f"a residual block grows or keeps channels, got {in_channels} -> {out_channels}")
        stride, grow = (1 if downsample == "none" else 2), out_channels - in_channels
        self.concat = skip_downsample == "pool-concat" and grow > 0
        layers: list[nn.Module] = []
        if downsample in ("maxpool", "avgpool"):
            layers.append((nn.MaxPool2d if downsample == "maxpool" else nn.AvgPool2d)(2, 2, ceil_mode=True))
        elif downsample == "strided":  # the zero row/column: ceil(n / 2) cells like the other paths
            layers += [
                nn.ZeroPad2d((0, 1, 0, 1)),
                conv_block(in_channels, in_channels, kernel_size=2, stride=2, padding="valid", norm=norm),
            ]
        first_stride = 2 if downsample == "strided-only" else 1
        layers.append(conv_block(in_channels, out_channels, stride=first_stride, norm=norm))
        main_out = grow if self.concat else out_channels
        # the second conv has no ReLU: it follows the merge
        layers += [nn.Conv2d(out_channels, main_out, 3, padding=1, bias=norm == "none"), make_norm(norm, main_out)]
        self.main = nn.Sequential(*layers)
        skip: list[nn.Module] = []
        if skip_downsample == "conv1x1" and (stride != 1 or grow):
            skip = [
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=norm == "none"),
                make_norm(norm, out_channels),
            ]
        elif skip_downsample != "conv1x1" and stride != 1:
            skip = [nn.MaxPool2d(2, 2, ceil_mode=True)]
        self.skip = nn.Sequential(*skip)
        self.pad_channels = grow if skip_downsample == "pool" else 0
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, s = self.main(x), self.skip(x)
        if self.concat:
            return self.relu(torch.cat([s, y], dim=1))
        if self.pad_channels:  # zero channels appended: (W, H, C) pads of F.pad
            s = F.pad(s, (0, 0, 0, 0, 0, self.pad_channels))
        return self.relu(y + s)

    def extra_repr(self) -> str:
        return f"concat={self.concat}, pad_channels={self.pad_channels}"


def residual_body(
    in_channels: int,
    *,
    width: int,
    depth: int,
    stages: int,
    downsample: str,
    skip_downsample: str,
    norm: str,
    stem_depth: int = 1,
    padding: str = "same",
) -> tuple[nn.Sequential, FeatureInfo, Geometry]:
    """The residual body (an ``nn.Sequential`` of ``stage{i}``), its feature taps (one per stage)
    and its traced geometry (:func:`fcnkit.receptive_field`; a block's window is the union of its
    two paths' windows)."""
    check_int("width", width, 1)
    check_int("depth", depth, 1)
    check_int("stem_depth", stem_depth, 1)
    check_int("stages", stages, 0)
    check_choice("downsample", downsample, DOWNSAMPLE_KINDS)
    check_choice("skip_downsample", skip_downsample, SKIP_DOWNSAMPLE_KINDS)
    check_choice("norm", norm, NORMS)
    if padding != "same":
        raise InputError(
            f"padding={padding!r}: residual nets use 'same' padding only (a block's two paths must "
            "give equal grids); use allconv for padding='valid'"
        )
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["stage0"] = nn.Sequential(
        *(conv_block(in_channels if d == 0 else width, width, norm=norm) for d in range(stem_depth))
    )
    channels_in, stage_channels = width, [width]
    for i in range(1, stages + 1):
        channels = width * 2 ** min(i, 3)
        layers[f"stage{i}"] = nn.Sequential(
            *(
                ResidualBlock(
                    channels_in if d == 0 else channels,
                    channels,
                    downsample=downsample if d == 0 else None,
                    skip_downsample=skip_downsample,
                    norm=norm,
                )
                for d in range(depth)
            )
        )
        channels_in = channels
        stage_channels.append(channels)
    body = nn.Sequential(layers)
    geometry = receptive_field(body, in_channels=in_channels)
    info = FeatureInfo(
        FeatureTap(f"stage{i}", f"features.stage{i}", c, *tap_geometry(geometry, f"stage{i}"))
        for i, c in enumerate(stage_channels)
    )
    return body, info, geometry


class ResAllConvNet(AllConvNet):
    """Residual segmentation net: ``allconv``'s heads on :func:`residual_body` (module docstring)."""

    # same contract as allconv_body (in_channels, **body) -> (features, taps, geometry); other keywords
    make_body = staticmethod(residual_body)  # type: ignore[assignment]


class ResAllConvClassifier(AllConvClassifier):
    """Residual classifier: :func:`residual_body`, 1x1 score conv, global average pooling."""

    make_body = staticmethod(residual_body)  # type: ignore[assignment]


# residual nets are "same"-padded only (module docstring): not an argument of their builders
_SAME_PADDING = {"padding": "same"}

resallconv = register(
    "resallconv",
    task="segmentation",
    description="residual all-convolutional segmenter; skip downsampling: 1x1 conv | pool | pool-concat",
)(
    model_builder(
        ResAllConvNet,
        "resallconv",
        """Residual all-convolutional segmentation net (module docstring). Default: a 1-conv stem and 3
    stages of 1 basic block (16, 32, 64, 128 channels), ResNet's downsampling (stride-2 3x3 conv on
    the main path, stride-2 1x1 projection on the skip), stride 8, BatchNorm, FCN-style score
    ``skips`` from every stage (not to be confused with the residual skips), fixed bilinear upsampling.""",
        {
            "width": 16,
            "depth": 1,
            "stem_depth": 1,
            "stages": 3,
            "downsample": "strided-only",
            "skip_downsample": "conv1x1",
            "norm": "batch",
            **SEGMENTER_HEAD,
        },
        fixed=_SAME_PADDING,
    )
)

resallconv_cls = register(
    "resallconv_cls",
    task="classification",
    description="residual all-convolutional classifier of any input size (global average pooling)",
)(
    model_builder(
        ResAllConvClassifier,
        "resallconv_cls",
        """Residual all-convolutional classifier: a 1-conv stem and 2 stages of 1 basic block (32, 64,
    128 channels), stride 4, 1x1 score conv, global average pooling; inputs of at least 4x4.""",
        {
            "width": 32,
            "depth": 1,
            "stem_depth": 1,
            "stages": 2,
            "downsample": "strided-only",
            "skip_downsample": "conv1x1",
            "norm": "batch",
        },
        fixed=_SAME_PADDING,
    )
)
