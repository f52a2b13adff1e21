"""Check a backbone's declared feature taps against its traced geometry."""

from __future__ import annotations

from torch import nn

from fcnkit.geometry.result import Geometry

__all__ = ["tap_geometry", "check_feature_info"]


def tap_geometry(geometry: Geometry, module: str) -> tuple[int, float]:
    """``(stride, offset)`` of the output grid of the module path ``module`` (its last traced layer)."""
    layers = [layer for layer in geometry.layers if layer.name == module or layer.name.startswith(module + ".")]
    if not layers:
        raise ValueError(f"no traced layer under {module!r}; check the feature tap's module path")
    return int(layers[-1].jump[0]), float(layers[-1].offset[0])


def check_feature_info(model: nn.Module, in_channels: int = 3) -> None:
    """Raise ``ValueError`` listing every tap of ``model.feature_info`` whose declared stride or
    offset differs from what :func:`fcnkit.receptive_field` traces for its module."""
    from fcnkit.geometry import receptive_field

    geometry = receptive_field(model, in_channels=in_channels)
    wrong = []
    for tap in model.feature_info:  # type: ignore[union-attr]  # a FeatureInfo, set by the backbone
        traced = tap_geometry(geometry, tap.module)
        if traced != (tap.stride, tap.offset):
            wrong.append(f"{tap.name}: declared stride {tap.stride}, offset {tap.offset}; traced {traced}")
    if wrong:
        raise ValueError("feature taps disagree with the geometry: " + "; ".join(wrong))
