"""What every training experiment shares: one run through ``fcnkit.app.train.train``, its
per-step log read back from ``metrics.csv``, seeds summarised as mean +- std, machine facts, and
the atomic writing of ``results.json`` / ``*.png`` / ``summary.md``.

One run of an experiment is an ordinary training run (``report=False``) in its own folder::

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
import copy
import datetime
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fcnkit.errors import InputError

__all__ = [
    "train_run",
    "run_arms",
    "read_metrics",
    "machine_info",
    "mean_std",
    "fmt_mean_std",
    "scaled",
    "check_seeds",
    "pick_datasets",
    "markdown_table",
    "write_outputs",
    "steps_per_epoch",
    "arm_summary",
]

#: the training set-up the regime experiments (sampling, class-balance) share: a narrow allconv on
#: digit-canvas and nuclei, small enough for a CPU
SMALL_SEGMENTATION: dict = {
    "train": {"model": "allconv", "model_options": {"width": 8}, "optimizer": "adam", "lr": 3e-3, "batch_size": 8},
    "data": {
        "digit-canvas": {"data_options": {"count": 256}, "val_data_options": {"count": 100}},
        "nuclei": {"data_options": {"tile": 64}},
    },
}

# StepLog's running sums in metrics.csv -> the names used in the experiments' rows
_TOTALS = {
    "total_seconds": "seconds",
    "total_images": "images",
    "total_items": "items",
    "total_cells": "cells",
    "total_flops": "flops",
}


def check_seeds(seeds: int) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise InputError(f"--seeds must be a whole number >= 1, got {seeds!r}; e.g. --seeds 3")
    return seeds


def pick_datasets(datasets: Iterable[str] | None, available: Iterable[str], experiment: str) -> list[str]:
    """The requested datasets (default: all ``available``), each checked against them."""
    from fcnkit.errors import did_you_mean

    available = list(available)
    chosen = list(datasets) if datasets else available
    for name in chosen:
        if name not in available:
            raise InputError(
                f"--datasets: '{name}' is not part of experiment {experiment}{did_you_mean(name, available)}; "
                f"use {', '.join(available)}"
            )
    return chosen


def scaled(value: float, budget_minutes: float | None, reference_minutes: float, minimum: int = 1) -> int:
    """``value`` (a count sized for ``reference_minutes``) scaled to ``budget_minutes``, at least ``minimum``."""
    if budget_minutes is None:
        return max(minimum, int(round(value)))
    if isinstance(budget_minutes, bool) or not isinstance(budget_minutes, (int, float)) or not budget_minutes > 0:
        raise InputError(f"--budget-minutes must be a number > 0, got {budget_minutes!r}; e.g. --budget-minutes 5")
    return max(minimum, int(round(value * budget_minutes / reference_minutes)))


def step_settings(
    defaults: dict[str, Any], datasets: list[str], overrides: dict[str, dict] | None, *, steps: int, threads: int | None
) -> dict[str, dict[str, Any]]:
    """Per dataset, the train config of a fixed-iteration experiment: ``defaults["train"]``, then
    ``defaults["data"][dataset]``, then the caller's ``overrides[dataset]``; every run ends at ``steps``."""
    settings = {}
    for name in datasets:
        cfg = {**copy.deepcopy(defaults["train"]), **copy.deepcopy(defaults["data"][name])}
        cfg.update(copy.deepcopy((overrides or {}).get(name, {})))
        # max_steps ends every run; epochs only needs to be large enough never to end one first
        cfg.update(data=name, max_steps=steps, epochs=max(1, steps), threads=threads)
        settings[name] = cfg
    return settings


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


def machine_info(device: str) -> dict[str, Any]:
    """Where and when the numbers were measured: device, torch version, threads, date, load."""
    import torch

    info = {
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def measured_on(results: dict) -> str:
    """The 'Measured <date> on <device>, torch, threads, load at start and end.' sentence of a summary."""
    m = results["machine"]
    threads = next(iter(results.get("settings", {}).values()), {}).get("threads") or m["threads"]
    gpu = f" ({m['gpu']})" if m.get("gpu") else ""
    return (
        f"Measured {m['date']} on {m['device']}{gpu}, torch {m['torch']}, {threads} thread(s) per run, "
        f"load average {m['load_average']} at the start, {results['load_average_end']} at the end."
    )


def mean_std(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """``{"mean", "std", "n"}`` over the finite values (sample std, ddof 1; 0 for one value)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(xs)}


def fmt_mean_std(stat: dict, digits: int = 3) -> str:
    """``"0.512 ± 0.013"`` (``"n/a"`` when there is no value)."""
    if stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(
    out_dir: str | os.PathLike, results: dict, summary: str, figures: dict[str, Callable[[Path], None]]
) -> list[Path]:
    """Write ``results.json``, each ``figures[name](path)`` as ``name.png`` and ``summary.md``, atomically.

    Returns the written paths. NaN/inf become ``null`` in the JSON.
    """
    from fcnkit.utils.atomic import atomic_path, atomic_write_text
    from fcnkit.utils.jsonsafe import json_safe

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json"]
    atomic_write_text(written[0], json.dumps(json_safe(results), indent=1) + "\n")
    for name, draw in figures.items():
        path = out / f"{name}.png"
        with atomic_path(path, suffix=".png") as tmp:
            draw(tmp)
        written.append(path)
    atomic_write_text(out / "summary.md", summary)
    written.append(out / "summary.md")
    return written


def run_arms(
    out_dir: str | os.PathLike,
    datasets: list[str],
    arms: list[str],
    seeds: int,
    make_config: Callable[[str, str, int], dict],
    *,
    device: str,
    progress: Callable[[str], None] | None = None,
    make_callbacks: Callable[[], list] | None = None,
) -> dict[str, dict[str, list[dict]]]:
    """Train every ``(dataset, arm, seed)`` (seed-major within a dataset, so a cut-short run has
    every arm at the first seeds); ``make_config(dataset, arm, seed)`` gives the train config,
    ``make_callbacks()`` fresh extra Lightning callbacks for each run.

    Returns ``{dataset: {arm: [train_run result per seed]}}``; runs live under ``out_dir/runs``.
    """
    out = Path(out_dir)
    results: dict[str, dict[str, list[dict]]] = {d: {a: [] for a in arms} for d in datasets}
    total, done = len(datasets) * len(arms) * seeds, 0
    for dataset in datasets:
        _warm_up(make_config(dataset, arms[0], 0))
        for seed in range(seeds):
            for arm in arms:
                run = train_run(
                    make_config(dataset, arm, seed),
                    out / "runs" / dataset / _slug(arm) / f"seed{seed}",
                    device=device,
                    callbacks=make_callbacks() if make_callbacks else (),
                )
                run["seed"] = seed
                results[dataset][arm].append(run)
                done += 1
                if progress is not None:
                    scores = ", ".join(
                        f"{k} {run['final'][k]:.3f}"
                        for k in ("mean_iu", "accuracy")
                        if isinstance(run["final"].get(k), float)
                    )
                    progress(
                        f"[{done}/{total}] {dataset} {arm} seed {seed}: {run['iterations']} iterations, "
                        f"{scores or 'no score'}, {run['wall_seconds']:.1f} s"
                    )
    return results


def steps_per_epoch(cfg: dict[str, Any]) -> int:
    """Optimizer steps in one epoch of train config ``cfg`` (its training split over its batch size)."""
    from fcnkit.data import load_dataset

    return math.ceil(len(load_dataset(cfg["data"], "train", **cfg.get("data_options", {}))) / cfg["batch_size"])


SCORE_KEYS = ("accuracy", "mean_accuracy", "pixel_accuracy", "mean_iu", "fw_iu")


def arm_summary(seeds: list[dict], score: str, epoch_steps: int) -> dict[str, Any]:
    """One arm's seeds (``train_run`` results) as mean +- std: the final ``score`` and every score,
    parameters (all, trainable), seconds per epoch of training steps and of the whole run, and
    the per-seed runs (without their per-step curves)."""
    epochs = [r["iterations"] / epoch_steps for r in seeds]
    final = seeds[0]["final"]
    return {
        "score": mean_std(r["final"].get(score) for r in seeds),
        "scores": {k: mean_std(r["final"].get(k) for r in seeds) for k in SCORE_KEYS if k in final},
        "parameters": seeds[0]["parameters"],
        "trainable_parameters": seeds[0]["trainable_parameters"],
        "train_seconds_per_epoch": mean_std((r["train_seconds"] or math.nan) / e for r, e in zip(seeds, epochs)),
        "wall_seconds_per_epoch": mean_std(r["wall_seconds"] / e for r, e in zip(seeds, epochs)),
        "runs": [
            {k: r[k] for k in ("seed", "run", "iterations", "wall_seconds", "train_seconds", "final", "val", "train")}
            for r in seeds
        ],
    }


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")


def _warm_up(cfg: dict) -> None:
    """Import the trainer and build (and cache) the run's data once, so that the first run's wall
    time is not spent on imports and data generation."""
    import fcnkit.engine.segmentation  # noqa: F401  (imports Lightning: seconds, once per process)
    from fcnkit.data import load_dataset

    options = dict(cfg.get("data_options") or {})
    load_dataset(cfg["data"], "train", **options)
    load_dataset(cfg["data"], cfg.get("val_split", "val"), **{**options, **(cfg.get("val_data_options") or {})})
