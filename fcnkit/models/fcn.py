"""FCN-32s / FCN-16s / FCN-8s (Long, Shelhamer & Darrell) on several backbones.

    x ─pad bottom/right to a multiple of 32─> backbone ─> tap8, tap16, tap32
    tap32 ─score_fr (1x1)──────────────────┐
    tap16 ─score_pool4 (1x1)─┐        upscore2 (x2)                           FCN-16s, FCN-8s
                             +  <──────────┘
    tap8  ─score_pool3 (1x1)─┐        upscore_pool4 (x2)                      FCN-8s
                             +  <──────────┘
                             └──> upscore (x32 / x16 / x8) ─> crop to H x W ─> logits[B, K, H, W]

The score layers keep their FCN names on every backbone (``score_pool4`` reads ``layer3`` of a
ResNet, ``stage4`` of allconv) and start at ZERO, as in the paper: at initialisation the output is
exactly 0 and each skip starts as a no-op. Upsampling layers are :class:`BilinearUpsample`
(ConvTranspose2d initialised to bilinear; fixed, or learned with ``learn_upsampling=True``), with
edge cells replicated at the borders.

Alignment (the crops of the Caffe model, derived instead of hard-coded): a tap at stride ``s`` has
cell ``i`` centred on input pixel ``s*i + c`` (``feature_info[k].offset``). Fusing stride 32 into
stride 16 places the coarse cell ``j`` at fine-grid coordinate ``2j + (c32 - c16) / 16``; the final
upsampling places the cell at pixel ``s*i + c``; each BilinearUpsample is built with that shift,
so bilinear tents peak exactly on the cell centres (VGG/allconv: the ``align_corners=False``
convention; ResNet, centred on ``s*i``: odd kernels ``2f - 1``).

Any input size works: the input is zero-padded at the bottom/right to a multiple of 32 (so every
tap grid is exactly ``size / s`` and the grids nest), and the output is cropped back to ``H x W``.
No minimum size (one 32x32 block is enough), but a BatchNorm backbone in training mode needs more
than one value per channel at stride 32: batch size > 1 or inputs larger than 32x32.

Default backbone: ``"allconv"``, by far the cheapest (about 0.9 M parameters; vgg16 has 134 M,
resnet50 24 M); pass ``backbone="vgg16"`` for the paper's network.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fcnkit.models.backbones import build_backbone
from fcnkit.models.features import FeatureInfo
from fcnkit.models.registry import check_bool, register
from fcnkit.models.upsample import BilinearUpsample

__all__ = ["FCN", "fcn32s", "fcn16s", "fcn8s"]


def _zero_score(in_channels: int, num_classes: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, num_classes, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)  # type: ignore[arg-type]  # built with a bias
    return conv


class FCN(nn.Module):
    """FCN head on a backbone with ``feature_info`` for taps at strides 8, 16, 32.

    ``skips``: 0 (FCN-32s), 1 (FCN-16s) or 2 (FCN-8s). ``forward(x[B, C, H, W]) -> logits[B, K, H, W]``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, skips: int = 2, learn_upsampling: bool = False):
        super().__init__()
        if skips not in (0, 1, 2):
            raise ValueError(f"skips must be 0, 1 or 2, got {skips}")
        info: FeatureInfo = backbone.feature_info  # type: ignore[assignment]  # set by every backbone
        if info.strides != [8, 16, 32]:
            raise ValueError(f"backbone taps must have strides 8, 16, 32, got {info.strides}")
        self.backbone, self.skips = backbone, skips
        self.feature_info = info
        learn = check_bool("learn_upsampling", learn_upsampling)
        c8, c16, c32 = (t.offset for t in info)
        self.score_fr = _zero_score(info[2].channels, num_classes)
        if skips >= 1:
            self.score_pool4 = _zero_score(info[1].channels, num_classes)
            self.upscore2 = BilinearUpsample(num_classes, 2, learn, shift=(c32 - c16) / 16, border="replicate")
        if skips >= 2:
            self.score_pool3 = _zero_score(info[0].channels, num_classes)
            self.upscore_pool4 = BilinearUpsample(num_classes, 2, learn, shift=(c16 - c8) / 8, border="replicate")
        last = info[2 - skips]
        self.upscore = BilinearUpsample(num_classes, last.stride, learn, shift=last.offset, border="replicate")
        #: input pixels per cell of the last fused score grid (the loss-sampling cell)
        self.score_stride = last.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        tap8, tap16, tap32 = self.backbone(F.pad(x, (0, -w % 32, 0, -h % 32)))
        score = self.score_fr(tap32)
        if self.skips >= 1:
            pool4 = self.score_pool4(tap16)
            score = self.upscore2(score, pool4.shape[-2:]) + pool4
        if self.skips >= 2:
            pool3 = self.score_pool3(tap8)
            score = self.upscore_pool4(score, pool3.shape[-2:]) + pool3
        return self.upscore(score, (h, w))


_BACKBONE_DOC = """``backbone``: "allconv" (default, cheapest), "vgg16" (the paper's), "resnet18", "resnet50".
    ``learn_upsampling``: learn every upsampling layer from its bilinear start (else fixed).
    ``backbone_weights``: a LOCAL torchvision state-dict file (see fcnkit.models.backbones); not
    kept in ``fcnkit_spec``."""


def _fcn_builder(name: str, skips: int, description: str) -> Callable[..., FCN]:
    """The registered builder of FCN-32s/16s/8s: the three differ only in the number of skips."""

    def builder(
        *,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = "allconv",
        learn_upsampling: bool = False,
        backbone_weights: str | os.PathLike | None = None,
    ) -> FCN:
        net = build_backbone(backbone, in_channels=in_channels, weights=backbone_weights)
        return FCN(net, num_classes, skips=skips, learn_upsampling=learn_upsampling)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"{description} (module docstring).\n\n    {_BACKBONE_DOC}"
    return register(name, task="segmentation", description=description, init_only=("backbone_weights",))(builder)


fcn32s = _fcn_builder("fcn32s", 0, "FCN-32s: backbone (allconv|vgg16|resnet18|resnet50) + 1x1 score + 32x upsampling")
fcn16s = _fcn_builder("fcn16s", 1, "FCN-16s: FCN-32s + skip from stride 16 (backbone as fcn32s)")
fcn8s = _fcn_builder("fcn8s", 2, "FCN-8s: FCN-16s + skip from stride 8 (backbone as fcn32s)")
