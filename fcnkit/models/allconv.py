"""Small all-convolutional networks (All-CNN style) for CPU-sized segmentation and classification.

Body: ``stages + 1`` stages of conv blocks (conv 3x3 -> norm -> ReLU): stage 0 (the stem, at full
resolution) has ``stem_depth`` blocks (default 1: it is the costliest stage per block and a
boundary needs little context), the others ``depth``. Stage ``i`` has ``width * 2 ** min(i, 3)``
channels and every stage but the last is followed by a downsampling, so the effective stride is
``S = 2 ** stages`` (1 with ``downsample="none"``). A 1x1 conv (``score``) gives ``num_classes``
scores per cell::

    x -> [stage0 -> down0] -> [stage1 -> down1] -> ... -> [stage_n] -> score (1x1) -> coarse scores
         stride 1             stride 2                     stride S

``allconv`` (segmentation), ``output="coarse"``: the coarse score grid itself, no padding added
(with ``padding="valid"`` the net has no padding anywhere: a plain valid net whose cell ``i`` sees
input pixels ``i*S .. i*S + R - 1``, ``R`` = receptive field). ``output="dense"``: logits of the
input's exact ``H x W``, for any size::

    pad the input: P_top = P_left = 0 ("same") or floor((R - S) / 2) ("valid"),
                   bottom/right so that n = ceil(H / S) cells come out
    coarse scores: cell i is centred on input pixel S*i + (S - 1) / 2 (its own SxS block)
                   (+1/2 for "strided-only" with "valid", -(S - 1)/2 for "strided-only" with "same")
    upsample by S: bilinear (BilinearUpsample, edge cells replicated) aligned to those centres,
                   cropped to H x W

so output pixel ``(y, x)`` is a bilinear mix of the (at most 2x2) cells whose windows are centred
nearest to ``(y, x)``: within ``S / 2`` pixels, as closely as the stride allows. The "valid" pad is
the FCN paper's pad-100 trick made exact: just enough for the cells to cover every pixel.

``skips=True`` (default) adds FCN-style skips from every stage down to stride 1: a 1x1 score conv
per stage (``skip_scores``, initialised to ZERO as in FCN), each upsampled to ``H x W`` aligned to
its own cell centres (``feature_info[i].offset``) and summed with the upsampled coarse scores.
At initialisation the dense output is exactly the upsampled coarse output; with training the
full-resolution stages sharpen boundaries. Why it is the default: digit-canvas masks are the
digits' strokes (2-3 pixels wide), which bilinear upsampling from stride 8 cannot draw. In a
300-step check (depth 2, Adam 3e-3, batches of 16) mean IU was 0.49 with skips and 0.28 without,
and the digit-vs-background IU 0.95 against 0.25; after 1000 steps 0.73 (digit-vs-background
0.97: the remaining error is which digit, not where).

``allconv_cls`` (classification): the same body, the 1x1 score conv, then global average
pooling -> ``logits[B, K]``; ``forward_dense(x)`` is the score map before pooling. Minimum input
size: ``model.min_input_size`` (``S`` with "same" padding, the receptive field ``R`` with "valid").
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from fcnkit.errors import InputError
from fcnkit.geometry import Geometry, receptive_field
from fcnkit.models._builders import SEGMENTER_HEAD, model_builder
from fcnkit.models.blocks import DOWNSAMPLE_KINDS, NORMS, PADDINGS, conv_block
from fcnkit.models.blocks import downsample as make_downsample
from fcnkit.models.features import FeatureInfo, FeatureTap
from fcnkit.models.registry import check_bool, check_choice, check_int, register
from fcnkit.models.upsample import BilinearUpsample

__all__ = ["AllConvNet", "AllConvClassifier", "allconv", "allconv_cls", "allconv_body"]

OUTPUTS = ("dense", "coarse")


def allconv_body(
    in_channels: int,
    *,
    width: int,
    depth: int,
    stages: int,
    downsample: str,
    padding: str,
    norm: str,
    stem_depth: int = 1,
) -> tuple[nn.Sequential, FeatureInfo, Geometry]:
    """The conv body (an ``nn.Sequential`` of ``stage{i}`` / ``down{i}`` blocks), its feature taps
    (one per stage) and its traced geometry (:func:`fcnkit.receptive_field`)."""
    check_int("width", width, 1)
    check_int("depth", depth, 1)
    check_int("stem_depth", stem_depth, 1)
    check_int("stages", stages, 0)
    check_choice("downsample", downsample, DOWNSAMPLE_KINDS)
    check_choice("padding", padding, PADDINGS)
    check_choice("norm", norm, NORMS)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels_in, stage_channels = in_channels, []
    for i in range(stages + 1):
        channels = width * 2 ** min(i, 3)
        blocks, n = [], stem_depth if i == 0 else depth
        for d in range(n):
            # strided-only: the pool is removed and the stage's last conv takes its stride
            s = 2 if downsample == "strided-only" and i < stages and d == n - 1 else 1
            blocks.append(conv_block(channels_in, channels, stride=s, padding=padding, norm=norm))
            channels_in = channels
        layers[f"stage{i}"] = nn.Sequential(*blocks)
        stage_channels.append(channels)
        if i < stages and downsample not in ("strided-only", "none"):
            layers[f"down{i}"] = make_downsample(downsample, channels, norm=norm)
    body = nn.Sequential(layers)
    # the taps' grids come from the one geometry trace: each stage's output is its last layer's grid
    geometry = receptive_field(body, in_channels=in_channels)
    last = {layer.name.split(".")[0]: layer for layer in geometry.layers if layer.name.startswith("stage")}
    info = FeatureInfo(
        FeatureTap(
            f"stage{i}", f"features.stage{i}", c, int(last[f"stage{i}"].jump[0]), float(last[f"stage{i}"].offset[0])
        )
        for i, c in enumerate(stage_channels)
    )
    return body, info, geometry


class _AllConvBase(nn.Module):
    # (in_channels, **body) -> (features, feature_info, geometry); fcnkit.models.residual swaps it
    make_body = staticmethod(allconv_body)

    def __init__(self, num_classes: int, in_channels: int, **body):
        super().__init__()
        self.features, self.feature_info, geometry = self.make_body(in_channels, **body)
        self.score = nn.Conv2d(self.feature_info[-1].channels, num_classes, 1)
        self.padding = body["padding"]
        # geometry of the coarse grid (one dimension; the net is isotropic), from the traced body
        self.receptive_field, self.stride = int(geometry.size[0]), int(geometry.stride[0])
        self.offset = float(geometry.offset[0])
        self.min_input_size = self.receptive_field if self.padding == "valid" else self.stride

    @property
    def score_stride(self) -> int:
        """Input pixels per cell of the coarse score grid (the loss-sampling cell)."""
        return self.stride

    def _check_size(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        # plain ints only: symbolic shapes (torch.fx tracing) skip the check and stay traceable
        if isinstance(h, int) and isinstance(w, int) and min(h, w) < self.min_input_size:
            fix = "pad it" if self.padding == "same" else "pad it, or build the model with padding='same'"
            raise InputError(
                f"input of {h}x{w} is smaller than this model's minimum of "
                f"{self.min_input_size}x{self.min_input_size}; {fix}"
            )

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """Score map at the net's stride, no padding added: ``[B, K, h, w]``."""
        self._check_size(x)
        return self.score(self.features(x))


class AllConvNet(_AllConvBase):
    """Segmentation: ``forward(x[B, C, H, W]) -> logits[B, K, H, W]`` (``output="dense"``) or the
    coarse score grid (``output="coarse"``); see the module docstring for the geometry."""

    def __init__(self, num_classes: int, in_channels: int, *, output: str, learn_upsampling: bool, skips: bool, **body):
        super().__init__(num_classes, in_channels, **body)
        self.output = check_choice("output", output, OUTPUTS)
        self.skips = check_bool("skips", skips)
        learn = check_bool("learn_upsampling", learn_upsampling)
        s = self.stride
        # valid nets: pad the top/left so that cell i is centred on S*i + (S - 1)/2 (rounded down)
        self.pad_before = int((self.offset - (s - 1) / 2) // 1) if self.padding == "valid" else 0
        self.upsample: BilinearUpsample | None = None
        self.skip_scores: nn.ModuleList | None = None
        self.skip_upsamples: nn.ModuleList | None = None
        if output != "dense":
            return
        # each upsampling is aligned to the centres of its own cells, in the caller's pixels
        self.upsample = BilinearUpsample(num_classes, s, learn, shift=self.offset - self.pad_before, border="replicate")
        if self.skips:
            taps = self.feature_info[:-1]
            scores = [nn.Conv2d(t.channels, num_classes, 1) for t in taps]
            for conv in scores:  # zero: at init the output is the upsampled coarse scores (FCN)
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)  # type: ignore[arg-type]  # built with a bias
            self.skip_scores = nn.ModuleList(scores)
            self.skip_upsamples = nn.ModuleList(
                BilinearUpsample(num_classes, t.stride, learn, shift=t.offset - self.pad_before, border="replicate")
                for t in taps
            )

    def dense_padding(self, size: int) -> tuple[int, int]:
        """``(before, after)`` padding of one input dimension of ``size`` pixels in dense mode."""
        cells = (size + self.stride - 1) // self.stride  # ceil; no negative floor division (ONNX truncates it)
        if self.padding == "valid":
            length = self.receptive_field + self.stride * (cells - 1)
        else:
            length = self.stride * cells
        return self.pad_before, length - size - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.output == "coarse":
            return self.forward_dense(x)
        h, w = x.shape[-2:]
        top, bottom = self.dense_padding(h)
        left, right = self.dense_padding(w)
        feats, taps = F.pad(x, (left, right, top, bottom)), []
        for name, layer in self.features.named_children():
            feats = layer(feats)
            if self.skips and name.startswith("stage"):
                taps.append(feats)
        assert self.upsample is not None  # built for output="dense"
        logits = self.upsample(self.score(feats), (h, w))
        if self.skip_scores is not None and self.skip_upsamples is not None:
            for tap, score, up in zip(taps, self.skip_scores, self.skip_upsamples):
                logits = logits + up(score(tap), (h, w))
        return logits


class AllConvClassifier(_AllConvBase):
    """Classification of any input size >= ``min_input_size``: ``forward -> logits[B, K]``, the
    global average of ``forward_dense(x) -> [B, K, h, w]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_dense(x).mean(dim=(-2, -1))


allconv = register(
    "allconv", task="segmentation", description="all-convolutional segmenter (CPU-sized); dense or coarse output"
)(
    model_builder(
        AllConvNet,
        "allconv",
        """All-convolutional segmentation net (module docstring). Default: 4 stages of 1 conv block
    (16, 32, 64, 128 channels), 3 max-pools (stride 8, receptive field 38), BatchNorm, skips from
    every stage, fixed bilinear upsampling; 0.1 M parameters (11 classes, 1 channel). Chosen for
    speed: on digit canvases depth 2 (3x the parameters, 1.5x the time) or width 24 scored the
    same mean IU (0.72-0.75 after 1000 steps); the error left is overfitting, not capacity.""",
        {
            "width": 16,
            "depth": 1,
            "stem_depth": 1,
            "stages": 3,
            "downsample": "maxpool",
            "padding": "same",
            "norm": "batch",
            **SEGMENTER_HEAD,
        },
    )
)

allconv_cls = register(
    "allconv_cls",
    task="classification",
    description="all-convolutional classifier of any input size (global average pooling)",
)(
    model_builder(
        AllConvClassifier,
        "allconv_cls",
        """All-convolutional classifier: conv body, 1x1 score conv, global average pooling.
    Default: a 1-conv stem and 2 stages of 2 conv blocks (32, 64, 128 channels), stride 4,
    receptive field 30; inputs of at least 4x4 ("same" padding; 30x30 with "valid"); digits: 28x28.""",
        {
            "width": 32,
            "depth": 2,
            "stem_depth": 1,
            "stages": 2,
            "downsample": "maxpool",
            "padding": "same",
            "norm": "batch",
        },
    )
)
