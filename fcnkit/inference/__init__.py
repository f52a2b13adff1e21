"""Inference: whole-image or tiled prediction that equals whole-image prediction.

``fcnkit.predict`` (defined in ``fcnkit.inference.predict``: logits of one image), ``open_image``
(a lazy, tile-by-tile normalised image file) and ``plan_tiles`` (the pure-geometry tile planner).
The ``fcnkit predict`` job over files is :mod:`fcnkit.app.predict`. The submodule ``predict`` keeps its name (it is
not shadowed by the function), so ``import fcnkit.inference.predict`` gives the module.
"""

from __future__ import annotations

from fcnkit.utils.lazy import lazy_exports

__all__ = ["open_image", "plan_tiles"]

_EXPORTS = {
    "open_image": "fcnkit.inference.sources",
    "plan_tiles": "fcnkit.inference.tiling",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
