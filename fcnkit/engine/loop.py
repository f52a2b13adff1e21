"""The fit loop: a Lightning ``Trainer`` set up the fcnkit way, run on a module and its data.

``fit`` is what every task shares: devices/DDP (or torchrun's), precision, the CSV logger, the
checkpoint callback (best/, last/, trainer.ckpt), the per-step log, threads, and divergence turned
into one line. It knows nothing of run folders' other files or of reports (those are the job's).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from fcnkit.engine.callbacks import (
    TRAINER_CKPT,
    AtomicCheckpointIO,
    FcnkitCheckpoint,
    NonFiniteWeightsError,
)
from fcnkit.engine.config import TrainConfig, save_config
from fcnkit.engine.module import FcnkitModule, LossDivergedError, NonFiniteLossError
from fcnkit.engine.quiet import quiet_lightning
from fcnkit.engine.resumable import RngState
from fcnkit.engine.runlog import merge_metrics
from fcnkit.engine.steplog import StepLog
from fcnkit.errors import InputError

if TYPE_CHECKING:
    from fcnkit.engine.classification import ClassificationDataModule
    from fcnkit.engine.segmentation import SegmentationDataModule

__all__ = ["fit", "distributed_devices", "TRAINER_CKPT"]


def fit(
    module: FcnkitModule,
    data: SegmentationDataModule | ClassificationDataModule,
    cfg: TrainConfig,
    run: Path,
    checkpoint_config: dict[str, Any],
    batch_size: int,
    callbacks: Sequence[L.Callback] = (),
) -> L.Trainer:
    """Train ``module`` on ``data`` into the run folder ``run``; returns the finished Trainer.

    ``checkpoint_config`` is the config.json of every checkpoint written (without ``metrics``);
    ``batch_size`` is the training loader's batch size (for the logging interval). With
    ``cfg.resume`` the Lightning state in ``run/trainer.ckpt`` is restored (read with
    ``weights_only=True``; without one, a run killed before its first checkpoint, it starts from
    step 0). Divergence (non-finite loss or weights, or a loss far above its running median) is
    an InputError saying what was kept. ``callbacks``: extra Lightning callbacks (an experiment's
    measurements), after fcnkit's own.
    """
    devices = distributed_devices(cfg)
    processes = devices["devices"] * devices.get("num_nodes", 1)
    steps_per_epoch = math.ceil(len(data.train_set) / (batch_size * processes))
    with quiet_lightning():  # no litlogger tips, no pytree deprecation (scoped, see quiet.py)
        trainer = L.Trainer(
            accelerator={"auto": "auto", "cpu": "cpu", "cuda": "gpu"}[cfg.device],
            **devices,
            # a str of PRECISIONS (checked by the config), a subset of Lightning's precision literals
            precision=cfg.precision,  # type: ignore[arg-type]
            max_epochs=cfg.epochs,
            max_steps=cfg.max_steps or -1,
            logger=_loggers(cfg, run),
            callbacks=[
                FcnkitCheckpoint(
                    run, checkpoint_config, monitor=module.monitor, every_n_steps=cfg.checkpoint_every_n_steps
                ),
                StepLog(),
                RngState(),
                _SaveConfigOnStart(cfg, run / "config.yaml"),
                *_lr_monitor(cfg),
                *callbacks,
            ],
            **_validation_interval(cfg),
            plugins=[AtomicCheckpointIO()],
            # the training loader shards itself (fcnkit.engine.resumable), the val loaders too
            use_distributed_sampler=False,
            sync_batchnorm=cfg.sync_batchnorm,
            enable_checkpointing=False,  # FcnkitCheckpoint writes best/, last/ and trainer.ckpt
            num_sanity_val_steps=0,
            # never more than the batches of an epoch, else Lightning logs no step loss (and warns)
            log_every_n_steps=max(1, min(cfg.log_every_n_steps, steps_per_epoch)),
            default_root_dir=str(run),
            enable_model_summary=False,
        )
        resuming = bool(cfg.resume) and (run / TRAINER_CKPT).is_file()
        if trainer.is_global_zero and not resuming:  # a resumed run rewrites it once it started
            save_config(cfg, run / "config.yaml")
        threads = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        ckpt_path = run / TRAINER_CKPT if resuming else None
        try:
            trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
        except (NonFiniteLossError, NonFiniteWeightsError, LossDivergedError) as exc:
            _close_progress_bar(trainer)  # so the error starts on its own line
            if trainer.is_global_zero:
                merge_metrics(run)
            if isinstance(exc, LossDivergedError):
                what = (
                    f"loss {exc.value:.3g} at step {exc.step} stayed above {exc.factor:g}x its running median "
                    f"{exc.median:.3g} for {exc.patience} steps (divergence_factor, divergence_patience)"
                )
            elif isinstance(exc, NonFiniteLossError):
                what = f"loss became {exc.value} at step {exc.step}"
            else:
                what = f"weights became non-finite after step {exc.step}"
            kept = (
                f"{run / 'last'} holds the last good weights"
                if (run / "last").is_dir()
                else "no checkpoint was written before it"
            )
            raise InputError(
                f"training diverged: {what}; {kept}; lower --lr, use --precision 32, or check the data for NaN/inf"
            ) from None
        finally:
            torch.set_num_threads(threads)
    if trainer.is_global_zero:
        merge_metrics(run)
    return trainer


def _loggers(cfg: TrainConfig, run: Path) -> list:
    """The CSV logger always (metrics.csv, reports); ``logger: tensorboard`` adds TensorBoard event
    files in the same RUN/logs/version_N/ folder (written by tensorboardX when tensorboard is absent)."""
    csv = L.pytorch.loggers.CSVLogger(save_dir=str(run), name="logs")
    if getattr(cfg, "logger", "csv") != "tensorboard":
        return [csv]
    # the same version folder as the CSV log: one logs/version_N/ per (re)start, not two
    tensorboard = L.pytorch.loggers.TensorBoardLogger(
        save_dir=str(run), name="logs", version=csv.version, default_hp_metric=False
    )
    return [csv, tensorboard]


def _lr_monitor(cfg: TrainConfig) -> list:
    """LearningRateMonitor (column ``lr-<Optimizer>``) when the lr changes; a constant lr is in config.yaml."""
    if cfg.lr_schedule == "none" and not getattr(cfg, "warmup_steps", 0):
        return []
    return [L.pytorch.callbacks.LearningRateMonitor(logging_interval="step")]


def _validation_interval(cfg: TrainConfig) -> dict:
    """``val_every_n_steps``: validate every N training batches, across epoch ends (Lightning's
    ``val_check_interval`` with ``check_val_every_n_epoch=None``); else once per epoch."""
    n = getattr(cfg, "val_every_n_steps", None)
    return {"val_check_interval": int(n), "check_val_every_n_epoch": None} if n else {}


def distributed_devices(cfg: TrainConfig) -> dict:
    """devices/strategy/num_nodes for the Trainer; under torchrun the launcher decides the process count."""
    if "LOCAL_WORLD_SIZE" in os.environ and "WORLD_SIZE" in os.environ:  # torchrun / torch.distributed.run
        local, world = int(os.environ["LOCAL_WORLD_SIZE"]), int(os.environ["WORLD_SIZE"])
        if world > 1:
            return {"devices": local, "num_nodes": max(1, world // local), "strategy": "ddp"}
    if cfg.devices > 1:
        return {"devices": cfg.devices, "strategy": "ddp"}
    return {"devices": 1, "strategy": "auto"}


class _SaveConfigOnStart(L.Callback):
    """config.yaml of a resumed run is rewritten only once the resume started (state restored)."""

    def __init__(self, cfg: TrainConfig, path: Path):
        self.cfg, self.path = cfg, path

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.cfg.resume:
            save_config(self.cfg, self.path)


def _close_progress_bar(trainer: L.Trainer) -> None:
    bar = getattr(trainer.progress_bar_callback, "_train_progress_bar", None)
    if bar is not None and hasattr(bar, "close"):
        bar.close()
