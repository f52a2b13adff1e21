"""Shift-and-stitch (FCN paper, Sec. 3.2): dense output from a coarse net without changing it.

A net with output stride ``s`` scores only every ``s``-th position. Running it on the input
shifted by ``(dy, dx)`` for all ``0 <= dy, dx < s`` and interlacing the ``s^2`` score grids gives
a score for every position, as if the net had stride 1 -- at ``s^2`` times the cost of one pass
(the FCN paper's "filter rarefaction" reaches the same output in one pass by dilating the layers
after each downsampling instead). ::

    shift (dy, dx): input x[dy:, dx:]  ->  net  ->  cells i = 0, 1, 2 ... centred at offset + dy + s*i
    stitched row:   u = 0     1     2    ...  s-1   s     s+1  ...
                    (0,i=0) (1,i=0) (2,i=0)  ... (s-1,0) (0,i=1) (1,i=1) ...   = cell u at offset + u

Alignment: stitched cell ``(u, v)`` is centred at input pixel ``offset + (u, v)``, where
``offset`` is the net's own geometry offset (``fcnkit.receptive_field(net).offset``): the
same origin as the coarse grid, with stride 1. Shifting by cropping (not by padding) means
no shift introduces padding the net would not see anyway; for a net without padding every
stitched cell equals the net applied to its receptive-field window exactly. Nets with padding
see their zero padding at the (shifted) top/left border, so cells within a receptive field of
that border differ from a true stride-1 net there; interior cells do not.
"""

from __future__ import annotations

import torch
from torch import nn

from fcnkit.errors import InputError

__all__ = ["shift_and_stitch"]


def shift_and_stitch(
    model: nn.Module, image: torch.Tensor, stride: int | tuple[int, int] | None = None
) -> torch.Tensor:
    """Stride-1 score map of a stride-``s`` net by ``s_h * s_w`` shifted passes, interlaced.

    ``model`` maps ``[B, C, H, W]`` to its coarse score grid ``[B, K, h, w]`` (e.g. a
    convolutionalized classifier, or a segmentation net built with ``output="coarse"``), and
    ``image`` is ``[C, H, W]`` or ``[B, C, H, W]``; the result has the same batch layout with
    ``K`` channels and about ``H - size + 1`` rows (for an unpadded net of receptive field
    ``size``; in general ``sum over dy of rows(net(x[dy:]))``). ``stride`` defaults to the
    net's geometry stride (``fcnkit.geometry.receptive_field``). Runs without gradients.
    """
    if image.dim() not in (3, 4):
        raise InputError(f"shift_and_stitch: image of shape {tuple(image.shape)} is not [C, H, W] or [B, C, H, W]")
    x = image.unsqueeze(0) if image.dim() == 3 else image
    sh, sw = _stride(model, stride)
    if sh > x.shape[-2] or sw > x.shape[-1]:
        raise InputError(
            f"shift_and_stitch: image {x.shape[-2]}x{x.shape[-1]} is smaller than the stride {sh}x{sw}; use a larger "
            "image"
        )
    grids = {}
    with torch.no_grad():
        for dy in range(sh):
            for dx in range(sw):
                grids[dy, dx] = model(x[:, :, dy:, dx:])
    # the rows of shift dy are the cells u = dy, dy + s, ...; the valid u form a prefix of length
    # sum_dy rows(dy) because rows(dy) is non-increasing in dy and drops by at most one
    rows = [grids[dy, 0].shape[-2] for dy in range(sh)]
    cols = [grids[0, dx].shape[-1] for dx in range(sw)]
    first = grids[0, 0]
    out = first.new_empty(first.shape[0], first.shape[1], sum(rows), sum(cols))
    for (dy, dx), g in grids.items():
        out[:, :, dy::sh, dx::sw] = g[:, :, : rows[dy], : cols[dx]]
    return out[0] if image.dim() == 3 else out


def _stride(model: nn.Module, stride) -> tuple[int, int]:
    if stride is None:
        from fcnkit.geometry import receptive_field  # lazy: geometry traces the model

        stride = receptive_field(model).stride
    if isinstance(stride, int):
        stride = (stride, stride)
    try:
        sh, sw = (int(s) for s in stride)
        ok = (sh, sw) == tuple(stride) and sh >= 1 and sw >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"shift_and_stitch: stride={stride!r} is not a positive int or (h, w) pair of ints")
    return sh, sw
