"""Training regimes as small value objects (core: torch only).

A regime changes only two things: what enters a batch (a sampler; ``None`` = the dataset's own
order) and the per-cell weight map handed to :func:`fcnkit.training.losses.pixelwise_loss`.
The LightningModule asks its regime for both, so a new regime (loss sampling, class-balanced
sampling, patchwise) is a new class here, never a new trainer::

    batch --regime.weight_map(batch, logits)--> weight map --pixelwise_loss--> loss

Only ``whole`` (whole-image training, every labelled cell weighs 1) exists so far.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fcnkit.errors import InputError, did_you_mean

__all__ = ["Regime", "WholeImage", "build_regime", "REGIMES", "PLANNED_REGIMES"]


@dataclass(frozen=True)
class Regime:
    """Base regime: no sampler, no weight map (every labelled cell counts once)."""

    name: str = "whole"

    def sampler(self, dataset) -> Any:
        """A ``torch.utils.data.Sampler`` over ``dataset`` for training, or ``None`` for shuffling."""
        return None

    def weight_map(self, batch: dict, logits: torch.Tensor) -> torch.Tensor | None:
        """Per-cell loss weights ``[B, H, W]`` for this batch, or ``None`` for all ones."""
        return None

    def options(self) -> dict:
        """The regime's settings, as saved in the resolved config."""
        return {"name": self.name}


@dataclass(frozen=True)
class WholeImage(Regime):
    """Whole-image training (FCN Sec. 4.4): each image is one batch item, all its labelled cells count."""

    name: str = "whole"


REGIMES = {"whole": WholeImage}
# announced by the design, built by later work: named here so the error can say so
PLANNED_REGIMES = ("patchwise", "loss-sampling", "class-balanced")


def build_regime(spec: str | dict | None) -> Regime:
    """``"whole"``, ``{"name": "whole"}`` or ``None`` -> a :class:`Regime`."""
    if spec is None:
        spec = {"name": "whole"}
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise InputError(f"regime: expected a name or a mapping with 'name', got {spec!r}; use e.g. regime: {{name: whole}}")
    spec = dict(spec)
    name = str(spec.pop("name", "whole"))
    if name in PLANNED_REGIMES:
        raise InputError(f"regime '{name}' is not implemented yet; use regime: {{name: whole}}")
    if name not in REGIMES:
        raise InputError(f"regime: unknown name '{name}'{did_you_mean(name, REGIMES)}; available: {', '.join(REGIMES)}")
    if spec:
        raise InputError(f"regime '{name}' takes no options, got {', '.join(map(str, spec))}; remove them")
    return REGIMES[name]()
