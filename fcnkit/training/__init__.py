"""Training core (no Lightning): the one pixelwise loss, regimes, samplers, patchwise equivalence, FLOPs.

These work from any training loop. The Lightning loop is :mod:`fcnkit.engine`; the ``train`` job
(run folders, resume, reports) is :func:`fcnkit.train` (:mod:`fcnkit.app.train`).
"""

from __future__ import annotations

from fcnkit.utils.lazy import lazy_exports

_EXPORTS = {
    "pixelwise_loss": "fcnkit.training.losses",
    "class_weights_from_masks": "fcnkit.training.losses",
    "build_regime": "fcnkit.training.regimes",
    "equivalent_patch_batch": "fcnkit.training.equivalence",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
