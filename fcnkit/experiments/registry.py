"""The experiments by name (a dict, timm style) and the one call that runs any of them.

Every experiment is a module with ``run(out_dir, ...) -> dict`` that writes ``results.json``,
PNG plots and ``summary.md`` into ``out_dir``. The common options map onto each::

    seeds            training experiments: seeds per configuration (default 3);
                     gradient-equivalence: timing repeats (its default 5)
    budget_minutes   the time the default settings are sized for (20); other values scale them
    device           auto | cpu | cuda (gradient-equivalence: auto = CPU, plus CUDA when present)
    datasets         a subset of the experiment's datasets (not for gradient-equivalence)
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from fcnkit.errors import InputError, did_you_mean

__all__ = ["EXPERIMENTS", "list_experiments", "run_experiment"]

# name -> (module, one-line description)
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "gradient-equivalence": (
        "fcnkit.experiments.gradient_equivalence",
        "one gradient, whole image vs receptive-field patch batch: equal numbers, timed",
    ),
    "sampling": (
        "fcnkit.experiments.sampling",
        "FCN Fig. 5: whole images vs loss sampling p=0.5/0.25 vs patchwise, per iteration and wall time",
    ),
    "class-balance": (
        "fcnkit.experiments.class_balance",
        "no balancing vs inverse / median class weights vs class-balanced sampling",
    ),
    "downsampling": (
        "fcnkit.experiments.downsampling",
        "All-CNN: max-pool vs strided conv vs strided-only vs average pool",
    ),
    "residual-skips": (
        "fcnkit.experiments.residual_skips",
        "FishNet: residual skip at a resolution drop, 1x1 projection vs pool + zero-pad / concat",
    ),
    "large-image": (
        "fcnkit.experiments.large_image",
        "whole-image vs exact tiled steps vs random patches on large mosaics, at equal wall time",
    ),
}


def list_experiments() -> list[tuple[str, str]]:
    """``(name, description)`` of every experiment, without importing any of them."""
    return [(name, text) for name, (_, text) in EXPERIMENTS.items()]


def run_experiment(
    name: str,
    out: str | os.PathLike,
    *,
    seeds: int | None = None,
    budget_minutes: float | None = None,
    device: str = "auto",
    datasets: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run experiment ``name`` into folder ``out``; returns its results (also in ``out/results.json``).

    ``None`` keeps an experiment's own default. Unknown names are an InputError naming the nearest.
    """
    if name not in EXPERIMENTS:
        raise InputError(
            f"unknown experiment '{name}'{did_you_mean(name, EXPERIMENTS)}; "
            f"available: {', '.join(EXPERIMENTS)} (see 'fcnkit experiment list')"
        )
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device {device!r}: use auto, cpu or cuda")
    from fcnkit.utils.device import resolve_device
    from fcnkit.utils.outputs import output_folder

    resolve_device(device)  # cuda without a GPU: one line now, not a traceback later

    with output_folder(out, "experiment"):  # never into a folder of the user's files
        return _run(
            name, importlib.import_module(EXPERIMENTS[name][0]), out, seeds, budget_minutes, device, datasets, progress
        )


def _run(name, module, out, seeds, budget_minutes, device, datasets, progress) -> dict[str, Any]:
    if name == "gradient-equivalence":
        if datasets:
            raise InputError("gradient-equivalence uses synthetic images; drop --datasets")
        kwargs: dict[str, Any] = {"devices": device}
        if seeds is not None:
            kwargs["repeats"] = seeds
        if budget_minutes is not None:
            kwargs["budget_minutes"] = budget_minutes
        return module.run(out, **kwargs)
    kwargs = {"device": device, "datasets": datasets, "progress": progress}
    if seeds is not None:
        kwargs["seeds"] = seeds
    if budget_minutes is not None:
        kwargs["budget_minutes"] = budget_minutes
    return module.run(out, **kwargs)
