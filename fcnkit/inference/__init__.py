"""Inference: whole-image or tiled prediction that equals whole-image prediction.

``predict`` (logits of one image), ``open_image`` (a lazy, tile-by-tile normalised image file),
``plan_tiles`` (the pure-geometry tile planner), ``predict_files`` (the ``fcnkit predict`` job).
"""
from __future__ import annotations

import importlib

# the function shadows its module's name here on purpose: fcnkit.inference.predict(...) works
from fcnkit.inference.predict import predict

__all__ = ["predict", "open_image", "plan_tiles", "predict_files"]

_EXPORTS = {
    "open_image": "fcnkit.inference.sources",
    "plan_tiles": "fcnkit.inference.tiling",
    "predict_files": "fcnkit.inference.files",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fcnkit.inference' has no attribute {name!r}")
