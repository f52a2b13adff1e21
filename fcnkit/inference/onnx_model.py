"""An exported ONNX model as a PyTorch-callable model, so ``fcnkit.predict`` (whole or tiled) runs it.

``OnnxModel("model.onnx")`` wraps an ``onnxruntime.InferenceSession``: ``model(x)`` takes and
returns torch tensors (``[B, C, H, W] -> [B, K, H', W']``). fcnkit's exporter stores the checkpoint
config (classes, palette, normalisation) and the receptive-field geometry in the ONNX model's
metadata (``metadata_props``); ``model.config`` and ``model.fcnkit_geometry`` read them back, so
tiled prediction needs no PyTorch model to trace.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from fcnkit.errors import InputError, MissingFileError

__all__ = ["OnnxModel", "METADATA_KEY", "geometry_to_json", "geometry_from_json"]

METADATA_KEY = "fcnkit"  # metadata_props key holding {"config": ..., "geometry": ...} as JSON


def geometry_to_json(g) -> dict:
    """A :class:`~fcnkit.geometry.Geometry` as plain JSON (fractions as [numerator, denominator])."""
    from fractions import Fraction

    def pair(p):
        return [[Fraction(v).numerator, Fraction(v).denominator] for v in p]

    return {
        "size": pair(g.size),
        "stride": pair(g.stride),
        "offset": pair(g.offset),
        "align": list(g.align),
        "blockers": list(g.blockers),
        "input_multiple": list(g.input_multiple),
    }


def geometry_from_json(d: dict):
    from fractions import Fraction

    from fcnkit.geometry.result import Geometry, number

    def pair(p):
        return tuple(number(Fraction(a, b)) for a, b in p)

    return Geometry(
        size=pair(d["size"]),
        stride=pair(d["stride"]),
        offset=pair(d["offset"]),
        align=tuple(d["align"]),
        blockers=tuple(d.get("blockers", ())),
        input_multiple=tuple(d.get("input_multiple", (1, 1))),
        method="exported",
    )


class OnnxModel(nn.Module):
    """An ONNX file run by onnxruntime behind the ``nn.Module`` call interface (inference only)."""

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None):
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"{path}: no such ONNX file; write one with 'fcnkit export RUN_DIR --format onnx'")
        try:
            import onnxruntime as ort
        except ImportError:
            raise InputError("the ONNX backend needs onnxruntime; pip install 'fcnkit[onnx]'") from None
        available = ort.get_available_providers()
        providers = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            first = (str(exc).strip().splitlines() or ["unreadable"])[0][:200]
            raise InputError(f"{path}: not a loadable ONNX model ({first}); re-export it") from None
        self.path = path
        self.input_name = self.session.get_inputs()[0].name
        meta = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        info = json.loads(meta) if meta else {}
        self.config: dict = info.get("config", {})
        self.fcnkit_geometry = geometry_from_json(info["geometry"]) if info.get("geometry") else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.session.run(None, {self.input_name: x.detach().to("cpu", torch.float32).contiguous().numpy()})[0]
        return torch.from_numpy(y)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, providers={self.session.get_providers()}"
