"""One run of a training experiment: an ordinary training run (``report=False``) in its own folder,
its per-step log read back from ``metrics.csv``. Re-exported by :mod:`fcnkit.experiments.runner`.

The folder of one run (dataset, arm, seed)::

    OUT/runs/<dataset>/<arm>/seed<k>/   config.yaml, metrics.csv, best/, last/, train.log
                                        (train.log: Lightning's progress bars and warnings)

and :func:`train_run` turns its ``metrics.csv`` into two lists of rows (``iteration`` = optimizer
steps done, i.e. Lightning's ``step`` + 1)::

    train  {iteration, loss, seconds, images, items, cells, flops}   one per step; seconds etc.
           are running sums of fcnkit.engine.steplog (forward+backward+optimizer time only)
    val    {iteration, epoch, seconds, <score>...}                   one per validation epoch

A run that stops between two epochs (``max_steps``) is scored once more from its ``last/``
checkpoint with :func:`fcnkit.app.evaluate.evaluate`, so every run has a validation row at
its final iteration.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["train_run", "read_metrics"]

# StepLog's running sums in metrics.csv -> the names used in the experiments' rows
_TOTALS = {
    "total_seconds": "seconds",
    "total_images": "images",
    "total_items": "items",
    "total_cells": "cells",
    "total_flops": "flops",
}


def train_run(
    config: dict[str, Any], run_dir: str | os.PathLike, *, device: str = "cpu", callbacks: Iterable[Any] = ()
) -> dict[str, Any]:
    """Train ``config`` (a train-config mapping) into ``run_dir``; return its curves and scores.

    Returns ``{"run", "iterations", "wall_seconds", "train_seconds", "parameters", "trainable_parameters",
    "train": [...], "val": [...], "final": {...}}`` (rows as in the module docstring; ``final`` is
    the validation row at the last iteration). Console output of the training goes to
    ``run_dir/train.log``. ``callbacks``: extra Lightning callbacks for this run; the ``grad_*``
    values they log per step come back in the train rows.
    """
    from fcnkit.app.train import train

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = dict(config, out=str(run_dir), overwrite=True, log_every_n_steps=1, device=device)
    start = time.perf_counter()
    with (
        (run_dir / "train.log").open("w") as log,
        contextlib.redirect_stderr(log),
        contextlib.redirect_stdout(log),
        _lightning_logs_to(log),
    ):
        path = train(cfg, report=False, callbacks=list(callbacks))
    wall = time.perf_counter() - start
    train_rows, val_rows = read_metrics(path)
    if not train_rows:
        raise RuntimeError(f"{path}/metrics.csv has no training steps")  # a bug: a finished run logs every step
    last = train_rows[-1]
    if not val_rows or val_rows[-1]["iteration"] < last["iteration"]:
        val_rows.append(_final_evaluation(path, cfg, last, device))
    total, trainable = _parameters(path)
    return {
        "run": str(path),
        "iterations": int(last["iteration"]),
        "wall_seconds": wall,
        "train_seconds": last.get("seconds"),
        "parameters": total,
        "trainable_parameters": trainable,
        "train": train_rows,
        "val": val_rows,
        "final": val_rows[-1],
    }


@contextlib.contextmanager
def _lightning_logs_to(stream):
    """Send Lightning's log records (GPU available..., `Trainer.fit` stopped...) to ``stream`` for a
    while: its loggers hold handlers bound to the real stderr, which redirect_stderr does not move."""
    import logging

    saved = []
    handler = logging.StreamHandler(stream)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers, logger.propagate = [handler], False
    try:
        yield
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate


def read_metrics(run: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """``RUN/metrics.csv`` -> ``(train rows, val rows)`` (module docstring), sorted by iteration."""
    from fcnkit.engine.runlog import read_rows

    train_rows, val_rows, totals = [], [], {}
    for r in read_rows(run):
        iteration = int(r["step"]) + 1
        if "train_loss_step" in r:
            totals = {name: r[key] for key, name in _TOTALS.items() if key in r}
            extra = {k: v for k, v in r.items() if k.startswith("grad_")}  # experiments' own measurements
            train_rows.append({"iteration": iteration, "loss": r["train_loss_step"], **totals, **extra})
        scores = {k[4:]: v for k, v in r.items() if k.startswith("val_")}
        if scores:
            # time etc. spent up to this validation: the sums of the last step at or before it
            val_rows.append({"iteration": iteration, "epoch": int(r.get("epoch", -1)), **totals, **scores})
    return train_rows, val_rows


def _final_evaluation(path: Path, cfg: dict, last: dict, device: str) -> dict:
    from fcnkit.app.evaluate import evaluate

    scores = evaluate(
        path / "last", split=cfg.get("val_split", "val"), device=device, batch_size=int(cfg.get("batch_size") or 8)
    )
    numbers = {
        k: v for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "images"
    }
    row = {
        "iteration": last["iteration"],
        "epoch": -1,
        **{k: last[k] for k in _TOTALS.values() if k in last},
        **numbers,
    }
    row["loss"] = None  # evaluate() does not compute the validation loss
    return row


def _parameters(path: Path) -> tuple[int, int]:
    from fcnkit.checkpoint import load_checkpoint

    model, _ = load_checkpoint(path / "last")
    return (sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad))
