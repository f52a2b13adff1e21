"""Lightning glue: the LightningModule, the LightningDataModule and the confusion-matrix metric.

The engine (loop, devices, DDP, precision, logging) is Lightning's; this file only says what a
step is. The loss is :func:`~fcnkit.training.losses.pixelwise_loss` with the weight map of the
regime (:mod:`fcnkit.training.regimes`); validation accumulates one confusion matrix per epoch
in :class:`ConfusionMatrix`, a torchmetrics ``Metric`` whose state is summed across processes,
and the scores come from :func:`fcnkit.metrics.scores`.
"""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn

from fcnkit.errors import InputError
from fcnkit.metrics import SCORE_NAMES, confusion_matrix, scores
from fcnkit.training.config import TrainConfig
from fcnkit.training.losses import pixelwise_loss
from fcnkit.training.regimes import Regime, WholeImage, count_kept_cells

__all__ = ["ConfusionMatrix", "SegmentationModule", "SegmentationDataModule", "NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """Raised inside the training step; ``fcnkit.training.run.train`` turns it into an InputError."""

    def __init__(self, step: int, value: float):
        super().__init__(f"non-finite loss {value} at step {step}")
        self.step, self.value = step, value


class ConfusionMatrix(torchmetrics.Metric):
    """Sum of confusion matrices ``[K, K]`` (rows = ground truth); ``compute()`` returns the matrix.

    ``update(logits_or_labels, target)`` takes logits ``[B, K, H, W]`` (argmax is taken) or labels
    ``[B, H, W]``. The state is ``dist_reduce_fx="sum"``: confusion matrices of several processes
    add up to the matrix of the whole validation set, which the scores are computed from.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.add_state("cm", default=torch.zeros(num_classes, num_classes, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        labels = preds.argmax(1) if preds.ndim == target.ndim + 1 else preds
        self.cm += confusion_matrix(labels, target, self.num_classes, self.ignore_index).to(self.cm.device)

    def compute(self) -> torch.Tensor:
        return self.cm


class SegmentationModule(L.LightningModule):
    """Trains a segmentation model with the pixelwise loss; validates with the FCN scores.

    Logged: ``train_loss`` (step and epoch), ``val_loss``, ``val_pixel_accuracy``,
    ``val_mean_accuracy``, ``val_mean_iu``, ``val_fw_iu``. After each validation epoch
    ``last_scores`` holds the scores and the confusion matrix (for the checkpoint callback).
    """

    def __init__(self, model: nn.Module, config: TrainConfig, num_classes: int,
                 class_weights: torch.Tensor | None = None, regime: Regime | None = None):
        super().__init__()
        self.model = model
        self.config = config
        self.num_classes = num_classes
        self.regime = regime or WholeImage()
        # a buffer so it follows the module to the device; not persistent: it is derived from the data
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.val_cm = ConfusionMatrix(num_classes)
        self.last_scores: dict | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _loss(self, batch: dict, logits: torch.Tensor, weight_map=None) -> torch.Tensor:
        mask = batch["mask"]
        if logits.shape[-2:] != mask.shape[-2:]:
            raise InputError(
                f"model '{self.config.model}' returns {tuple(logits.shape[-2:])} scores for {tuple(mask.shape[-2:])} masks; "
                "use a model that upsamples to the input size (for allconv, not output='coarse')"
            )
        return pixelwise_loss(logits, mask, weight_map=weight_map, class_weights=self.class_weights)

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        logits = self(batch["image"])
        # random regimes draw per (step, process): reproducible, and each process draws its own
        weight_map = self.regime.weight_map(batch, logits, step=self.global_step, rank=self.global_rank)
        loss = self._loss(batch, logits, weight_map)
        self._stop_if_not_finite(loss)
        self.log("train_loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["image"]))
        # "cells": loss cells kept, for the per-step log (fcnkit.training.steplog.StepLog)
        return {"loss": loss, "cells": count_kept_cells(batch["mask"], weight_map, self.class_weights)}

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
        loss = self._loss(batch, logits)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(batch["image"]))
        self.val_cm.update(logits.detach(), batch["mask"])

    def on_validation_epoch_end(self) -> None:
        cm = self.val_cm.compute()  # synced (summed) over processes
        self.val_cm.reset()
        result = scores(cm)
        result["confusion_matrix"] = cm.cpu().tolist()
        self.last_scores = result
        for name in SCORE_NAMES:
            value = result[name]
            # the same on every rank (computed from the summed matrix), so averaging over ranks
            # (sync_dist) changes nothing; it only tells Lightning the value is global
            self.log(f"val_{name}", 0.0 if math.isnan(value) else value, prog_bar=name == "mean_iu", sync_dist=True)

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


class SegmentationDataModule(L.LightningDataModule):
    """Train and validation loaders over ``fcnkit.data.load_dataset`` with ``pad_collate``.

    Batches of images of different sizes are padded (image 0, mask 255 = ignore), so whole-image
    training needs no resizing. The training set is read in ``__init__`` because the model's
    ``num_classes``/``in_channels`` come from its ``info``.
    """

    def __init__(self, config: TrainConfig, regime: Regime | None = None):
        super().__init__()
        from fcnkit.data import load_dataset

        self.config = config
        self.regime = regime or WholeImage()
        self.train_set = load_dataset(config.data, split="train", **config.data_options)
        self.val_set = load_dataset(config.data, split=config.val_split, **{**config.data_options, **config.val_data_options})
        self.info = self.train_set.info
        if len(self.train_set) == 0:
            raise InputError(f"data '{config.data}': the training split is empty; add images or check data_options")
        if len(self.val_set) == 0:
            raise InputError(f"data '{config.data}': the '{config.val_split}' split is empty; add validation images or set val_split")

    def train_dataloader(self):
        from torch.utils.data import DataLoader

        from fcnkit.data import pad_collate

        dataset = _Augmented(self.train_set, self.config.augment) if self.config.augment else self.train_set
        dataset = self.regime.train_dataset(dataset)  # patchwise: crops of each image
        sampler = self.regime.train_sampler(dataset)
        return DataLoader(dataset, batch_size=self.regime.batch_size(self.config.batch_size), shuffle=sampler is None,
                          sampler=sampler, collate_fn=self.regime.collate_fn() or pad_collate, num_workers=self.config.num_workers,
                          persistent_workers=self.config.num_workers > 0, drop_last=False)

    def val_dataloader(self):
        from torch.utils.data import DataLoader

        from fcnkit.data import pad_collate

        return DataLoader(self.val_set, batch_size=self.config.batch_size, shuffle=False, collate_fn=pad_collate,
                          num_workers=self.config.num_workers, persistent_workers=self.config.num_workers > 0)


class _Augmented(torch.utils.data.Dataset):
    """Applies fcnkit.data's paired transforms (``t(sample, generator)``) to each training item.

    Each item gets a generator seeded from torch's global RNG, which ``seed_everything`` seeds
    and the DataLoader reseeds per worker: runs are reproducible, epochs differ.
    """

    def __init__(self, dataset, names: list[str]):
        from fcnkit.data import Compose, RandomHorizontalFlip, RandomScale

        available = {"flip": lambda: RandomHorizontalFlip(0.5), "scale": lambda: RandomScale(0.75, 1.25)}
        self.dataset = dataset
        self.info = getattr(dataset, "info", None)
        self.transform = Compose([available[name]() for name in names])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
        return self.transform(self.dataset[i], generator)
