"""Inference: whole-image or tiled prediction that equals whole-image prediction.

``fcnkit.predict`` (defined in ``fcnkit.inference.predict``: logits of one image), ``open_image``
(a lazy, tile-by-tile normalised image file), ``plan_tiles`` (the pure-geometry tile planner),
``predict_files`` (the ``fcnkit predict`` job). The submodule ``predict`` keeps its name (it is
not shadowed by the function), so ``import fcnkit.inference.predict`` gives the module.
"""
from __future__ import annotations

import importlib

__all__ = ["open_image", "plan_tiles", "predict_files"]

_EXPORTS = {
    "open_image": "fcnkit.inference.sources",
    "plan_tiles": "fcnkit.inference.tiling",
    "predict_files": "fcnkit.inference.files",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fcnkit.inference' has no attribute {name!r}")
