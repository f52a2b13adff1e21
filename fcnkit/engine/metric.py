"""The confusion-matrix metric: a thin ``torchmetrics.Metric`` over :func:`fcnkit.metrics.confusion_matrix`.

Its only state is the matrix, summed over batches and processes (confusion matrices add, scores
do not); the scores come from the functional core (:mod:`fcnkit.metrics`).
"""

from __future__ import annotations

from typing import Any

import torch
import torchmetrics

from fcnkit.constants import IGNORE_INDEX
from fcnkit.metrics import confusion_matrix

__all__ = ["ConfusionMatrix"]


class ConfusionMatrix(torchmetrics.Metric):
    """Sum of confusion matrices ``[K, K]`` (rows = ground truth); ``compute()`` returns the matrix.

    ``update(logits_or_labels, target)`` takes logits ``[B, K, ...]`` (argmax is taken) or labels
    of ``target``'s shape. The state is ``dist_reduce_fx="sum"``: confusion matrices of several
    processes add up to the matrix of the whole validation set, which the scores are computed from.
    """

    cm: torch.Tensor  # the state registered by add_state (nn.Module attributes are untyped)
    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.add_state("cm", default=torch.zeros(num_classes, num_classes, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        labels = preds.argmax(1) if preds.ndim == target.ndim + 1 else preds
        self.cm += confusion_matrix(labels, target, self.num_classes, self.ignore_index).to(self.cm.device)

    def compute(self) -> torch.Tensor:
        return self.cm
