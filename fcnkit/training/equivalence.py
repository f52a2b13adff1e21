"""Patchwise training IS whole-image training, for a net without padding (FCN Sec. 4.4), as code.

For a valid net (no padding anywhere) of receptive field ``r`` and effective stride ``s``, output
cell ``(i, j)`` is computed from the input window ``image[:, i*s : i*s + r, j*s : j*s + r]`` and
from nothing else, by the very same arithmetic whether that window is part of the whole image or
cut out as a patch (the window starts on a multiple of ``s``, so every pooling/stride grid inside
the net lines up). Hence the summed loss over the cells of one whole-image pass, and its
gradient, equal those of the batch of ``r x r`` patches, one per cell, labelled with that cell's
target::

    image  |<------------------------- W ------------------------->|
    cell 0 [========== r ==========]
    cell 1 |<- s ->[========== r ==========]
    cell 2 |<--- 2s --->[========== r ==========]           ... n = (W - r) // s + 1 cells
    patch k = image[k*s : k*s + r]  --net-->  1 x 1 output == cell k of the whole-image output

The whole image shares the overlapping computation; the patch batch recomputes it, about
``n * r^2 / W^2`` times the FLOPs (``fcnkit experiment gradient-equivalence`` measures it).

Why a "same"-padded net differs at the border: it pads zeros onto EVERY layer's feature map at
the image edge, so a cell near the border sees padded features where an interior patch of the
same net would see real ones (and a zero-filled patch is not the same thing either: zeros in
the input are not zeros in a feature map after bias and ReLU)::

    same-padded, whole image                      interior cell: its window and every
      0 0 |x x x x x x x x x x x x x x| 0 0         intermediate value it reads lie inside the
      ^^^ zeros re-added at each layer            image -> equal to its (aligned) patch
      border cell: reads them -> differs          border cell: reads padding -> differs

Loss sampling with ``p = 1`` keeps every cell with weight 1.0, so it IS whole-image training
(bit-identical loss; :mod:`fcnkit.training.regimes`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fcnkit.constants import IGNORE_INDEX
from fcnkit.errors import InputError

__all__ = ["equivalent_patch_batch", "cell_targets", "valid_geometry"]


def valid_geometry(model: nn.Module, in_channels: int, input_size: tuple[int, int] | None = None):
    """The :class:`~fcnkit.geometry.Geometry` of ``model`` after checking that patchwise and
    whole-image training are equivalent for it; :class:`InputError` saying the fix otherwise.

    Refused: any padding (layers or the forward pass), train-mode BatchNorm or Dropout (they mix
    or randomise the items of a batch), layers that see the whole image (global pooling, ...),
    and outputs that are not the coarse cell grid (upsampled logits).
    """
    from fcnkit.geometry import receptive_field

    for name, module in model.named_modules():
        padding = getattr(module, "padding", 0)
        if (
            isinstance(module, nn.modules.conv._ConvNd | nn.modules.pooling._MaxPoolNd | nn.modules.pooling._AvgPoolNd)
            and padding not in (0, "valid")
            and any(p != 0 for p in _pair(padding))
        ):
            raise InputError(
                f"layer '{name}' pads its input ({padding}); patchwise training equals whole-image training "
                "only for valid nets: build with padding='valid' (allconv: padding='valid', output='coarse')"
            )
        if module.training and isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise InputError(
                f"layer '{name}' is BatchNorm in training mode (it mixes the items of a batch); "
                "call model.eval() or build with norm='none'"
            )
        if module.training and isinstance(module, nn.modules.dropout._DropoutNd | nn.Dropout):
            raise InputError(f"layer '{name}' is Dropout in training mode (random per pass); call model.eval()")
    geometry = receptive_field(model, in_channels, input_size=input_size)
    if geometry.blockers:
        raise InputError(
            f"model output depends on the whole image ({geometry.blockers[0]}); "
            "patch equivalence needs a fully convolutional net without such layers"
        )
    starts = [o - (r - 1) / 2 for o, r in zip(geometry.offset, geometry.size)]
    if any(st != 0 for st in starts) or any(s < 1 or s != int(s) for s in geometry.stride):
        raise InputError(
            f"model output cell (0, 0) sees the window starting at {tuple(starts)} with stride "
            f"{geometry.stride}: the model pads or resamples; use a valid coarse net "
            "(allconv: padding='valid', output='coarse')"
        )
    if (
        input_size is not None
        and geometry.output_shape is not None
        and tuple(geometry.output_shape) != _grid(input_size, geometry)
    ):
        raise InputError(
            f"model returns {tuple(geometry.output_shape)} cells for a {input_size[0]}x{input_size[1]} input, not the "
            f"{_grid(input_size, geometry)} cells of its receptive field; use its coarse output (allconv: "
            "output='coarse')"
        )
    return geometry


def cell_targets(mask: torch.Tensor, geometry, shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Target of each output cell ``[h, w]``: ``mask`` at the cell's centre pixel.

    Cell ``(i, j)`` is centred at ``offset + (i, j) * stride``; a centre between pixels (even
    receptive field) rounds DOWN, i.e. pixel ``floor(centre)``, the same pixel as local index
    ``(r - 1) // 2`` of the cell's patch. ``shape`` is the output grid (default: the cells of a
    valid net on this mask); centres outside the mask get 255 (ignored).
    """
    if mask.ndim != 2:
        raise InputError(f"mask must be [H, W], got shape {tuple(mask.shape)}; pass one image's mask")
    shape = shape or _grid((int(mask.shape[0]), int(mask.shape[1])), geometry)
    index = []
    for n, size, offset, stride in zip(shape, mask.shape, geometry.offset, geometry.stride):
        centres = torch.tensor([math.floor(offset + k * stride) for k in range(n)], dtype=torch.int64)
        index.append((centres, (centres >= 0) & (centres < size)))
    (rows, row_ok), (cols, col_ok) = index
    out = mask[rows.clamp(0, mask.shape[0] - 1)][:, cols.clamp(0, mask.shape[1] - 1)].clone()
    out[~(row_ok[:, None] & col_ok[None, :])] = IGNORE_INDEX
    return out


def equivalent_patch_batch(
    model: nn.Module, image: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The patch batch whose summed loss and gradient equal whole-image training on ``image``.

    Args:
        model: a valid net whose output is the coarse cell grid (e.g.
            ``build_model("allconv", output="coarse", padding="valid", norm="none")``), in any
            mode without train-mode BatchNorm/Dropout; refused otherwise (:func:`valid_geometry`).
        image: ``[C, H, W]``, at least the receptive field in each dimension.
        mask: ``[H, W]`` class indices (255 = ignore).

    Returns:
        ``(patches [N, C, r, r], labels [N])``, one patch per output cell in row-major order
        (``N = h * w``, the grid of ``model(image[None])``) and its target
        (:func:`cell_targets`; 255 cells stay in the batch and are ignored by the loss). Then
        ``F.cross_entropy(model(patches).flatten(1), labels, reduction="sum", ignore_index=255)``
        equals the summed loss of ``model(image[None])`` against ``cell_targets(mask, geometry)``,
        gradients included (up to float rounding; the tests check <= 1e-10 in float64).
    """
    if image.ndim != 3:
        raise InputError(f"image must be [C, H, W], got shape {tuple(image.shape)}; pass one image, not a batch")
    if tuple(mask.shape) != tuple(image.shape[-2:]):
        raise InputError(
            f"mask {tuple(mask.shape)} does not match image {tuple(image.shape[-2:])}; pass the image's own mask"
        )
    geometry = valid_geometry(model, int(image.shape[0]))
    (rh, rw), (sh, sw) = geometry.size, (int(geometry.stride[0]), int(geometry.stride[1]))
    if image.shape[-2] < rh or image.shape[-1] < rw:
        raise InputError(
            f"image of {image.shape[-2]}x{image.shape[-1]} is smaller than the receptive field {rh}x{rw}; "
            "use a larger image (or pad it)"
        )
    valid_geometry(
        model, int(image.shape[0]), (int(image.shape[-2]), int(image.shape[-1]))
    )  # and its output is that cell grid (a 5 ms trace)
    windows = image.unfold(1, rh, sh).unfold(2, rw, sw)  # [C, h, w, rh, rw], a view
    c, h, w = windows.shape[:3]
    patches = windows.permute(1, 2, 0, 3, 4).reshape(h * w, c, rh, rw)
    labels = cell_targets(mask, geometry, (h, w)).reshape(-1)
    return patches, labels


def _grid(size: tuple[int, int], geometry) -> tuple[int, int]:
    """Cells of a valid net on an input of ``size``: ``(H - r) // s + 1`` per dimension."""
    (h, w), (rh, rw), (sh, sw) = size, geometry.size, geometry.stride
    return max(0, (h - int(rh)) // int(sh) + 1), max(0, (w - int(rw)) // int(sw) + 1)


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
