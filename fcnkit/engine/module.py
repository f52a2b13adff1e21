"""One LightningModule base for every task: optimizer and schedule, divergence check, validation scoring.

A task's module (:mod:`fcnkit.engine.segmentation`, :mod:`fcnkit.engine.classification`) only says
what its loss is and which scores it reports::

    training_step      loss, cells = self.training_loss(batch)     <- the task
                       stop if the loss is not finite (all ranks agree), log train_loss
    validation_step    logits = model(image); val_loss = self.loss(logits, batch)   <- the task
                       confusion matrix += (logits, batch[target_key])
    on_validation_epoch_end
                       scores = self.score_fn(summed matrix)  -> val_<name> for name in score_names
    configure_optimizers   adam | sgd (| heavy = sgd, momentum 0.99), cosine or constant lr

The checkpoint callback reads ``last_scores`` and keeps the best ``monitor`` score.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from fcnkit.engine.config import TrainConfig
from fcnkit.engine.metric import ConfusionMatrix

__all__ = ["FcnkitModule", "NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """Raised inside the training step; the fit loop turns it into an InputError."""

    def __init__(self, step: int, value: float):
        super().__init__(f"non-finite loss {value} at step {step}")
        self.step, self.value = step, value


class FcnkitModule(L.LightningModule):
    """Base of the task modules (see the module docstring); subclasses set the class attributes
    and implement :meth:`loss` and :meth:`training_loss`."""

    #: batch key of the ground truth ("mask" | "label")
    target_key: ClassVar[str]
    #: scores logged as ``val_<name>`` after each validation epoch
    score_names: ClassVar[tuple[str, ...]]
    #: the score whose best value selects RUN/best (shown in the progress bar)
    monitor: ClassVar[str]
    #: confusion matrix -> scores dict (a function of :mod:`fcnkit.metrics`, as a staticmethod)
    score_fn: ClassVar[Callable[[torch.Tensor], dict]]

    def __init__(
        self, model: nn.Module, config: TrainConfig, num_classes: int, class_weights: torch.Tensor | None = None
    ):
        super().__init__()
        self.model, self.config, self.num_classes = model, config, num_classes
        # a buffer so it follows the module to the device; not persistent: it is derived from the data
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.val_cm = ConfusionMatrix(num_classes)
        self.last_scores: dict | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # --- what a task supplies ------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, batch: dict, weight_map: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def training_loss(self, batch: dict) -> tuple[torch.Tensor, Any]:
        """``(loss, cells)``: the step's loss and the number of loss terms it kept (for StepLog)."""
        raise NotImplementedError

    # --- the shared loop pieces ----------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> dict:
        loss, cells = self.training_loss(batch)
        self._stop_if_not_finite(loss)
        self.log(
            "train_loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["image"])
        )
        # "cells": loss terms kept, for the per-step log (fcnkit.engine.steplog.StepLog)
        return {"loss": loss, "cells": cells}

    def _stop_if_not_finite(self, loss: torch.Tensor) -> None:
        # checked BEFORE backward/step, so the weights are still the last good ones. Under DDP
        # every rank must agree, else one rank raises while the others wait in all-reduce.
        bad = (~torch.isfinite(loss.detach())).to(torch.float32)
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        if float(bad) > 0:
            raise NonFiniteLossError(int(self.global_step), float(loss.detach()))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["image"])
        self.log(
            "val_loss",
            self.loss(logits, batch),
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
            batch_size=len(batch["image"]),
        )
        self.val_cm.update(logits.detach(), batch[self.target_key])

    def on_validation_epoch_end(self) -> None:
        cm = self.val_cm.compute()  # synced (summed) over processes
        self.val_cm.reset()
        result = self.score_fn(cm)
        result["confusion_matrix"] = cm.cpu().tolist()
        self.last_scores = result
        for name in self.score_names:
            value = result[name]
            # the same on every rank (computed from the summed matrix), so averaging over ranks
            # (sync_dist) changes nothing; it only tells Lightning the value is global
            self.log(f"val_{name}", 0.0 if math.isnan(value) else value, prog_bar=name == self.monitor, sync_dist=True)

    def configure_optimizers(self):
        cfg = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optimizer == "adam":
            optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:  # sgd and heavy (heavy = sgd with batch 1 and momentum 0.99, set by the config)
            optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        if cfg.lr_schedule == "none":
            return optimizer
        # cosine over the steps this fit will take (epochs or max_steps, whichever ends first);
        # a resumed run keeps the schedule it started with (its state is in trainer.ckpt)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
