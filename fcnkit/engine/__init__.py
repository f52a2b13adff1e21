"""Engine: the Lightning layer (LightningModules, DataModules, callbacks, the fit loop, the run log).

Imports only the core (``fcnkit.models``, ``data``, ``training``, ``metrics``, ...); the jobs that
prepare run folders and write reports are in :mod:`fcnkit.app`. Names load lazily so that
``import fcnkit.engine.config`` does not import Lightning.
"""

from __future__ import annotations

from fcnkit.utils.lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "fcnkit.engine.config",
    "load_config": "fcnkit.engine.config",
    "FcnkitModule": "fcnkit.engine.module",
    "SegmentationModule": "fcnkit.engine.segmentation",
    "ClassificationModule": "fcnkit.engine.classification",
    "fit": "fcnkit.engine.loop",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
