"""Models: a registry of builders (``build_model``), all-convolutional nets, FCN-32s/16s/8s.

    from fcnkit.models import build_model, list_models
    model = build_model("fcn8s", num_classes=21, backbone="vgg16")

Names are loaded lazily, so importing this package does not import torchvision.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "build_model": "fcnkit.models.registry",
    "list_models": "fcnkit.models.registry",
    "model_info": "fcnkit.models.registry",
    "register": "fcnkit.models.registry",
    "count_parameters": "fcnkit.models.registry",
    "BilinearUpsample": "fcnkit.models.upsample",
    "bilinear_kernel": "fcnkit.models.upsample",
    "FCN": "fcnkit.models.fcn",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fcnkit.models' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
