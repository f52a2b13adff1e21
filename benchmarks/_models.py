"""What several benchmarks build: models with no all-zero parameters.

FCN and allconv start their score layers at zero, so an untrained model's logits are all 0 and every
"max difference" would be 0 trivially: the benchmarks give those parameters random values instead.
"""

from __future__ import annotations

import torch
from torch import nn


def randomise_zero_parameters(model: nn.Module, std: float) -> nn.Module:
    """Random normal values (``std``) for every parameter that is all zeros; returns ``model``."""
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, std)
    return model
