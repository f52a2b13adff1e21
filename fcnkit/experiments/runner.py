"""What every training experiment shares: the checked common arguments (:func:`setup`), one run
through ``fcnkit.app.train.train`` per dataset, arm and seed, its per-step log read back from
``metrics.csv``, machine facts, the common part of ``results.json`` (:func:`run_experiment`), and
the atomic writing of ``results.json`` / ``*.png`` / ``summary.md``. Seeds summarised as mean +-
std and the pieces of ``summary.md`` live in :mod:`fcnkit.experiments.summaries` (re-exported here).

One run (one dataset, arm and seed) is :func:`fcnkit.experiments.single_run.train_run`.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import os
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcnkit.errors import InputError
from fcnkit.experiments.single_run import read_metrics, train_run
from fcnkit.experiments.summaries import (
    SCORE_KEYS,
    arm_summary,
    fmt_mean_std,
    markdown_table,
    mean_std,
    measured_on,
    seed_runs,
    summary_header,
)

__all__ = [
    "Setup",
    "setup",
    "run_experiment",
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
    "measured_on",
    "summary_header",
    "seed_runs",
    "SCORE_KEYS",
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


@dataclass(frozen=True)
class Setup:
    """The checked arguments every training experiment's ``run`` takes (see :func:`setup`)."""

    experiment: str
    seeds: int
    datasets: list[str]
    device: str  # "cpu" or "cuda"
    threads: int | None  # torch CPU threads per run; None on CUDA


def setup(
    experiment: str,
    *,
    seeds: int,
    datasets: Iterable[str] | None,
    available: Iterable[str],
    device: str,
    threads: int | None,
) -> Setup:
    """Check ``seeds`` and ``datasets`` (default: all ``available``) and resolve ``device``; runs get
    ``threads`` CPU threads each (default 1: on a shared 2-core machine one thread per run was 3x
    faster than two; ignored on CUDA)."""
    from fcnkit.utils.device import resolve_device

    seeds = check_seeds(seeds)
    chosen = pick_datasets(datasets, available, experiment)
    dev = resolve_device(device).type
    return Setup(experiment, seeds, chosen, dev, (threads or 1) if dev == "cpu" else None)


def run_experiment(
    setup: Setup,
    out_dir: str | os.PathLike,
    arms: list[str],
    make_config: Callable[[str, str, int], dict],
    summarise: Callable[[str, dict[str, list[dict]]], dict],
    *,
    budget_minutes: float | None,
    settings: dict[str, dict[str, Any]],
    own: dict[str, Any],
    progress: Callable[[str], None] | None = None,
    make_callbacks: Callable[[], list] | None = None,
) -> dict[str, Any]:
    """Train every arm (:func:`run_arms`) and return the results: ``{"experiment", "seeds",
    "budget_minutes", **own, "settings", "machine", "load_average_end", "datasets"}``, where
    ``datasets[name] = summarise(name, {arm: [train_run result per seed]})``."""
    machine = machine_info(setup.device)
    runs = run_arms(
        out_dir,
        setup.datasets,
        arms,
        setup.seeds,
        make_config,
        device=setup.device,
        progress=progress,
        make_callbacks=make_callbacks,
    )
    return {
        "experiment": setup.experiment,
        "seeds": setup.seeds,
        "budget_minutes": budget_minutes,
        **own,
        "settings": settings,
        "machine": machine,
        "load_average_end": machine_info(setup.device)["load_average"],
        "datasets": {name: summarise(name, runs[name]) for name in setup.datasets},
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
