"""Receptive-field geometry of any network: size, stride, offset and a per-layer table.

``receptive_field(model)`` traces the operations the model actually runs (convolutions, pooling,
dilation, transposed convolutions, interpolation, crops, padding, residual additions,
concatenations, fcnkit's FCN heads) and derives, exactly, where each output cell looks::

    input  x:  |<-- offset -->|<-------- size -------->|
    output:                   cell 0     cell 1 = cell 0 + stride

``method="probe"`` measures the same by back-propagating from output cells; the two agree.
Tiled inference (halo, tile alignment), patchwise training and conversion checks read it.
"""

from __future__ import annotations

from torch import nn

from fcnkit.errors import InputError, did_you_mean
from fcnkit.geometry.features import check_feature_info
from fcnkit.geometry.result import Geometry, LayerGeometry

__all__ = ["receptive_field", "Geometry", "LayerGeometry", "check_feature_info"]

_METHODS = ("analytic", "probe")


def receptive_field(
    model: nn.Module, in_channels: int = 3, method: str = "analytic", input_size: tuple[int, int] | None = None
) -> Geometry:
    """Receptive field ``size``, effective ``stride`` and ``offset`` of ``model``'s output cells.

    Args:
        model: any module mapping ``[B, C, H, W]`` to a score map (a tensor, a dict with ``"out"``
            or a tuple whose first item is the map). Classifiers with ``forward_dense`` are
            measured on their score map before pooling. The model is not modified.
        in_channels: channels of the input.
        method: ``"analytic"`` traces one forward pass on a meta-device input (no compute) and
            fills the per-layer table ``layers``; ``"probe"`` measures size/stride/offset/align by
            gradients from a run of output cells (slower, no table).
        input_size: ``(H, W)`` to trace at (the table's ``out`` column); by default an odd size
            large enough for the model (so a resize whose ratio depends on the image shows up).

    Returns:
        :class:`Geometry`; output cell ``(i, j)`` sees the input window centred at
        ``offset + (i, j) * stride`` of extent ``size``. ``blockers`` lists layers that make the
        output depend on the whole image (then tiling cannot be exact).

    Example:
        >>> import torchvision
        >>> g = receptive_field(torchvision.models.vgg16(weights=None).features)
        >>> g.size, g.stride
        ((212, 212), (32, 32))
    """
    if method not in _METHODS:
        raise InputError(
            f"method={method!r} is not known; use one of {', '.join(_METHODS)}{did_you_mean(method, _METHODS)}"
        )
    if not isinstance(model, nn.Module):
        raise InputError(f"receptive_field needs a torch.nn.Module, got {type(model).__name__}; pass the model itself")
    if method == "probe":
        from fcnkit.geometry.probe import probe_geometry

        return probe_geometry(model, in_channels)
    from fcnkit.geometry.analytic import analytic_geometry

    return analytic_geometry(model, in_channels, input_size)
