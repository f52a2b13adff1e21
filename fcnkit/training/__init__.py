"""Training: the one pixelwise loss, regimes, config, and whole-image training with Lightning.

Loaded lazily so that ``import fcnkit.training.losses`` (core) never pulls in Lightning:
``train`` imports it on first use. (``evaluate`` is
the submodule name, so its function is ``fcnkit.training.evaluate.evaluate``.)
"""
from __future__ import annotations

from fcnkit.utils.lazy import lazy_exports

_EXPORTS = {
    "train": "fcnkit.training.run",
    "TrainConfig": "fcnkit.training.config",
    "load_config": "fcnkit.training.config",
    "pixelwise_loss": "fcnkit.training.losses",
    "class_weights_from_masks": "fcnkit.training.losses",
    "build_regime": "fcnkit.training.regimes",
    "write_report": "fcnkit.training.report",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
