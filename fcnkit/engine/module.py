"""One LightningModule base for every task: optimizer and schedule, divergence check, validation scoring.

A task's module (:mod:`fcnkit.engine.segmentation`, :mod:`fcnkit.engine.classification`) only says
what its loss is and which scores it reports::

    training_step      loss, cells = self.training_loss(batch)     <- the task
                       stop if the loss is not finite or diverges (LossGuard; all ranks agree),
                       log train_loss
    validation_step    logits = model(image); val_loss = self.loss(logits, batch)   <- the task
                       confusion matrix += (logits, batch[target_key])
    on_validation_epoch_end
                       scores = self.score_fn(summed matrix)  -> val_<name> for name in score_names
    configure_optimizers   adam | sgd (| heavy = sgd, momentum 0.99), constant, cosine or poly lr, warmup
    on_train_start     a resumed run applies its (new) lr, momentum, weight decay and schedule length

The checkpoint callback reads ``last_scores`` and keeps the best ``monitor`` score.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, cast

import lightning as L
import torch
from torch import nn

from fcnkit.engine.config import TrainConfig
from fcnkit.engine.metric import ConfusionMatrix

__all__ = ["FcnkitModule", "NonFiniteLossError", "LossDivergedError", "LossGuard"]


class NonFiniteLossError(RuntimeError):
    """Raised inside the training step; the fit loop turns it into an InputError."""

    def __init__(self, step: int, value: float):
        super().__init__(f"non-finite loss {value} at step {step}")
        self.step, self.value = step, value


class LossDivergedError(RuntimeError):
    """The loss stayed above ``factor`` x its running median for ``patience`` steps."""

    def __init__(self, step: int, value: float, guard: LossGuard):
        super().__init__(f"loss {value:.3g} at step {step}")
        self.step, self.value = step, value
        self.median, self.factor, self.patience = guard.median, guard.factor, guard.patience


class LossGuard:
    """Divergence beyond NaN: ``update(loss)`` is True once the loss exceeded ``factor`` x the
    median of the last ``window`` accepted losses for ``patience`` steps in a row.

    Losses of a streak are kept apart, so the reference does not climb with a diverging loss
    (a median of the last 100 losses would, after 50 bad steps); a streak that ends joins the
    window (the loss really moved). ``suspect`` is True during a streak: the checkpoint callback
    then writes nothing (``FcnkitModule.loss_suspect``: any rank's), so ``last/`` keeps the last
    good weights. Its state is saved with the
    trainer state (plain floats), so a resumed run decides exactly as an uninterrupted one.
    """

    def __init__(self, factor: float = 100.0, patience: int = 20, window: int = 100):
        self.factor, self.patience, self.window = float(factor), int(patience), int(window)
        self.accepted: list[float] = []
        self.streak: list[float] = []

    @property
    def median(self) -> float:
        ordered = sorted(self.accepted)
        return ordered[len(ordered) // 2] if ordered else math.nan

    @property
    def suspect(self) -> bool:
        return bool(self.streak)

    def update(self, value: float) -> bool:
        if self.accepted and value > self.factor * self.median:
            self.streak.append(value)
            return len(self.streak) >= self.patience
        self.accepted = (self.accepted + self.streak + [value])[-self.window :]
        self.streak = []
        return False

    def state_dict(self) -> dict:
        return {"accepted": [float(v) for v in self.accepted], "streak": [float(v) for v in self.streak]}

    def load_state_dict(self, state: dict) -> None:
        self.accepted, self.streak = list(state.get("accepted", [])), list(state.get("streak", []))


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
    score_fn: ClassVar[staticmethod[[torch.Tensor], dict]]
    #: the buffer registered in __init__ (declared: nn.Module attributes are untyped)
    class_weights: torch.Tensor | None

    def __init__(
        self, model: nn.Module, config: TrainConfig, num_classes: int, class_weights: torch.Tensor | None = None
    ):
        super().__init__()
        self.model, self.config, self.num_classes = model, config, num_classes
        # a buffer so it follows the module to the device; not persistent: it is derived from the data
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.val_cm = ConfusionMatrix(num_classes)
        self.loss_guard = LossGuard(config.divergence_factor, config.divergence_patience)
        self.loss_suspect = False  # some rank's guard is in a streak (see _stop_if_diverged)
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
        self._stop_if_diverged(loss)
        self.log(
            "train_loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["image"])
        )
        # "cells": loss terms kept, for the per-step log (fcnkit.engine.steplog.StepLog)
        return {"loss": loss, "cells": cells}

    def _stop_if_diverged(self, loss: torch.Tensor) -> None:
        # checked BEFORE backward/step, so the weights are still the last good ones. Under DDP
        # every rank must agree, else one rank raises while the others wait in all-reduce.
        value = float(loss.detach())
        diverged = math.isfinite(value) and self.loss_guard.update(value)
        bad = torch.tensor([0.0 if math.isfinite(value) else 1.0, float(diverged), float(self.loss_guard.suspect)])
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce(bad.to(loss.device), reduce_op="sum").cpu()
        # any rank's suspicion holds back every rank's checkpoint (saving is collective)
        self.loss_suspect = float(bad[2]) > 0
        if float(bad[0]) > 0:
            raise NonFiniteLossError(int(self.global_step), value)
        if float(bad[1]) > 0:
            raise LossDivergedError(int(self.global_step), value, self.loss_guard)

    def on_train_start(self) -> None:
        # a resumed run restored the optimizer's lr, momentum and weight decay and the schedule's
        # base lr from trainer.ckpt: apply this run's settings (those that may change on resume)
        # one optimizer (configure_optimizers), under a LightningOptimizer
        wrapped = self.optimizers()
        optimizer = cast(torch.optim.Optimizer, getattr(wrapped, "optimizer", wrapped))
        lr = self.config.lr
        assert lr is not None  # the config is resolved (TrainConfig.resolved fills in the lr)
        schedulers = self.lr_schedulers()
        schedule = schedulers[0] if isinstance(schedulers, list) else schedulers
        for group in optimizer.param_groups:
            group["initial_lr"] = lr
            group["weight_decay"] = self.config.weight_decay
            if "momentum" in group:
                group["momentum"] = self.config.momentum
            factor = self._lr_factor(schedule.last_epoch) if schedule is not None else 1.0
            group["lr"] = lr * factor
        if schedule is not None:
            schedule.base_lrs = [lr] * len(optimizer.param_groups)
            schedule._last_lr = [group["lr"] for group in optimizer.param_groups]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["fcnkit_loss_guard"] = self.loss_guard.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "fcnkit_loss_guard" in checkpoint:
            self.loss_guard.load_state_dict(checkpoint["fcnkit_loss_guard"])
        for state in checkpoint.get("lr_schedulers", []):  # runs before fcnkit 10a: CosineAnnealingLR
            state.setdefault("lr_lambdas", [None] * len(state.get("base_lrs", [None])))

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
            if name not in result:  # a score function that does not compute it (e.g. an older one)
                continue
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
        warmup = int(getattr(cfg, "warmup_steps", 0) or 0)
        if cfg.lr_schedule == "none" and not warmup:
            return optimizer
        # the schedule (fcnkit.training.schedules: warmup, cosine or poly) over the steps of the whole
        # run (epochs or max_steps, whichever ends first), in closed form of the step: a resumed run
        # with more epochs or another lr follows the schedule of its new length from the step it is at
        self._total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self._lr_factor(step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def _lr_factor(self, step: int) -> float:
        from fcnkit.training.schedules import lr_factor

        cfg = self.config
        warmup = int(getattr(cfg, "warmup_steps", 0) or 0)
        return lr_factor(step, getattr(self, "_total_steps", 1), cfg.lr_schedule, warmup)
