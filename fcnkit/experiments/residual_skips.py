"""Experiment ``residual-skips`` (FishNet, Sun et al. 2018): does a 1x1 projection on the skip
where the resolution drops hinder gradient propagation, compared with pooling + identity?

The residual allconv family (:mod:`fcnkit.models.residual`) with its three ``skip_downsample``
variants, everything else equal (main path: ResNet's stride-2 3x3 conv; same widths, same depth)::

    conv1x1       skip = 1x1 conv, stride 2, + BatchNorm          ResNet's projection (FishNet's "I-conv")
    pool          skip = 2x2 max-pool, channels grown by zero-padding
    pool-concat   skip = 2x2 max-pool, channels grown by concatenation with the main path's new ones

on ``digits`` (classification, ``resallconv_cls``, top-1 accuracy) and ``digit-canvas``
(segmentation, ``resallconv``, mean IU), at a shallow and a deep depth (residual blocks per
stage), ``seeds`` seeds each, same optimiser and number of steps. During training a Lightning
callback logs, after every backward pass, the gradient norms of the first stage (the stem) and of
the last stage and their ratio (:func:`fcnkit.training.gradients.stage_grad_norms`): the quantity
FishNet's argument is about. Reported per variant and depth: final validation score, parameters,
seconds per epoch (training steps; whole run), and the first/last gradient ratio: the median over
all steps of a run and over its first 10% of steps (mean +- std over seeds).

Writes ``results.json``, ``scores.png``, ``gradients.png`` and ``summary.md`` into ``out_dir``.
Defaults are sized for about 15 minutes with one thread per run (measured: 22 minutes on a 2-core
CPU shared at load average 6-12); ``budget_minutes`` scales the steps.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L

from fcnkit.errors import InputError
from fcnkit.experiments import runner
from fcnkit.experiments.plots import bars, mean_std_lists, new_figure, save, seed_band, smooth

__all__ = ["run", "VARIANTS", "DATASETS", "DEFAULTS", "StageGradientLog", "summary"]

VARIANTS = ("conv1x1", "pool", "pool-concat")  # fcnkit.models.residual.SKIP_DOWNSAMPLE_KINDS
DATASETS = ("digits", "digit-canvas")
REFERENCE_MINUTES = 15.0  # the budget the defaults are sized for
DEFAULTS: dict[str, Any] = {
    "depths": [1, 6],  # residual blocks per stage: shallow, deep (2 convs each)
    # per run at budget_minutes=15; digit-canvas needs more steps (mean IU ~0.4 after 300 in a one-seed check)
    "steps": {"digits": 200, "digit-canvas": 240},
    "train": {"optimizer": "adam", "lr": 3e-3},
    "data": {
        "digits": {
            "task": "classification",
            "model": "resallconv_cls",
            "batch_size": 32,
            "model_options": {"width": 8, "stages": 2},
        },
        "digit-canvas": {
            "task": "segmentation",
            "model": "resallconv",
            "batch_size": 8,
            "data_options": {"count": 512},
            "val_data_options": {"count": 100},
            "model_options": {"width": 8, "stages": 3},
        },
    },
}
SCORE = {"classification": "accuracy", "segmentation": "mean_iu"}
LABELS = {"accuracy": "accuracy", "mean_iu": "mean IU"}
EARLY = 0.1  # "early": the first 10% of a run's steps


class StageGradientLog(L.Callback):
    """Logs ``grad_first``, ``grad_last`` and ``grad_ratio`` (first / last) after every backward
    pass (before the optimizer step; fp32 gradients, no loss scaling on CPU) into ``metrics.csv``."""

    def on_after_backward(self, trainer, pl_module) -> None:
        from fcnkit.training.gradients import stage_grad_norms

        norms = stage_grad_norms(pl_module.model)
        pl_module.log_dict(
            {f"grad_{k}": float(v) for k, v in norms.items()}, on_step=True, on_epoch=False, batch_size=1
        )


def run(
    out_dir,
    *,
    seeds: int = 3,
    budget_minutes: float | None = REFERENCE_MINUTES,
    device: str = "auto",
    datasets: list[str] | None = None,
    depths: list[int] | None = None,
    overrides: dict[str, dict] | None = None,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the experiment; write results.json, scores.png, gradients.png, summary.md; return the results.

    ``depths``: residual blocks per stage (default ``DEFAULTS["depths"]``). ``overrides[dataset]``:
    train-config keys replacing the defaults (e.g. ``{"max_steps": 2}``). ``threads``: torch CPU
    threads per run (default 1 on CPU; ignored on CUDA).
    """
    setup = runner.setup(
        "residual-skips", seeds=seeds, datasets=datasets, available=DATASETS, device=device, threads=threads
    )
    depths = list(depths or DEFAULTS["depths"])
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in depths):
        raise InputError(f"depths={depths!r}: give whole numbers >= 1 (residual blocks per stage), e.g. [1, 6]")
    settings = {}
    for name in setup.datasets:
        steps = runner.scaled(DEFAULTS["steps"][name], budget_minutes, REFERENCE_MINUTES, minimum=2)
        settings[name] = runner.step_settings(DEFAULTS, [name], overrides, steps=steps, threads=setup.threads)[name]
        settings[name].update((overrides or {}).get(name, {}))  # an override of max_steps wins
    arms = {f"{variant} depth {depth}": (variant, depth) for depth in depths for variant in VARIANTS}

    def make_config(dataset: str, arm: str, seed: int) -> dict:
        cfg = copy.deepcopy(settings[dataset])
        variant, depth = arms[arm]
        cfg["model_options"] = {**cfg.get("model_options", {}), "skip_downsample": variant, "depth": depth}
        cfg["seed"] = seed
        return cfg

    results = runner.run_experiment(
        setup,
        out_dir,
        list(arms),
        make_config,
        lambda name, runs: _summarise(settings[name], runs, arms),
        budget_minutes=budget_minutes,
        settings=settings,
        own={"depths": depths},
        progress=progress,
        make_callbacks=lambda: [StageGradientLog()],
    )
    figures = {"scores": lambda p: _plot_scores(results, p), "gradients": lambda p: _plot_gradients(results, p)}
    runner.write_outputs(out_dir, results, summary(results), figures)
    return results


def _ratios(run: dict, early: bool = False) -> list[float]:
    rows = [
        r["grad_ratio"]
        for r in run["train"]
        if isinstance(r.get("grad_ratio"), float) and math.isfinite(r["grad_ratio"])
    ]
    return rows[: max(1, math.ceil(EARLY * len(rows)))] if early else rows


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _summarise(cfg: dict, runs: dict[str, list[dict]], arms: dict[str, tuple[str, int]]) -> dict:
    score = SCORE[cfg["task"]]
    epoch_steps = runner.steps_per_epoch(cfg)
    depths: dict[str, dict] = {}
    for arm, seeds in runs.items():
        variant, depth = arms[arm]
        stats = runner.arm_summary(seeds, score, epoch_steps)
        stats["grad_ratio"] = runner.mean_std(_median(_ratios(r)) for r in seeds)
        stats["grad_ratio_early"] = runner.mean_std(_median(_ratios(r, early=True)) for r in seeds)
        for key in ("first", "last"):
            stats[f"grad_{key}"] = runner.mean_std(
                _median([t[f"grad_{key}"] for t in r["train"] if f"grad_{key}" in t]) for r in seeds
            )
        depths.setdefault(str(depth), {})[variant] = stats
    return {"task": cfg["task"], "score": score, "steps_per_epoch": epoch_steps, "depths": depths}


def summary(results: dict) -> str:
    """summary.md: a table per dataset and depth and a conclusion phrased from the measured numbers."""
    lines = runner.summary_header(
        "residual-skips: 1x1 projection vs pooling + identity (zero-pad / concat) on the skip",
        results,
        "grad ratio = ||grad of the first stage's parameters|| / ||grad of the last stage's||, median over "
        "the steps of a run (early: its first 10% of steps).",
    )
    verdicts = []
    for name, block in results["datasets"].items():
        cfg = results["settings"][name]
        score = block["score"]
        opts = {k: v for k, v in cfg.get("model_options", {}).items()}
        lines += [
            f"## {name} ({block['task']}, {cfg['model']} {opts})",
            "",
            f"Training: {cfg['max_steps']} steps (an epoch = {block['steps_per_epoch']} steps), batch "
            f"{cfg['batch_size']}, {cfg.get('optimizer', 'adam')} lr {cfg['lr']}; score = {LABELS[score]} on "
            "the validation split after the last step.",
            "",
        ]
        headers = [
            "depth",
            "skip",
            LABELS[score],
            "grad ratio",
            "grad ratio (early)",
            "trainable params",
            "train s/epoch",
            "wall s/epoch",
        ]
        rows = []
        for depth, variants in block["depths"].items():
            for variant, v in variants.items():
                rows.append(
                    [
                        depth,
                        variant,
                        runner.fmt_mean_std(v["score"]),
                        _fmt(v["grad_ratio"]),
                        _fmt(v["grad_ratio_early"]),
                        f"{v['trainable_parameters']:,}",
                        runner.fmt_mean_std(v["train_seconds_per_epoch"], 2),
                        runner.fmt_mean_std(v["wall_seconds_per_epoch"], 2),
                    ]
                )
        lines += [runner.markdown_table(headers, rows), ""]
        for depth, variants in block["depths"].items():
            text, verdict = _conclusion(variants, LABELS[score])
            lines += [f"Depth {depth}: {text}", ""]
            verdicts.append(verdict)
    held = sum(v == "held" for v in verdicts)
    lines += [
        f"**FishNet's gradient claim** (pool and pool-concat pass a larger first/last gradient ratio than "
        f"conv1x1, beyond twice the seed std) **held in {held} of {len(verdicts)} dataset/depth settings here.**",
        "",
    ]
    return "\n".join(lines)


def _fmt(stat: dict) -> str:
    return "n/a" if stat.get("mean") is None else f"{stat['mean']:.3g} ± {stat['std']:.2g}"


def _beyond(a: dict, b: dict) -> bool | None:
    """``a`` above ``b`` by more than twice the larger seed std (None: one seed, no spread)."""
    if a["mean"] is None or b["mean"] is None or min(a["n"], b["n"]) < 2:
        return None
    return a["mean"] - b["mean"] > 2 * max(a["std"], b["std"])


def _conclusion(variants: dict, label: str) -> tuple[str, str]:
    base = variants.get("conv1x1")
    if base is None or base["grad_ratio"]["mean"] in (None, 0):
        return "no conv1x1 baseline to compare with.", "n/a"
    parts, beyond = [], []
    for variant in ("pool", "pool-concat"):
        v = variants.get(variant)
        if v is None or v["grad_ratio"]["mean"] is None:
            continue
        factor = v["grad_ratio"]["mean"] / base["grad_ratio"]["mean"]
        b = _beyond(v["grad_ratio"], base["grad_ratio"])
        beyond.append(b)
        spread = "one seed" if b is None else ("beyond" if b else "within") + " twice the seed std"
        diff = (v["score"]["mean"] or math.nan) - (base["score"]["mean"] or math.nan)
        parts.append(
            f"{variant}: grad ratio {factor:.2f}x conv1x1's ({spread}), {label} {diff:+.3f}, "
            f"{v['trainable_parameters'] - base['trainable_parameters']:+,} parameters."
        )
    if any(b is None for b in beyond) or not beyond:
        verdict = "n/a"
    else:
        verdict = "held" if all(beyond) else "not held"
    return " ".join(parts) + f" Gradient claim: {verdict}.", verdict


def _plot_scores(results: dict, path: Path) -> None:
    blocks = results["datasets"]
    fig, axes = new_figure(2, len(blocks), size=(5.0, 3.4))
    for col, (name, block) in enumerate(blocks.items()):
        groups = [f"depth {d}" for d in block["depths"]]
        per = list(block["depths"].values())
        score = {v: mean_std_lists(p[v]["score"] for p in per) for v in VARIANTS}
        bars(axes[0][col], groups, score, f"validation {LABELS[block['score']]}")
        axes[0][col].set_title(f"{name}: score, mean ± std of {results['seeds']} seed(s)")
        axes[0][col].legend(fontsize=8)
        t = {v: mean_std_lists(p[v]["train_seconds_per_epoch"] for p in per) for v in VARIANTS}
        bars(axes[1][col], groups, t, "training seconds per epoch")
        axes[1][col].set_title(f"{name}: time ({results['machine']['device']})")
    save(fig, path)


def _plot_gradients(results: dict, path: Path) -> None:
    blocks = results["datasets"]
    ncols = max(len(b["depths"]) for b in blocks.values())
    fig, axes = new_figure(len(blocks), ncols, size=(5.0, 3.4))
    for row, (name, block) in enumerate(blocks.items()):
        for col, (depth, variants) in enumerate(block["depths"].items()):
            ax = axes[row][col]
            for variant, v in variants.items():
                curves: list[tuple[Sequence[float], Sequence[float]]] = []
                for r in v["runs"]:
                    steps = [t["iteration"] for t in r["train"] if isinstance(t.get("grad_ratio"), float)]
                    ratios = [t["grad_ratio"] for t in r["train"] if isinstance(t.get("grad_ratio"), float)]
                    curves.append((steps, smooth(ratios, max(1, len(ratios) // 20)).tolist()))
                seed_band(ax, curves, variant)
            ax.set_yscale("log")
            ax.set_xlabel("iteration")
            ax.set_ylabel("grad norm first / last stage")
            ax.set_title(f"{name}, depth {depth}")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    save(fig, path)
