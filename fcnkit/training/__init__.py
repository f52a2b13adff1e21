"""Training: the one pixelwise loss, regimes, config, and whole-image training with Lightning.

Loaded lazily so that ``import fcnkit.training.losses`` (core) never pulls in Lightning:
``train`` imports it on first use. (``evaluate`` is
the submodule name, so its function is ``fcnkit.training.evaluate.evaluate``.)
"""
from __future__ import annotations

import importlib

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


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fcnkit.training' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
