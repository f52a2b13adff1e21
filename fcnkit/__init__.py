"""fcnkit: fully convolutional networks made explicit.

The public API is small and loaded lazily, so ``import fcnkit`` stays cheap and the core never
imports Lightning. Modules: ``fcnkit.metrics``, ``fcnkit.models``, ``fcnkit.data``,
``fcnkit.inference``, ``fcnkit.training`` (the only one that uses Lightning).
"""

from __future__ import annotations

from fcnkit.utils.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "build_model": "fcnkit.models.registry",
    "list_models": "fcnkit.models.registry",
    "convolutionalize": "fcnkit.convert",
    "replace_downsampling": "fcnkit.convert",
    "receptive_field": "fcnkit.geometry",
    "Geometry": "fcnkit.geometry",
    "predict": "fcnkit.inference.predict",
    "shift_and_stitch": "fcnkit.inference.shift_stitch",
    "save_checkpoint": "fcnkit.checkpoint",
    "load_checkpoint": "fcnkit.checkpoint",
    "equivalent_patch_batch": "fcnkit.training.equivalence",
    "tiled_backward": "fcnkit.training.tiled_backward",
    "FcnkitError": "fcnkit.errors",
    "train": "fcnkit.app.train",
    "TrainConfig": "fcnkit.engine.config",
    "predict_files": "fcnkit.app.predict",
    "evaluate": "fcnkit.app.evaluate",
}
_SUBMODULES = {
    "metrics",
    "models",
    "data",
    "inference",
    "training",
    "geometry",
    "convert",
    "checkpoint",
    "engine",
    "app",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _SUBMODULES)
