"""Experiment ``sampling`` (FCN paper, Sec. 4.4 and Figure 5): whole images vs loss sampling vs patches.

One model (``allconv``, same-padded, dense output), one optimiser (Adam, same learning rate), the
same number of iterations (optimizer steps) for every arm, ``seeds`` seeds each::

    whole                 batch_size images per step; every labelled pixel in the loss
    loss-sampling p=0.5   each stride-s score cell's loss kept with probability p (an s x s pixel
    loss-sampling p=0.25  block, kept or dropped whole); ceil(batch_size / p) images per step, so
                          the kept cells per step match whole images in expectation: a step
                          costs 1/p the forward/backward work of a whole-image step
    patchwise             batch_size images per step, ``patches_per_image`` N x N crops of each at
                          uniform random centres (image padded with 0, mask with 255 beyond the
                          border); the loss is on ALL labelled cells of each crop; N = the model's
                          receptive field by default (each crop an independent forward pass)

Measured per step (``fcnkit.engine.steplog``): training loss, images, loss cells, forward FLOPs
and the step's time (forward + backward + optimizer; data loading and validation excluded);
validation scores after every epoch (an epoch = one pass over the training images, so arms with
more images per step validate more often) and at the last step. Compared:

* per iteration: final training loss (mean of the last 10% of steps) and validation mean IU at
  the same iteration count;
* per wall time: validation mean IU at the training time the fastest arm needed for all its
  iterations, and the training time each arm needed to first reach a target mean IU (90% of the
  lowest final mean IU over arms, so every arm can reach it).

Writes ``results.json``, ``sampling.png`` and ``summary.md``. Defaults: ~20 minutes on a 2-core CPU
(``budget_minutes`` scales the iterations).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fcnkit.experiments import runner

__all__ = ["run", "ARMS", "DATASETS", "DEFAULTS", "analyse"]

ARMS: dict[str, dict[str, Any]] = {
    "whole": {"name": "whole"},
    "loss-sampling p=0.5": {"name": "loss-sampling", "p": 0.5},
    "loss-sampling p=0.25": {"name": "loss-sampling", "p": 0.25},
    "patchwise": {"name": "patchwise", "sampler": "uniform", "patch_size": "rf", "patches_per_image": 4},
}
DATASETS = ("digit-canvas", "nuclei")
REFERENCE_MINUTES = 20.0
DEFAULTS: dict[str, Any] = {
    "steps": 300,  # iterations per run at budget_minutes=20 (CPU)
    **runner.SMALL_SEGMENTATION,
}


def run(
    out_dir,
    *,
    seeds: int = 3,
    budget_minutes: float | None = REFERENCE_MINUTES,
    device: str = "auto",
    datasets: list[str] | None = None,
    steps: int | None = None,
    overrides: dict[str, dict] | None = None,
    arms: list[str] | None = None,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the experiment; write results.json, sampling.png, summary.md into ``out_dir``; return the results.

    ``steps``: iterations per run (default: ``DEFAULTS["steps"]`` scaled by ``budget_minutes / 20``).
    ``overrides[dataset]``: train-config keys replacing the defaults. ``arms``: a subset of ``ARMS``.
    ``threads``: torch CPU threads per run (default 1 on CPU, see the downsampling experiment).
    """
    setup = runner.setup("sampling", seeds=seeds, datasets=datasets, available=DATASETS, device=device, threads=threads)
    arm_names = runner.pick_datasets(arms, ARMS, "sampling") if arms else list(ARMS)
    steps = steps or runner.scaled(DEFAULTS["steps"], budget_minutes, REFERENCE_MINUTES, minimum=2)
    settings = runner.step_settings(DEFAULTS, setup.datasets, overrides, steps=steps, threads=setup.threads)

    def make_config(dataset: str, arm: str, seed: int) -> dict:
        cfg = copy.deepcopy(settings[dataset])
        regime = dict(ARMS[arm])
        if regime["name"] == "loss-sampling":
            regime["seed"] = seed
        return {**cfg, "regime": regime, "seed": seed}

    results = runner.run_experiment(
        setup,
        out_dir,
        arm_names,
        make_config,
        lambda dataset, runs: analyse(runs),
        budget_minutes=budget_minutes,
        settings=settings,
        own={
            "steps": steps,
            "arms": {a: ARMS[a] for a in arm_names},
            "patch_size": _patch_size(next(iter(settings.values()))),
        },
        progress=progress,
    )
    from fcnkit.experiments.sampling_report import plot, summary

    runner.write_outputs(out_dir, results, summary(results), {"sampling": lambda p: plot(results, p)})
    return results


def _patch_size(cfg: dict) -> int | str:
    """The patch size the patchwise arm uses in pixels (``rf``: the model's receptive field)."""
    size = ARMS["patchwise"]["patch_size"]
    if size != "rf":
        return size
    from fcnkit.models.registry import build_model

    model = build_model(cfg["model"], num_classes=2, in_channels=1, **cfg.get("model_options", {}))
    rf = model.receptive_field
    if not isinstance(rf, (int, float)):  # every segmenter of the registry has one; a bug otherwise
        raise TypeError(f"model {cfg['model']!r} has no numeric receptive_field")
    return int(rf)


def analyse(runs: dict[str, list[dict]]) -> dict:
    """Per arm: per-seed curves and the per-iteration / per-wall-time comparisons (module docstring)."""
    arms: dict[str, dict[str, Any]] = {}
    for arm, seeds in runs.items():
        tail = [max(1, len(r["train"]) // 10) for r in seeds]
        arms[arm] = {
            "iterations": seeds[0]["iterations"],
            "images_per_iteration": runner.mean_std(r["train"][-1]["images"] / r["iterations"] for r in seeds),
            "cells_per_iteration": runner.mean_std(r["train"][-1]["cells"] / r["iterations"] for r in seeds),
            "forward_gflops_per_iteration": runner.mean_std(
                r["train"][-1]["flops"] / r["iterations"] / 1e9 for r in seeds
            ),
            "train_seconds": runner.mean_std(r["train_seconds"] for r in seeds),
            "wall_seconds": runner.mean_std(r["wall_seconds"] for r in seeds),
            "final_loss": runner.mean_std(sum(x["loss"] for x in r["train"][-k:]) / k for r, k in zip(seeds, tail)),
            "final_mean_iu": runner.mean_std(r["final"].get("mean_iu") for r in seeds),
            "runs": runner.seed_runs(seeds, train_keys=("iteration", "loss", "seconds", "images", "cells")),
        }
    finals = [a["final_mean_iu"]["mean"] for a in arms.values() if a["final_mean_iu"]["mean"] is not None]
    target = 0.9 * min(finals) if finals else None
    # the time by which the fastest arm had finished in every seed
    matched = min(max(r["train_seconds"] or 0.0 for r in a["runs"]) for a in arms.values()) if arms else None
    for a in arms.values():
        a["time_to_target"] = _time_to(a["runs"], target)
        a["mean_iu_at_matched_time"] = runner.mean_std(_score_at(r["val"], matched) for r in a["runs"])
        a["loss_at_matched_time"] = runner.mean_std(_loss_at(r["train"], matched) for r in a["runs"])
    return {"target_mean_iu": target, "matched_seconds": matched, "arms": arms}


def _time_to(runs: list[dict], target: float | None) -> dict:
    """Training seconds until the first validation at or above ``target``, over the seeds that got there."""
    times = []
    for r in runs:
        hit = next(
            (v.get("seconds") for v in r["val"] if target is not None and (v.get("mean_iu") or 0) >= target), None
        )
        if hit is not None:
            times.append(hit)
    return {**runner.mean_std(times), "reached": len(times), "of": len(runs)}


def _score_at(val: list[dict], seconds: float | None) -> float | None:
    """Validation mean IU of the last validation at or before ``seconds`` of training."""
    before = [v for v in val if seconds is not None and v.get("seconds", float("inf")) <= seconds * (1 + 1e-9)]
    return before[-1].get("mean_iu") if before else None


def _loss_at(train: list[dict], seconds: float | None, window: int = 10) -> float | None:
    """Mean training loss of the ``window`` steps ending at ``seconds`` of training."""
    before = [
        x["loss"] for x in train if seconds is not None and x.get("seconds", float("inf")) <= seconds * (1 + 1e-9)
    ]
    return sum(before[-window:]) / len(before[-window:]) if before else None
