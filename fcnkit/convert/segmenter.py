"""``convolutionalized``: a torchvision classifier recast as a segmentation FCN (FCN paper, Sec. 3.1).

The classifier's fully connected layers become convolutions (:func:`fcnkit.convolutionalize`),
so one pass gives a coarse grid of class scores, one cell per native-size window at the net's
stride. ``output="dense"`` (default) then upsamples that grid bilinearly to the input's H x W,
placing each cell at the centre of its window, which the receptive-field geometry gives::

    input pixel p:       0   1   2  ...  offset ........ offset+stride ........ offset+2*stride
    coarse cells:                        cell 0          cell 1                 cell 2
    dense score at p:    = cell 0 (edge) |<-- linear blend of cells 0 and 1 -->| ...

i.e. pixel ``p`` takes coarse coordinate ``t = (p - offset) / stride`` (clamped to the grid) and
blends cells ``floor(t)`` and ``floor(t) + 1``. ``output="coarse"`` returns the grid itself.
Minimum input size: the native ``input_size`` (224 for torchvision ImageNet classifiers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fcnkit.convert.linear_to_conv import (
    POOL_OPTIONS,
    ConvolutionalizedNet,
    convolutionalize,
)
from fcnkit.errors import InputError, did_you_mean
from fcnkit.models.registry import register

__all__ = ["ConvolutionalizedSegmenter", "convolutionalized", "build_torchvision_classifier", "aligned_upsample"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUTS = ("dense", "coarse")


class ConvolutionalizedSegmenter(nn.Module):
    """``forward(x[B, 3, H, W]) -> logits[B, K, H, W]`` (``output="dense"``) or the coarse grid
    ``[B, K, h, w]`` (``output="coarse"``), for any ``H, W >= input_size``.

    ``fcn`` is the :class:`~fcnkit.convert.ConvolutionalizedNet`; ``geometry`` (``size``,
    ``stride``, ``offset``, each ``(h, w)``: ``fcnkit.receptive_field(fcn)``) places its cells
    for the upsampling and is kept as the plain dict ``self.geometry``.
    """

    def __init__(self, fcn: ConvolutionalizedNet, geometry, output: str = "dense"):
        super().__init__()
        if output not in OUTPUTS:
            raise InputError(
                f"output={output!r} is not one of {OUTPUTS}; use 'dense' (input-size logits) or 'coarse' (score grid)"
            )
        self.fcn = fcn
        self.output = output
        self.geometry: dict[str, tuple] | None = None
        self.stride: tuple[float, float] | None = None
        self.offset: tuple[float, float] | None = None
        if geometry is not None:
            get = geometry.get if isinstance(geometry, dict) else lambda k: getattr(geometry, k)
            self.geometry = {k: tuple(get(k)) for k in ("size", "stride", "offset")}  # type: ignore[arg-type]
            self.stride = (float(self.geometry["stride"][0]), float(self.geometry["stride"][1]))
            self.offset = (float(self.geometry["offset"][0]), float(self.geometry["offset"][1]))

    @property
    def input_size(self) -> tuple[int, int]:
        return self.fcn.input_size  # type: ignore[return-value]  # a pair

    def forward_coarse(self, x: torch.Tensor) -> torch.Tensor:
        """The score grid: cell ``(i, j)`` scores the native window centred at ``offset + (i, j) * stride``."""
        return self.fcn(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.fcn(x)
        if self.output == "coarse":
            return scores
        if self.offset is None or self.stride is None:
            raise RuntimeError("output='dense' needs the coarse grid's geometry; build it with from_classifier")
        return aligned_upsample(scores, (int(x.shape[-2]), int(x.shape[-1])), self.stride, self.offset)

    def extra_repr(self) -> str:
        return f"output={self.output!r}, stride={self.stride}, offset={self.offset}"


def aligned_upsample(scores: torch.Tensor, size: tuple[int, int], stride, offset) -> torch.Tensor:
    """Bilinear upsampling of a score grid to ``size`` with cell ``(i, j)`` at input pixel
    ``offset + (i, j) * stride`` (pixel centres at integer coordinates), constant beyond the
    first/last cell.

    Built from ops the receptive-field tracer follows (so ``fcnkit.receptive_field`` and exact
    tiling work on the dense model): replicate-pad the grid by whole cells, a fixed depthwise
    transposed convolution with the linear-interpolation ("tent") kernel, and a crop. A tent of
    odd length ``2s - 1`` puts cells on integer pixels, of even length ``2s`` on half pixels, which
    covers every offset that is a multiple of 1/2 (all nets made of convolutions and pools).
    """
    for axis in (0, 1):
        if float(stride[axis]) != int(stride[axis]) or float(2 * offset[axis]) != int(2 * offset[axis]):
            raise InputError(
                f"aligned_upsample: stride {tuple(stride)} / offset {tuple(offset)} must be whole / multiples of 1/2"
            )
    s = (int(stride[0]), int(stride[1]))
    half = tuple(float(o) != int(o) for o in offset)  # half-pixel offsets: even-length tent
    k = tuple(2 * s[a] - (0 if half[a] else 1) for a in (0, 1))
    centre = tuple((k[a] - 1) / 2 for a in (0, 1))  # position of a cell inside its tent
    # pad so that pixel 0 and pixel size-1 lie between two (replicated) cells
    lead = tuple(max(1, math.ceil(offset[a] / s[a]) + 1) for a in (0, 1))
    crop = tuple(int(lead[a] * s[a] + centre[a] - offset[a]) for a in (0, 1))
    h, w = scores.shape[-2:]
    # padded cells needed so the last pixel (at crop + size - 1) lies before the last cell's centre
    total = tuple(math.ceil((crop[a] + size[a] - 1 - centre[a]) / s[a]) + 1 for a in (0, 1))
    trail = tuple(max(1, total[a] - (h, w)[a] - lead[a]) for a in (0, 1))
    x = F.pad(scores, (lead[1], trail[1], lead[0], trail[0]), mode="replicate")
    c = scores.shape[1]
    weight = _tent(k[0], s[0], scores).view(-1, 1) * _tent(k[1], s[1], scores).view(1, -1)
    out = F.conv_transpose2d(x, weight.expand(c, 1, *k), stride=s, groups=c)
    return out[..., crop[0] : crop[0] + size[0], crop[1] : crop[1] + size[1]]


def _tent(k: int, s: int, like: torch.Tensor) -> torch.Tensor:
    """Linear-interpolation weights 1 - |d| / s at distances d from the kernel centre."""
    d = torch.arange(k, dtype=like.dtype, device=like.device) - (k - 1) / 2
    return 1 - d.abs() / s


def build_torchvision_classifier(arch: str, num_classes: int) -> nn.Module:
    """``"torchvision:vgg16"`` -> the torchvision classifier with ``num_classes`` outputs, random weights."""
    import torchvision

    prefix, _, name = arch.partition(":")
    if prefix != "torchvision" or not name:
        raise InputError(
            f"arch={arch!r}: give a torchvision classifier as 'torchvision:NAME', e.g. 'torchvision:vgg16'"
        )
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise InputError(f"arch={arch!r}: torchvision has no classifier '{name}'{did_you_mean(name, known)}")
    return torchvision.models.get_model(name, weights=None, num_classes=int(num_classes))


def from_classifier(
    classifier: nn.Module, input_size=None, pool: str = "window", output: str = "dense"
) -> ConvolutionalizedSegmenter:
    """Convolutionalize ``classifier`` and wrap it with the geometry-aligned upsampling."""
    from fcnkit.geometry import receptive_field

    fcn = convolutionalize(classifier, input_size, pool=pool)
    return ConvolutionalizedSegmenter(fcn, receptive_field(fcn, in_channels=3), output)


@register(
    "convolutionalized",
    task="segmentation",
    description=(
        "a torchvision classifier recast as an FCN (FCN Sec. 3.1): Linear -> conv, scores upsampled to the input"
    ),
)
def convolutionalized(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    arch: str = "torchvision:vgg16",
    input_size: int = 224,
    pool: str = "window",
    output: str = "dense",
) -> ConvolutionalizedSegmenter:
    """Build ``arch`` with random weights and ``num_classes`` outputs, convolutionalized.

    ``pool`` ("window" | "none") is passed to :func:`fcnkit.convolutionalize`; ``output`` is
    "dense" (logits at the input's H x W) or "coarse" (the score grid at the net's stride).
    Pretrained weights come in through ``fcnkit convert`` (local files only).
    """
    if in_channels != 3:
        raise InputError(
            f"in_channels={in_channels}: torchvision classifiers take 3-channel (RGB) input; convert grey images to RGB"
        )
    if pool not in POOL_OPTIONS:
        raise InputError(f"pool={pool!r} is not one of {POOL_OPTIONS}")
    return from_classifier(build_torchvision_classifier(arch, num_classes), input_size, pool, output)
