"""The classification task's Lightning pieces (``task: classification``): module and DataModule.

A classification FCN (``allconv_cls``) takes any input size; batches hold one size each
(:mod:`fcnkit.data.sized_batches`). Scores (validation, ``fcnkit evaluate``): ``accuracy`` (top-1),
``per_class_accuracy`` (recall of each class) and their mean ``mean_accuracy``, all from one
confusion matrix summed over batches and processes (:func:`fcnkit.metrics.classification_scores`).
The best checkpoint is the one with the highest validation accuracy.
"""

from __future__ import annotations

import os

import lightning as L
import torch
import torch.nn.functional as F

from fcnkit.data.sized_batches import (
    SizedItems,
    SizeGroupedBatchSampler,
    item_sizes,
    parse_sizes,
)
from fcnkit.engine.config import TrainConfig
from fcnkit.engine.module import FcnkitModule
from fcnkit.engine.resumable import eval_sampler, loader_generator, resumable_loader
from fcnkit.engine.segmentation import AugmentedDataset
from fcnkit.errors import InputError
from fcnkit.metrics import CLASSIFICATION_SCORE_NAMES, classification_scores

__all__ = ["ClassificationModule", "ClassificationDataModule"]


class ClassificationModule(FcnkitModule):
    """Trains a classification model (``forward -> logits[B, K]``) with cross-entropy.

    Logged: ``train_loss`` (step and epoch), ``val_loss``, ``val_accuracy``, ``val_mean_accuracy``.
    """

    target_key = "label"
    score_names = CLASSIFICATION_SCORE_NAMES
    monitor = "accuracy"
    score_fn = staticmethod(classification_scores)

    def loss(self, logits: torch.Tensor, batch: dict, weight_map: torch.Tensor | None = None) -> torch.Tensor:
        if logits.ndim != 2:
            raise InputError(
                f"model '{self.config.model}' returns logits of shape {tuple(logits.shape)}, not [B, K]; "
                "use a classification model (fcnkit models), e.g. allconv_cls"
            )
        return F.cross_entropy(logits, batch["label"], weight=self.class_weights)

    def training_loss(self, batch: dict) -> tuple[torch.Tensor, int]:
        # "cells": the loss terms, one per image
        return self.loss(self(batch["image"]), batch), len(batch["label"])


class ClassificationDataModule(L.LightningDataModule):
    """Train/val loaders whose batches each hold one input size (:class:`SizeGroupedBatchSampler`).

    ``config.sizes`` resizes training batches to sizes drawn from that list; validation runs at
    the images' own sizes. ``augment: [flip]`` flips training images; ``scale`` is refused
    (a random size per image cannot be batched without padding): use ``sizes``.
    """

    def __init__(self, config: TrainConfig):
        super().__init__()
        from fcnkit.data import load_dataset

        self.config = config
        self.sizes = parse_sizes(config.sizes)
        if isinstance(config.augment, list) and "scale" in config.augment:  # resolved: a list of names
            raise InputError(
                "augment: scale is not available for classification (a random size per image would need "
                "padding, which changes the global average); use sizes: [24, 28, 36] to train at several sizes"
            )
        assert config.data is not None  # the config is resolved (TrainConfig.resolved requires data)
        self.train_set = load_dataset(config.data, split="train", **config.data_options)
        self.val_set = load_dataset(
            config.data, split=config.val_split, **{**config.data_options, **config.val_data_options}
        )
        self.info = self.train_set.info
        for split, ds in (("training", self.train_set), (f"'{config.val_split}'", self.val_set)):
            if len(ds) == 0:
                raise InputError(
                    f"data '{config.data}': the {split} split is empty; add images or check data_options/val_split"
                )
        self._train_sizes = None if self.sizes else item_sizes(self.train_set)
        distributed = config.devices > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1
        if distributed and self._train_sizes and len(set(self._train_sizes)) > 1:
            raise InputError(
                f"data '{config.data}': training images of {len(set(self._train_sizes))} sizes cannot be split "
                "evenly over DDP processes; resize them with sizes: [...] (e.g. sizes: [28]) or train on one device"
            )
        self._val_sizes = item_sizes(self.val_set)

    @property
    def train_batch_size(self) -> int:
        assert self.config.batch_size is not None  # the config is resolved (default 8)
        return self.config.batch_size

    def _loader(self, dataset, sampler, sizes, native):
        from torch.utils.data import DataLoader

        from fcnkit.data import (
            pad_collate,  # stacks a one-size batch as it is (no padding happens)
        )

        batches = SizeGroupedBatchSampler(
            sampler, self.config.batch_size, drop_last=False, item_sizes=native, sizes=sizes
        )
        workers = self.config.num_workers
        return DataLoader(
            SizedItems(dataset),
            batch_sampler=batches,
            collate_fn=pad_collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=loader_generator(),
        )

    def train_dataloader(self):
        from fcnkit.data import pad_collate

        dataset = AugmentedDataset(self.train_set, self.config.augment) if self.config.augment else self.train_set
        workers = self.config.num_workers

        def batches(sampler):
            return SizeGroupedBatchSampler(
                sampler, self.config.batch_size, drop_last=False, item_sizes=self._train_sizes, sizes=self.sizes
            )

        # resumes mid-epoch, bit for bit (fcnkit.engine.resumable)
        return resumable_loader(
            SizedItems(dataset),
            self.trainer,
            self.config.seed,
            self.config.batch_size,
            make_batches=batches,
            collate_fn=pad_collate,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def val_dataloader(self):
        return self._loader(self.val_set, eval_sampler(self.val_set, self.trainer), None, self._val_sizes)
