"""``train(config) -> Path``: the library entry point of ``fcnkit train``.

It prepares a run folder, builds data, model and LightningModule, hands the loop to a Lightning
``Trainer`` and writes the report. Layout of a run folder::

    RUN/config.yaml      the resolved config (defaults filled in)
    RUN/metrics.csv      every logged value (train_loss_step/_epoch, val_loss, val_<score>,
                         step_*/total_* images, cells, FLOPs, seconds: fcnkit.training.steplog)
    RUN/best/, RUN/last/ fcnkit checkpoints (best val mean IU; newest)
    RUN/trainer.ckpt     Lightning state for --resume (loops, optimizer, best score)
    RUN/logs/version_N/  the raw CSVLogger output of each (re)start; merged into metrics.csv
    RUN/curves.png, RUN/report.md (+ confusion.png, predictions.png)
"""
from __future__ import annotations

import csv
import math
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from fcnkit.errors import InputError, MissingFileError
from fcnkit.training.config import TrainConfig, save_config
from fcnkit.training.quiet import quiet_lightning

__all__ = ["train", "merge_metrics", "is_main_process"]

# artifacts a run folder may hold; --overwrite removes these and nothing else
_RUN_ARTIFACTS = ("best", "last", "trainer.ckpt", "logs", "metrics.csv", "config.yaml", "curves.png",
                  "report.md", "confusion.png", "predictions.png", "predictions", "init_from.json")
# settings that define what is being trained: a resumed run cannot change them
_FROZEN_ON_RESUME = ("data", "data_options", "val_data_options", "model", "model_options", "task", "regime", "val_split")


def train(config: TrainConfig | dict[str, Any], report: bool = True, callbacks: Sequence[Any] = ()) -> Path:
    """Train a segmentation (or, ``task: classification``, a classification) model as ``config``
    says; returns the run folder.

    ``config.resume = RUN`` continues that run from ``RUN/trainer.ckpt`` (epoch, step, optimizer
    state, best score), with the run's saved config; settings given that differ from the
    defaults override it (e.g. ``epochs`` to train longer), except those that define the model
    and data. ``config.init_from`` starts a new run from a checkpoint's weights (what was loaded
    is written to ``RUN/init_from.json``). ``callbacks``: extra Lightning callbacks (e.g. an
    experiment's measurements), run after fcnkit's own. Raises :class:`~fcnkit.errors.InputError` for bad
    settings and when the loss turns non-finite (``RUN/last`` then holds the last good weights).
    """
    import lightning as L

    from fcnkit.training.callbacks import TRAINER_CKPT, AtomicCheckpointIO, FcnkitCheckpoint, NonFiniteWeightsError
    from fcnkit.training.module import NonFiniteLossError, SegmentationDataModule, SegmentationModule
    from fcnkit.training.regimes import build_regime
    from fcnkit.training.steplog import StepLog

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg = _with_resumed(cfg).resolved()
    run = Path(cfg.out)
    ckpt_path = run / TRAINER_CKPT if cfg.resume else None
    if not cfg.resume:
        _prepare_fresh(run, cfg.overwrite, clear=False)  # refuse early; clear once all is known good
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is visible; use --device auto or --device cpu")
    on_cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    if on_cpu and cfg.precision == "16-mixed":
        raise InputError("--precision 16-mixed needs a CUDA GPU (float16 autocast); on CPU use --precision bf16-mixed or 32")

    _check_model_task(cfg)
    if cfg.init_from and not cfg.resume:  # a resumed run takes its weights from trainer.ckpt
        from fcnkit.checkpoint import resolve_checkpoint

        resolve_checkpoint(cfg.init_from)  # a missing folder fails before any data is read
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    regime = build_regime(cfg.regime)
    if cfg.task == "classification":
        from fcnkit.training.classification import ClassificationDataModule, ClassificationModule

        data = ClassificationDataModule(cfg)
    else:
        data = SegmentationDataModule(cfg, regime)
    info = data.info
    _check_data_task(cfg, info)
    model = _build_model(cfg, info)
    init_report = None
    if cfg.init_from and not cfg.resume:
        from fcnkit.training.init_from import init_from_checkpoint

        init_report = init_from_checkpoint(model, cfg.init_from, classes=list(info.class_names))
    class_weights = _class_weights(cfg, data.train_set, info.num_classes)
    if cfg.task == "classification":
        module = ClassificationModule(model, cfg, info.num_classes, class_weights)
    else:
        # the regime's model/data-dependent settings (patch_size rf, cell size, class frequencies)
        regime = data.regime = regime.bind(model, data.train_set, num_classes=int(info.num_classes), in_channels=int(info.in_channels))
        module = SegmentationModule(model, cfg, info.num_classes, class_weights, regime)
    if not cfg.resume:  # data and model are known good: a typo never clears a run
        _prepare_fresh(run, cfg.overwrite, clear=True)
    if init_report is not None and is_main_process():
        import json

        from fcnkit.utils.atomic import atomic_write_text

        atomic_write_text(run / "init_from.json", json.dumps(init_report.to_dict(), indent=2) + "\n")
    base = {
        "task": cfg.task, "num_classes": int(info.num_classes), "in_channels": int(info.in_channels),
        "classes": list(info.class_names), "palette": [list(map(int, c)) for c in info.palette],
        "normalization": {"mean": [float(v) for v in info.mean], "std": [float(v) for v in info.std]},
        "train": cfg.to_dict(),
    }
    devices = _devices(cfg)
    trainer_devices = devices["devices"] * devices.get("num_nodes", 1)
    with quiet_lightning():  # no litlogger tips, no pytree deprecation (scoped, see quiet.py)
        trainer = L.Trainer(
            accelerator={"auto": "auto", "cpu": "cpu", "cuda": "gpu"}[cfg.device],
            **devices,
            precision=cfg.precision,
            max_epochs=cfg.epochs,
            max_steps=cfg.max_steps or -1,
            logger=L.pytorch.loggers.CSVLogger(save_dir=str(run), name="logs"),
            callbacks=[FcnkitCheckpoint(run, base), StepLog(), *callbacks],
            plugins=[AtomicCheckpointIO()],
            enable_checkpointing=False,  # FcnkitCheckpoint writes best/, last/ and trainer.ckpt
            num_sanity_val_steps=0,
            # never more than the batches of an epoch, else Lightning logs no step loss (and warns)
            log_every_n_steps=max(1, min(cfg.log_every_n_steps, math.ceil(len(data.train_set) / (regime.batch_size(cfg.batch_size) * trainer_devices)))),
            default_root_dir=str(run),
            enable_model_summary=False,
        )
        if trainer.is_global_zero:
            save_config(cfg, run / "config.yaml")
        threads = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        try:
            trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
        except (NonFiniteLossError, NonFiniteWeightsError) as exc:
            _close_progress_bar(trainer)  # so the error starts on its own line
            if trainer.is_global_zero:
                merge_metrics(run)
            what = f"loss became {exc.value} at step {exc.step}" if isinstance(exc, NonFiniteLossError) \
                else f"weights became non-finite after step {exc.step}"
            kept = f"{run / 'last'} holds the last good weights" if (run / "last").is_dir() else "no checkpoint was written before it"
            raise InputError(f"training diverged: {what}; {kept}; lower --lr, use --precision 32, or check the data for NaN/inf") from None
        finally:
            torch.set_num_threads(threads)
    if trainer.is_global_zero:
        merge_metrics(run)
        if report and cfg.task == "classification":
            from fcnkit.training.classification import write_classification_report

            write_classification_report(run)
        elif report:
            from fcnkit.training.report import write_report

            write_report(run, dataset=data.val_set)
    return run


def is_main_process() -> bool:
    """False in the extra processes of a DDP run (Lightning's launcher or torchrun set RANK/LOCAL_RANK)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def _close_progress_bar(trainer) -> None:
    bar = getattr(trainer.progress_bar_callback, "_train_progress_bar", None)
    if bar is not None and hasattr(bar, "close"):
        bar.close()


def _with_resumed(cfg: TrainConfig) -> TrainConfig:
    """For ``resume``: the run's saved config, overridden by the settings that differ from the defaults."""
    if not cfg.resume:
        return cfg
    from fcnkit.training.callbacks import TRAINER_CKPT
    from fcnkit.training.config import load_config

    run = Path(cfg.resume)
    if not (run / TRAINER_CKPT).is_file() or not (run / "config.yaml").is_file():
        raise MissingFileError(f"{run}: no run to resume here (needs {TRAINER_CKPT} and config.yaml); give a run folder made by 'fcnkit train'")
    saved = load_config(run / "config.yaml")
    defaults, given = TrainConfig(), cfg.to_dict()
    changed = {k: v for k, v in given.items() if v != getattr(defaults, k) and k not in ("resume", "out")}
    for key in _FROZEN_ON_RESUME:
        if key in changed and changed[key] != getattr(saved, key):
            raise InputError(f"--resume {run}: cannot change {key} of a run ({getattr(saved, key)!r} -> {changed[key]!r}); start a new run with --out")
    if cfg.out is not None and Path(cfg.out).resolve() != run.resolve():
        raise InputError(f"--resume {run} continues that run in place; drop --out {cfg.out} (or start a new run there)")
    saved.update(changed)
    saved.resume, saved.out = str(run), str(run)
    return saved


def _prepare_fresh(run: Path, overwrite: bool, clear: bool) -> None:
    from fcnkit.training.callbacks import TRAINER_CKPT

    holds_run = any((run / name).exists() for name in ("best", "last", TRAINER_CKPT))
    if holds_run and not overwrite:
        raise InputError(f"{run} already holds a run; continue it with --resume {run}, start over with --overwrite, or pick another --out")
    if not clear:
        return
    if holds_run and is_main_process():  # under torchrun every rank gets here: one deletes
        for name in _RUN_ARTIFACTS:
            target = run / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    run.mkdir(parents=True, exist_ok=True)


def _build_model(cfg: TrainConfig, info):
    from fcnkit.models.registry import build_model

    kwargs = dict(cfg.model_options)
    if cfg.weights:
        if not Path(cfg.weights).is_file():
            raise MissingFileError(f"{cfg.weights}: weights file not found; check --weights")
        kwargs["backbone_weights"] = cfg.weights  # an init-only argument: not part of the model spec
    try:
        return build_model(cfg.model, num_classes=int(info.num_classes), in_channels=int(info.in_channels), **kwargs)
    except InputError as exc:
        if cfg.weights and "'backbone_weights'" in str(exc):
            raise InputError(f"--weights: model '{cfg.model}' has no backbone to load weights into; drop --weights or use an fcn8s/16s/32s model") from None
        raise


def _class_weights(cfg: TrainConfig, dataset, num_classes: int):
    if cfg.class_weights == "none":
        return None
    from fcnkit.training.losses import class_weights_from_masks

    key = "label" if cfg.task == "classification" else "mask"  # a label counts as a one-pixel mask
    return class_weights_from_masks((dataset[i][key].reshape(-1) for i in range(len(dataset))), num_classes, cfg.class_weights)


def _check_model_task(cfg: TrainConfig) -> None:
    from fcnkit.models.registry import list_models, model_info

    task = model_info(cfg.model)["task"]
    if task != cfg.task:
        choices = ", ".join(list_models(cfg.task))
        raise InputError(f"model '{cfg.model}' is a {task} model but the task is {cfg.task}; "
                         f"use a {cfg.task} model ({choices}) or set --task {task}")


def _check_data_task(cfg: TrainConfig, info) -> None:
    if info.task != cfg.task:
        fix = "pass --task classification (e.g. --model allconv_cls)" if info.task == "classification" else f"set --task {info.task}"
        raise InputError(f"data '{cfg.data}' is a {info.task} dataset but the task is {cfg.task}; {fix}")


def _devices(cfg: TrainConfig) -> dict:
    """devices/strategy/num_nodes; under torchrun the launcher decides the process count."""
    if "LOCAL_WORLD_SIZE" in os.environ and "WORLD_SIZE" in os.environ:  # torchrun / torch.distributed.run
        local, world = int(os.environ["LOCAL_WORLD_SIZE"]), int(os.environ["WORLD_SIZE"])
        if world > 1:
            return {"devices": local, "num_nodes": max(1, world // local), "strategy": "ddp"}
    if cfg.devices > 1:
        return {"devices": cfg.devices, "strategy": "ddp"}
    return {"devices": 1, "strategy": "auto"}


def merge_metrics(run: str | os.PathLike) -> Path | None:
    """Join ``RUN/logs/version_*/metrics.csv`` into ``RUN/metrics.csv`` (atomically).

    A resumed run logs into a new version folder; rows of an earlier version at or after the
    first step of a later one (logged after the checkpoint it resumed from) are dropped.
    """
    from fcnkit.utils.atomic import atomic_path

    run = Path(run)
    versions = sorted((run / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[-1]))
    tables = []
    for path in versions:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if rows:
            tables.append(rows)
    if not tables:
        return None
    merged: dict[tuple, dict] = {}  # (epoch, step) -> one row: Lightning logs val and train epoch values apart
    for i, rows in enumerate(tables):
        later = [int(float(r["step"])) for t in tables[i + 1:] for r in t[:1] if r.get("step")]
        cut = min(later) if later else None
        for r in rows:
            if cut is None or int(float(r["step"])) < cut:
                slot = merged.setdefault((r.get("epoch", ""), r["step"]), {})
                slot.update({k: v for k, v in r.items() if v not in ("", None)})
    merged = list(merged.values())
    columns = sorted({k for r in merged for k in r})
    columns = ["epoch", "step"] + [c for c in columns if c not in ("epoch", "step")]
    out = run / "metrics.csv"
    with atomic_path(out) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(merged)
    return out
