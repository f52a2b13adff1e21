"""The segmentation task's Lightning pieces: its LightningModule and LightningDataModule.

The loop (devices, DDP, precision, logging) is Lightning's and the shared step logic is
:class:`~fcnkit.engine.module.FcnkitModule`; this file only says what a segmentation step is. The
loss is :func:`~fcnkit.training.losses.pixelwise_loss` with the weight map of the regime
(:mod:`fcnkit.training.regimes`); the scores come from :func:`fcnkit.metrics.scores`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning as L
import torch
from torch import nn

from fcnkit.engine.config import TrainConfig
from fcnkit.engine.module import FcnkitModule
from fcnkit.engine.resumable import eval_sampler, loader_generator, resumable_loader
from fcnkit.errors import InputError
from fcnkit.metrics import SCORE_NAMES, scores
from fcnkit.training.losses import pixelwise_loss, segmentation_loss
from fcnkit.training.regimes import Regime, WholeImage, count_kept_cells

if TYPE_CHECKING:
    from fcnkit.training.tiled_regime import Tiled

__all__ = ["SegmentationModule", "SegmentationDataModule", "AugmentedDataset"]


class SegmentationModule(FcnkitModule):
    """Trains a segmentation model with the pixelwise loss; validates with the FCN scores.

    Logged: ``train_loss`` (step and epoch), ``val_loss``, ``val_pixel_accuracy``,
    ``val_mean_accuracy``, ``val_mean_iu``, ``val_fw_iu``. The regime supplies the loss's per-cell
    weight map (loss sampling, class balancing; whole images: none).
    """

    target_key = "mask"
    score_names = SCORE_NAMES
    monitor = "mean_iu"
    score_fn = staticmethod(scores)

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        num_classes: int,
        class_weights: torch.Tensor | None = None,
        regime: Regime | Tiled | None = None,
    ):
        super().__init__(model, config, num_classes, class_weights)
        self.regime = regime or WholeImage()

    def loss(self, logits: torch.Tensor, batch: dict, weight_map: torch.Tensor | None = None) -> torch.Tensor:
        mask = batch["mask"]
        if logits.shape[-2:] != mask.shape[-2:]:
            raise InputError(
                f"model '{self.config.model}' returns {tuple(logits.shape[-2:])} scores for "
                f"{tuple(mask.shape[-2:])} masks; use a model that upsamples to the input size "
                "(for allconv, not output='coarse')"
            )
        name = getattr(self.config, "loss", "ce")
        if name == "ce":
            return pixelwise_loss(logits, mask, weight_map=weight_map, class_weights=self.class_weights)
        return segmentation_loss(name, logits, mask, weight_map=weight_map, class_weights=self.class_weights)

    def training_loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        regime_loss = getattr(self.regime, "training_loss", None)
        if regime_loss is not None:  # the regime evaluates the loss itself (tiled: tile by tile, same gradient)
            loss, weight_map = regime_loss(
                self.model, batch, step=self.global_step, rank=self.global_rank, class_weights=self.class_weights
            )
            return loss, count_kept_cells(batch["mask"], weight_map, self.class_weights)
        logits = self(batch["image"])
        # random regimes draw per (step, process): reproducible, and each process draws its own
        weight_map = self.regime.weight_map(batch, logits, step=self.global_step, rank=self.global_rank)
        loss = self.loss(logits, batch, weight_map)
        return loss, count_kept_cells(batch["mask"], weight_map, self.class_weights)


class SegmentationDataModule(L.LightningDataModule):
    """Train and validation loaders over ``fcnkit.data.load_dataset`` with ``pad_collate``.

    Batches of images of different sizes are padded (image 0, mask 255 = ignore), so whole-image
    training needs no resizing. The training set is read in ``__init__`` because the model's
    ``num_classes``/``in_channels`` come from its ``info``.
    """

    def __init__(self, config: TrainConfig, regime: Regime | Tiled | None = None):
        super().__init__()
        from fcnkit.data import load_dataset

        self.config = config
        self.regime = regime or WholeImage()
        assert config.data is not None  # the config is resolved (TrainConfig.resolved requires data)
        self.train_set = load_dataset(config.data, split="train", **config.data_options)
        self.val_set = load_dataset(
            config.data, split=config.val_split, **{**config.data_options, **config.val_data_options}
        )
        self.info = self.train_set.info
        if len(self.train_set) == 0:
            raise InputError(f"data '{config.data}': the training split is empty; add images or check data_options")
        if len(self.val_set) == 0:
            raise InputError(
                f"data '{config.data}': the '{config.val_split}' split is empty; add validation images or set val_split"
            )

    @property
    def train_batch_size(self) -> int:
        """Items per training batch (patchwise regimes batch crops, not images)."""
        assert self.config.batch_size is not None  # the config is resolved (default 8)
        return self.regime.batch_size(self.config.batch_size)

    def train_dataloader(self):
        from torch.utils.data import DataLoader

        from fcnkit.data import pad_collate

        dataset = AugmentedDataset(self.train_set, self.config.augment) if self.config.augment else self.train_set
        dataset = self.regime.train_dataset(dataset)  # patchwise: crops of each image
        sampler = self.regime.train_sampler(dataset)
        workers = self.config.num_workers
        collate = self.regime.collate_fn() or pad_collate
        if sampler is None:  # resumes mid-epoch, bit for bit (fcnkit.engine.resumable)
            return resumable_loader(
                dataset,
                self.trainer,
                self.config.seed,
                self.train_batch_size,
                collate_fn=collate,
                num_workers=workers,
                persistent_workers=workers > 0,
            )
        return DataLoader(
            dataset,
            batch_size=self.train_batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            drop_last=False,
        )

    def val_dataloader(self):
        from torch.utils.data import DataLoader

        from fcnkit.data import pad_collate

        return DataLoader(
            self.val_set,
            batch_size=self.config.batch_size,
            sampler=eval_sampler(self.val_set, self.trainer),
            collate_fn=pad_collate,
            generator=loader_generator(),
            num_workers=self.config.num_workers,
            persistent_workers=self.config.num_workers > 0,
        )


class AugmentedDataset(torch.utils.data.Dataset):
    """Applies :mod:`fcnkit.data.augment` (torchvision v2, image + ``tv_tensors.Mask``) to each item.

    The image is augmented in [0, 1] from the dataset's raw array, then normalised with the
    dataset's mean/std exactly as an unaugmented sample (``fcnkit.data.io.to_model_input``). Each
    item draws its augmentation seed from torch's global RNG, which the training loader seeds per
    (seed, epoch, item) (:mod:`fcnkit.engine.resumable`): runs are reproducible and resume bit for
    bit, epochs differ.
    """

    def __init__(self, dataset, names: list[str]):
        from fcnkit.data.augment import build_augmentation

        self.dataset = dataset
        self.info = getattr(dataset, "info", None)
        self.transform = build_augmentation(names)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        import numpy as np

        from fcnkit.data.augment import augment
        from fcnkit.data.io import to_channels, to_unit_float

        seed = int(torch.randint(0, 2**62, ()))
        item = self.dataset[i]
        info = self.dataset.info  # self.info, known to be there (a dataset of fcnkit.data)
        image, target = self.dataset.raw(i)
        unit = torch.from_numpy(np.ascontiguousarray(to_channels(to_unit_float(np.asarray(image)), info.in_channels)))
        mask = item.get("mask")
        unit, mask = augment(self.transform, unit, mask, seed)
        mean = torch.tensor(info.mean, dtype=torch.float32).reshape(-1, 1, 1)
        std = torch.tensor(info.std, dtype=torch.float32).reshape(-1, 1, 1)
        out = dict(item, image=((unit - mean) / std).to(torch.float32).contiguous())
        if mask is not None:
            out["mask"] = mask.contiguous()
        return out
