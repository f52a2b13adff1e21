"""Tasks: what differs between segmentation and classification training, in one place each.

A :class:`Task` supplies the DataModule, the LightningModule (whose class names the scores and the
monitored metric), the key of the ground truth, and the report. The ``train`` job asks
``TASKS[cfg.task]`` for these and never branches on the task itself::

    task            data                        module (scores, monitor)                 report
    segmentation    SegmentationDataModule      SegmentationModule (FCN scores, mean_iu)  report.md + overlays
    classification  ClassificationDataModule    ClassificationModule (accuracy)           report.md
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fcnkit.engine.config import TrainConfig
from fcnkit.engine.module import FcnkitModule
from fcnkit.training.regimes import Regime

if TYPE_CHECKING:
    from fcnkit.training.tiled_regime import Tiled

__all__ = ["Task", "TASKS"]


@dataclasses.dataclass(frozen=True)
class Task:
    """One kind of training: how to build its data and module, what its target is, how to report."""

    name: str
    #: batch/sample key of the ground truth (class weights are counted over it)
    target_key: str
    #: ``(cfg, regime) -> LightningDataModule`` with ``train_set``, ``val_set``, ``info``, ``train_batch_size``
    datamodule: Callable[[TrainConfig, Regime | Tiled], Any]
    #: ``(model, cfg, data, class_weights, regime) -> FcnkitModule`` (may bind the regime to model and data)
    module: Callable[[nn.Module, TrainConfig, Any, torch.Tensor | None, Regime | Tiled], FcnkitModule]
    #: ``(run, data) -> report.md``
    report: Callable[[Path, Any], Path]


def _segmentation_data(cfg: TrainConfig, regime: Regime | Tiled):
    from fcnkit.engine.segmentation import SegmentationDataModule

    return SegmentationDataModule(cfg, regime)


def _segmentation_module(model, cfg, data, class_weights, regime) -> FcnkitModule:
    from fcnkit.engine.segmentation import SegmentationModule

    info = data.info
    # the regime's model/data-dependent settings (patch_size rf, cell size, class frequencies)
    regime = data.regime = regime.bind(
        model, data.train_set, num_classes=int(info.num_classes), in_channels=int(info.in_channels)
    )
    return SegmentationModule(model, cfg, int(info.num_classes), class_weights, regime)


def _segmentation_report(run: Path, data) -> Path:
    from fcnkit.app.report import write_report

    return write_report(run, dataset=data.val_set)


def _classification_data(cfg: TrainConfig, regime: Regime | Tiled):
    from fcnkit.engine.classification import ClassificationDataModule

    return ClassificationDataModule(cfg)


def _classification_module(model, cfg, data, class_weights, regime) -> FcnkitModule:
    from fcnkit.engine.classification import ClassificationModule

    return ClassificationModule(model, cfg, int(data.info.num_classes), class_weights)


def _classification_report(run: str | os.PathLike, data) -> Path:
    from fcnkit.app.report_classification import write_classification_report

    return write_classification_report(run)


TASKS: dict[str, Task] = {
    "segmentation": Task("segmentation", "mask", _segmentation_data, _segmentation_module, _segmentation_report),
    "classification": Task(
        "classification", "label", _classification_data, _classification_module, _classification_report
    ),
}
