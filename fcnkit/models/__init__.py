"""Models: a registry of builders (``build_model``), all-convolutional nets, FCN-32s/16s/8s.

    from fcnkit.models import build_model, list_models
    model = build_model("fcn8s", num_classes=21, backbone="vgg16")

Names are loaded lazily, so importing this package does not import torchvision.
"""

from __future__ import annotations

from fcnkit.utils.lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
