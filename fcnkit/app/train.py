"""``train(config) -> Path``: the library entry point of ``fcnkit train``.

It prepares a run folder, builds data, model and LightningModule, hands the loop to a Lightning
``Trainer`` and writes the report. Layout of a run folder::

    RUN/config.yaml      the resolved config (defaults filled in)
    RUN/metrics.csv      every logged value (train_loss_step/_epoch, val_loss, val_<score>,
                         step_*/total_* images, cells, FLOPs, seconds: fcnkit.engine.steplog)
    RUN/best/, RUN/last/ fcnkit checkpoints (best val mean IU; newest)
    RUN/trainer.ckpt     Lightning state for --resume (loops, optimizer, best score)
    RUN/logs/version_N/  the raw CSVLogger output of each (re)start; merged into metrics.csv
    RUN/.lock            locked (fcntl.lockf) by the process training into RUN; holds its PID
    RUN/curves.png, RUN/report.md (+ confusion.png, predictions.png)
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fcnkit.engine.config import TrainConfig
from fcnkit.errors import InputError, MissingFileError

__all__ = ["train", "train_and_log", "is_main_process"]

# settings that define what is being trained, or that the saved state depends on (optimizer and
# schedule state, the sampler's position in batches per process): a resumed run cannot change them.
# lr, momentum, weight_decay, epochs, max_steps and the rest may change (fcnkit.engine.module applies them).
_FROZEN_ON_RESUME = (
    "data",
    "data_options",
    "val_data_options",
    "model",
    "model_options",
    "task",
    "regime",
    "val_split",
    "optimizer",
    "lr_schedule",
    "batch_size",
    "augment",
    "seed",
    "class_weights",
    "sizes",
    "devices",
    "precision",
    "sync_batchnorm",
    "weights",
    "init_from",
    "val_fraction",
    "test_fraction",
)


def train(config: TrainConfig | dict[str, Any], report: bool = True, callbacks: Sequence[Any] = ()) -> Path:
    """Train a segmentation (or, ``task: classification``, a classification) model as ``config``
    says; returns the run folder.

    ``config.resume = RUN`` continues that run from ``RUN/trainer.ckpt`` (epoch, step, optimizer
    state, best score), with the run's saved config; settings given that differ from the
    defaults override it (e.g. ``epochs`` to train longer), except those that define the model
    and data. ``config.init_from`` starts a new run from a checkpoint's weights (what was loaded
    is written to ``RUN/init_from.json``). ``callbacks``: extra Lightning callbacks (e.g. an
    experiment's measurements), run after fcnkit's own. Raises :class:`~fcnkit.errors.InputError`
    for bad settings and when the loss turns non-finite or diverges (``RUN/last`` then holds the
    last good weights), and when another process is training into the folder
    (:class:`~fcnkit.utils.lock.RunLockedError`).
    A resume applies a new ``lr``/``momentum``/``weight_decay`` and rebuilds the cosine schedule for
    a new length; it refuses changes to what the saved state depends on (``_FROZEN_ON_RESUME``)
    before anything is written. A run killed at any moment resumes bit for bit on CPU
    (:mod:`fcnkit.engine.resumable`); one killed before its first checkpoint restarts from step 0.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg = _with_resumed(cfg).resolved()
    assert cfg.out is not None  # resolved() fills in the run folder
    run = Path(cfg.out)
    if not cfg.resume:
        _prepare_fresh(run, cfg.overwrite, clear=False)  # refuse early; clear once all is known good
    with _locked(run):
        return _train_locked(cfg, run, report, callbacks)


def _train_locked(cfg: TrainConfig, run: Path, report: bool, callbacks: Sequence[Any]) -> Path:
    import lightning as L

    from fcnkit.app.tasks import TASKS
    from fcnkit.checkpoint import CheckpointConfig, model_spec
    from fcnkit.engine.callbacks import TRAINER_CKPT
    from fcnkit.engine.loop import fit
    from fcnkit.training.regimes import build_regime

    if not cfg.resume:  # again, under the lock: a run may have finished there meanwhile
        _prepare_fresh(run, cfg.overwrite, clear=False)
    # a run killed before its first trainer.ckpt restarts from step 0 (with its init_from)
    restoring = bool(cfg.resume) and (run / TRAINER_CKPT).is_file()
    _check_device(cfg)
    _check_model_task(cfg)
    if cfg.init_from and not restoring:  # a resumed run takes its weights from trainer.ckpt
        from fcnkit.checkpoint import resolve_checkpoint

        resolve_checkpoint(cfg.init_from)  # a missing folder fails before any data is read
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task = TASKS[cfg.task]
    regime = build_regime(cfg.regime)
    data = task.datamodule(cfg, regime)
    info = data.info
    _check_data_task(cfg, info)
    from fcnkit.data.validate import validate_before_training

    validate_before_training([data.train_set, getattr(data, "val_set", None)])  # every file, before any epoch
    model = _build_model(cfg, info)
    if (
        is_main_process()
    ):  # one line once the settings are known good: which classes, from where; a split too small to score
        from fcnkit.app.datapath import data_summary

        line, warnings = data_summary(str(cfg.data), data.train_set, data.val_set, cfg.val_split)
        print(line, flush=True)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    if cfg.weights and is_main_process():  # say what --weights put where (the load is strict)
        backbone = getattr(model, "backbone", model)
        n = len(backbone.state_dict())
        print(
            f"weights {cfg.weights}: {n} tensors loaded into the {cfg.model_options.get('backbone', 'allconv')} "
            f"backbone, 0 missing, 0 unexpected (a strict load; the head starts fresh)",
            flush=True,
        )
    init_report = None
    if cfg.init_from and not restoring:
        from fcnkit.app.init_from import init_from_checkpoint

        init_report = init_from_checkpoint(model, cfg.init_from, classes=list(info.class_names))
    class_weights = _class_weights(cfg, data.train_set, info.num_classes, task.target_key)
    module = task.module(model, cfg, data, class_weights, regime)
    if not cfg.resume:  # data and model are known good: a typo never clears a run
        _prepare_fresh(run, cfg.overwrite, clear=True)
    if init_report is not None and is_main_process():
        from fcnkit.utils.jsonsafe import write_json

        write_json(init_report.to_dict(), run / "init_from.json")
    from fcnkit.app.predict_inputs import input_stats  # dtype/range/size of the training images, for predict

    checkpoint_config = CheckpointConfig.from_info(
        model_spec(model), info, train=cfg.to_dict(), input=input_stats(data.train_set)
    ).to_dict()
    trainer = fit(module, data, cfg, run, checkpoint_config, batch_size=data.train_batch_size, callbacks=callbacks)
    if trainer.is_global_zero and report:
        task.report(run, data)
    return run


def train_and_log(config, **overrides) -> dict[str, Any]:
    """Train one configuration (a TrainConfig or mapping, ``overrides`` on top) without a report;
    returns ``{"run": Path, "config": resolved dict, "train": [...], "val": [...], "best": {...}}``.

    The per-step rows are :func:`fcnkit.engine.runlog.read_step_log`'s; ``best`` is the best
    checkpoint's metrics. Set ``log_every_n_steps: 1`` for a row per step. The entry point of the
    regime experiments.
    """
    import json

    import yaml

    from fcnkit.engine.runlog import read_step_log

    # a copy: the caller's config is left as it was (a deep copy keeps which keys were given,
    # which decides what a resume overrides)
    cfg = copy.deepcopy(config) if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    cfg.update(overrides, source="train_and_log")
    run = train(cfg, report=False)
    log = read_step_log(run)
    best_file = run / "best" / "config.json"
    best = json.loads(best_file.read_text()).get("metrics", {}) if best_file.is_file() else {}
    resolved = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    return {"run": run, "config": resolved, "train": log["train"], "val": log["val"], "best": best}


def _check_device(cfg: TrainConfig) -> None:
    from fcnkit.utils.device import resolve_device

    device = resolve_device(cfg.device)
    distributed = cfg.devices > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1
    if device.type == "cpu" and cfg.sync_batchnorm and distributed:
        raise InputError(
            "--sync-batchnorm needs CUDA (torch's SyncBatchNorm does not run on CPU); "
            "on CPU train a model without batch statistics, e.g. --model-option norm=group, "
            "or train on one device"
        )
    if device.type == "cpu" and cfg.precision == "16-mixed":
        raise InputError(
            "--precision 16-mixed needs a CUDA GPU (float16 autocast); on CPU use --precision bf16-mixed or 32"
        )


def is_main_process() -> bool:
    """False in the extra processes of a DDP run (Lightning's launcher or torchrun set RANK/LOCAL_RANK)."""
    return (
        int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0
        and int(os.environ.get("NODE_RANK", "0")) == 0
    )


def _with_resumed(cfg: TrainConfig) -> TrainConfig:
    """For ``resume``: the run's saved config, overridden by the settings that differ from the defaults."""
    if not cfg.resume:
        return cfg
    from fcnkit.engine.callbacks import TRAINER_CKPT
    from fcnkit.engine.config import load_config

    run = Path(cfg.resume)
    if not (run / "config.yaml").is_file():
        raise MissingFileError(
            f"{run}: no run to resume here (needs {TRAINER_CKPT} and config.yaml); "
            "give a run folder made by 'fcnkit train'"
        )
    if not (run / TRAINER_CKPT).is_file() and any((run / name).exists() for name in ("best", "last")):
        raise MissingFileError(
            f"{run}: has checkpoints but no {TRAINER_CKPT} to resume from (an older fcnkit); "
            f"start a new run from its weights with --init-from {run / 'last'} --out NEW"
        )
    if (run / TRAINER_CKPT).is_file():
        from fcnkit.engine.callbacks import load_trainer_state

        load_trainer_state(run / TRAINER_CKPT)  # truncated/tampered: one line before anything is written
    saved = load_config(run / "config.yaml")
    # given: set through from_dict/update/load_config (a YAML key or a flag, even at its default
    # value: --epochs 10 on a 5-epoch run), or differing from the default (TrainConfig(epochs=...))
    defaults, given = TrainConfig(), cfg.to_dict()
    changed = {
        k: v
        for k, v in given.items()
        if (k in cfg.given_keys or v != getattr(defaults, k)) and k not in ("resume", "out")
    }
    for key in _FROZEN_ON_RESUME:
        if key in changed and changed[key] != getattr(saved, key):
            raise InputError(
                f"--resume {run}: cannot change {key} of a run ({getattr(saved, key)!r} -> {changed[key]!r}); "
                "start a new run with --out"
            )
    if cfg.out is not None and Path(cfg.out).resolve() != run.resolve():
        raise InputError(f"--resume {run} continues that run in place; drop --out {cfg.out} (or start a new run there)")
    saved.update(changed)
    saved.resume, saved.out = str(run), str(run)
    return saved


@contextlib.contextmanager
def _locked(run: Path) -> Iterator[None]:
    """Hold ``run``'s lock while training (the main process only; under DDP the others run inside
    its training). Stale temp files of dead processes are removed once it is held. A folder made
    only to hold the lock is removed again when training fails before writing anything."""
    if not is_main_process():
        yield
        return
    from fcnkit.utils.atomic import remove_stale_temps
    from fcnkit.utils.lock import LOCK_FILE, RunLock
    from fcnkit.utils.outputs import KINDS

    # the run's own entries (one list: utils.outputs); each is written through a temp sibling
    names = tuple(n for n in KINDS["run"].artifacts if not n.startswith(".") and not any(c in n for c in "*?["))

    created = not run.exists()
    lock = RunLock(run).acquire()
    try:
        remove_stale_temps(run, names)
        yield
    except BaseException:
        if created and [p.name for p in run.iterdir()] == [LOCK_FILE]:
            (run / LOCK_FILE).unlink()
            run.rmdir()
        raise
    finally:
        lock.release()


def _prepare_fresh(run: Path, overwrite: bool, clear: bool) -> None:
    """Refuse a ``--out`` that holds a run (without --overwrite) or anything fcnkit did not write;
    with ``clear``, remove the old run's artifacts (only those) and mark the folder as a run."""
    from fcnkit.utils.outputs import check_output, prepare_output

    if not clear or not is_main_process():  # under torchrun every rank gets here: one writes
        check_output(run, "run", overwrite)
        return
    prepare_output(run, "run", overwrite)


def _build_model(cfg: TrainConfig, info):
    from fcnkit.models.registry import build_model

    kwargs = dict(cfg.model_options)
    if cfg.weights:
        if not Path(cfg.weights).is_file():
            raise MissingFileError(f"{cfg.weights}: weights file not found; check --weights")
        kwargs["backbone_weights"] = cfg.weights  # an init-only argument: not part of the model spec
    assert cfg.model is not None  # the config is resolved (a default model per task)
    try:
        return build_model(cfg.model, num_classes=int(info.num_classes), in_channels=int(info.in_channels), **kwargs)
    except InputError as exc:
        if cfg.weights and "'backbone_weights'" in str(exc):
            raise InputError(
                f"--weights: model '{cfg.model}' has no backbone to load weights into; "
                "drop --weights or use an fcn8s/16s/32s model"
            ) from None
        raise


def _class_weights(cfg: TrainConfig, dataset, num_classes: int, key: str):
    if cfg.class_weights == "none":
        return None
    from fcnkit.training.losses import class_weights_from_masks

    # a classification label counts as a one-pixel mask
    return class_weights_from_masks(
        (dataset[i][key].reshape(-1) for i in range(len(dataset))), num_classes, cfg.class_weights
    )


def _check_model_task(cfg: TrainConfig) -> None:
    from fcnkit.models.registry import list_models, model_info

    assert cfg.model is not None  # the config is resolved (a default model per task)
    task = model_info(cfg.model)["task"]
    if task != cfg.task:
        choices = ", ".join(list_models(cfg.task))
        raise InputError(
            f"model '{cfg.model}' is a {task} model but the task is {cfg.task}; "
            f"use a {cfg.task} model ({choices}) or set --task {task}"
        )


def _check_data_task(cfg: TrainConfig, info) -> None:
    if info.task != cfg.task:
        fix = (
            "pass --task classification (e.g. --model allconv_cls)"
            if info.task == "classification"
            else f"set --task {info.task}"
        )
        raise InputError(f"data '{cfg.data}' is a {info.task} dataset but the task is {cfg.task}; {fix}")
