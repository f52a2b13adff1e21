"""Learning-rate schedules as one pure function of the step (core: no torch needed to compute it).

``lr(step) = base_lr * lr_factor(step, total_steps, schedule, warmup_steps)``, wrapped by the engine
in ``torch.optim.lr_scheduler.LambdaLR`` and stepped once per optimizer step::

    warmup (step < W):   (step + 1) / W                     linear ramp up to the base lr
    then t = step - W, T = total_steps - W:
      none               1
      poly               (1 - t / T) ** power  (power 0.9: the FCN reference's and torchvision's)
      cosine             (1 + cos(pi * t / T)) / 2

The factor reaches 0 at ``t = T`` (the last step) and stays 0 after it (a resumed run that trains
longer than planned keeps lr 0 rather than going negative).
"""

from __future__ import annotations

import math

__all__ = ["LR_SCHEDULES", "POLY_POWER", "lr_factor"]

LR_SCHEDULES = ("none", "cosine", "poly")
POLY_POWER = 0.9


def lr_factor(
    step: int, total_steps: int, schedule: str = "none", warmup_steps: int = 0, power: float = POLY_POWER
) -> float:
    """The multiplier of the base learning rate at optimizer step ``step`` (0-based); see the module doc."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; use one of {', '.join(LR_SCHEDULES)}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "none":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    if schedule == "poly":
        return (1.0 - progress) ** power
    return 0.5 * (1.0 + math.cos(math.pi * progress))
