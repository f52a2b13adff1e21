"""Experiment ``downsampling`` (All Convolutional Net, Springenberg et al. 2015): is pooling needed?

The same allconv body (same depth, same widths, same stride) with four ways to halve the resolution
between stages (``fcnkit.models.allconv``'s ``downsample``)::

    maxpool        conv -> ... -> conv | 2x2 max-pool, stride 2          (the baseline)
    avgpool        conv -> ... -> conv | 2x2 average pool, stride 2
    strided        conv -> ... -> conv | 3x3 conv, stride 2, same channels (the pool made learnable:
                                                                         more parameters)
    strided-only   conv -> ... -> conv(stride 2)                         (pool removed, the stage's
                                                                         last conv strided: fewer
                                                                         layers, less compute)

trained on ``digits`` (classification, ``allconv_cls``, top-1 accuracy) and ``digit-canvas``
(segmentation, ``allconv``, mean IU), ``seeds`` seeds each, same optimiser and steps. Reported per
variant: the final validation score (mean +- std over seeds), parameters (all, and trainable: the
segmenter's fixed bilinear upsampling kernels are parameters without gradient), and seconds per
epoch: training steps only (forward, backward, optimizer; from the run's step log) and the wall
time of the whole run per epoch (validation and start-up included).

Writes ``results.json``, ``scores.png``, ``time.png`` and ``summary.md`` into ``out_dir``.
Defaults take about 10 minutes on a 2-core CPU; ``budget_minutes`` scales the epochs (below one
epoch: a fraction of one, via ``max_steps``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fcnkit.experiments import runner
from fcnkit.experiments.plots import bars, mean_std_lists, panel_row

__all__ = ["run", "VARIANTS", "DATASETS", "DEFAULTS"]

VARIANTS = ("maxpool", "strided", "strided-only", "avgpool")
DATASETS = ("digits", "digit-canvas")
REFERENCE_MINUTES = 20.0  # the budget the defaults are sized for
# train-config settings per dataset; "epochs" is what the budget scales
DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {
        "task": "classification",
        "model": "allconv_cls",
        "epochs": 4,
        "batch_size": 32,
        "lr": 3e-3,
        "model_options": {"width": 8, "depth": 2, "stages": 2},
    },
    # 3 epochs of 256 canvases (96 steps) left every variant near mean IU 0.15: too early to compare
    "digit-canvas": {
        "task": "segmentation",
        "model": "allconv",
        "epochs": 5,
        "batch_size": 8,
        "lr": 3e-3,
        "data_options": {"count": 1024},
        "val_data_options": {"count": 100},
        "model_options": {"width": 8, "depth": 1, "stages": 3},
    },
}
SCORE = {"classification": "accuracy", "segmentation": "mean_iu"}
LABELS = {"accuracy": "accuracy", "mean_iu": "mean IU"}


def run(
    out_dir,
    *,
    seeds: int = 3,
    budget_minutes: float | None = REFERENCE_MINUTES,
    device: str = "auto",
    datasets: list[str] | None = None,
    overrides: dict[str, dict] | None = None,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the experiment; write results.json, scores.png, time.png, summary.md; return the results.

    ``overrides[dataset]``: train-config keys that replace the defaults (e.g. ``{"max_steps": 2}``).
    ``threads``: torch CPU threads per run (default 1 on CPU: on a shared 2-core machine one thread
    per run was 3x faster than two; ignored on CUDA).
    """
    setup = runner.setup(
        "downsampling", seeds=seeds, datasets=datasets, available=DATASETS, device=device, threads=threads
    )
    settings = {}
    for name in setup.datasets:
        cfg = copy.deepcopy(DEFAULTS[name])
        epochs = cfg["epochs"] * (budget_minutes or REFERENCE_MINUTES) / REFERENCE_MINUTES
        cfg["epochs"] = max(1, math.floor(epochs))
        if epochs < 1:  # a fraction of one epoch
            cfg["max_steps"] = max(1, int(epochs * _steps_per_epoch(name, cfg)))
        cfg.update(copy.deepcopy((overrides or {}).get(name, {})))
        cfg.update(data=name, threads=setup.threads)
        settings[name] = cfg

    def make_config(dataset: str, variant: str, seed: int) -> dict:
        cfg = copy.deepcopy(settings[dataset])
        cfg["model_options"] = {**cfg.get("model_options", {}), "downsample": variant}
        cfg["seed"] = seed
        return cfg

    results = runner.run_experiment(
        setup,
        out_dir,
        list(VARIANTS),
        make_config,
        lambda name, runs: _summarise(name, settings[name], runs),
        budget_minutes=budget_minutes,
        settings=settings,
        own={},
        progress=progress,
    )
    figures = {"scores": lambda p: _plot_scores(results, p), "time": lambda p: _plot_time(results, p)}
    runner.write_outputs(out_dir, results, summary(results), figures)
    return results


def _steps_per_epoch(dataset: str, cfg: dict) -> int:
    return runner.steps_per_epoch({**cfg, "data": dataset})


def _summarise(dataset: str, cfg: dict, runs: dict[str, list[dict]]) -> dict:
    score = SCORE[cfg["task"]]
    steps_per_epoch = _steps_per_epoch(dataset, cfg)
    variants = {variant: runner.arm_summary(seeds, score, steps_per_epoch) for variant, seeds in runs.items()}
    return {"task": cfg["task"], "score": score, "steps_per_epoch": steps_per_epoch, "variants": variants}


def summary(results: dict) -> str:
    """summary.md: a table per dataset and a conclusion phrased from the measured numbers."""
    lines = runner.summary_header("downsampling: max-pool vs strided conv vs strided-only vs average pool", results)
    for name, block in results["datasets"].items():
        cfg = results["settings"][name]
        score = block["score"]
        length = f"{cfg['max_steps']} steps" if cfg.get("max_steps") else f"{cfg['epochs']} epoch(s)"
        lines += [
            f"## {name} ({block['task']}, {cfg['model']} {cfg.get('model_options', {})})",
            "",
            f"Training: {length} (an epoch = {block['steps_per_epoch']} steps), batch {cfg['batch_size']}, "
            f"Adam lr {cfg['lr']}; score = {LABELS[score]} on the validation split after the last step.",
            "",
        ]
        rows = []
        for variant, v in block["variants"].items():
            rows.append(
                [
                    variant,
                    runner.fmt_mean_std(v["score"]),
                    f"{v['trainable_parameters']:,}",
                    f"{v['parameters']:,}",
                    runner.fmt_mean_std(v["train_seconds_per_epoch"], 2),
                    runner.fmt_mean_std(v["wall_seconds_per_epoch"], 2),
                ]
            )
        headers = ["variant", LABELS[score], "trainable params", "all params", "train s/epoch", "wall s/epoch"]
        lines += [runner.markdown_table(headers, rows), ""]
        lines += [_conclusion(block), ""]
        from fcnkit.experiments.chance import chance_note

        v = block["variants"]
        note = chance_note({k: v[k]["score"]["mean"] for k in v}, score, name, LABELS[score])
        lines += [note, ""] if note else []
    return "\n".join(lines)


def _conclusion(block: dict) -> str:
    v = block["variants"]
    name = LABELS[block["score"]]
    ranked = sorted(v, key=lambda k: -(v[k]["score"]["mean"] if v[k]["score"]["mean"] is not None else -math.inf))
    best, base = ranked[0], v.get("maxpool")
    parts = [f"Highest {name}: {best} ({runner.fmt_mean_std(v[best]['score'])})."]
    if base is None or base["score"]["mean"] is None:
        return " ".join(parts)
    for variant in ranked:
        if variant == "maxpool" or v[variant]["score"]["mean"] is None:
            continue
        s = v[variant]
        diff = s["score"]["mean"] - base["score"]["mean"]
        if min(s["score"]["n"], base["score"]["n"]) > 1:
            spread = 2 * max(s["score"]["std"], base["score"]["std"])
            within = f"{'within' if abs(diff) <= spread else 'beyond'} twice the larger seed std, {spread:.3f}"
        else:
            within = "one seed: no spread to compare with"
        params = s["trainable_parameters"] - base["trainable_parameters"]
        t, tb = s["train_seconds_per_epoch"]["mean"], base["train_seconds_per_epoch"]["mean"]
        ratio = f", {t / tb:.2f}x its training time per epoch" if t and tb else ""
        parts.append(f"{variant} vs maxpool: {name} {diff:+.3f} ({within}), {params:+,} trainable parameters{ratio}.")
    return " ".join(parts)


def _plot_scores(results: dict, path: Path) -> None:
    def draw(ax, name: str, block: dict) -> None:
        v = block["variants"]
        label = LABELS[block["score"]]
        bars(ax, list(v), {block["score"]: mean_std_lists(v[k]["score"] for k in v)}, f"validation {label}")
        means = [v[k]["score"]["mean"] for k in v if v[k]["score"]["mean"] is not None]
        if means:
            ax.set_ylim(max(0.0, min(means) - 0.15), min(1.0, max(means) + 0.08))
        ax.set_title(f"{name} ({block['task']}), mean ± std of {results['seeds']} seed(s)")

    panel_row(results["datasets"], path, draw)


def _plot_time(results: dict, path: Path) -> None:
    def draw(ax, name: str, block: dict) -> None:
        v = block["variants"]
        series = {
            "training steps": mean_std_lists(v[k]["train_seconds_per_epoch"] for k in v),
            "whole run (incl. validation)": mean_std_lists(v[k]["wall_seconds_per_epoch"] for k in v),
        }
        bars(ax, list(v), series, "seconds per epoch")
        ax.set_title(f"{name}: time per epoch ({results['machine']['device']})")
        ax.legend(fontsize=8)

    panel_row(results["datasets"], path, draw)
