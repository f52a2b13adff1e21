"""What the training experiments' summaries share: seeds as mean +- std, one arm's summary, the
per-seed run records kept in ``results.json``, and the pieces of ``summary.md`` (the "Measured ..."
sentence, the header, markdown tables). Re-exported by :mod:`fcnkit.experiments.runner`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "SCORE_KEYS",
    "mean_std",
    "fmt_mean_std",
    "markdown_table",
    "measured_on",
    "summary_header",
    "seed_runs",
    "arm_summary",
]

SCORE_KEYS = ("accuracy", "mean_accuracy", "pixel_accuracy", "mean_iu", "fw_iu")

# what results.json keeps of each seed's train_run result (the per-step "train" rows come last)
_RUN_KEYS = ("seed", "run", "iterations", "wall_seconds", "train_seconds", "final", "val")


def measured_on(results: dict) -> str:
    """The 'Measured <date> on <device>, torch, threads, load at start and end.' sentence of a summary."""
    m = results["machine"]
    first: dict[str, Any] = next(iter(results.get("settings", {}).values()), {})
    threads = first.get("threads") or m["threads"]
    gpu = f" ({m['gpu']})" if m.get("gpu") else ""
    return (
        f"Measured {m['date']} on {m['device']}{gpu}, torch {m['torch']}, {threads} thread(s) per run, "
        f"load average {m['load_average']} at the start, {results['load_average_end']} at the end."
    )


def summary_header(title: str, results: dict, *notes: str) -> list[str]:
    """The first lines of a summary.md: ``# title``, the "Measured ..." sentence with the seeds, ``notes``."""
    seeds = f"{results['seeds']} seed(s); mean ± std over seeds (sample std)."
    return [f"# {title}", "", f"{measured_on(results)} {seeds}", *notes, ""]


def seed_runs(seeds: list[dict], train_keys: Sequence[str] | None = None) -> list[dict]:
    """Each seed's ``train_run`` result as results.json keeps it: its scores, validation rows and
    per-step rows (only ``train_keys`` of each step, if given), without the rest."""

    def steps(rows: list[dict]) -> list[dict]:
        return rows if train_keys is None else [{k: x[k] for k in train_keys if k in x} for x in rows]

    return [{**{k: r[k] for k in _RUN_KEYS}, "train": steps(r["train"])} for r in seeds]


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


def arm_summary(seeds: list[dict], score: str, epoch_steps: int) -> dict[str, Any]:
    """One arm's seeds (``train_run`` results) as mean +- std: the final ``score`` and every score,
    parameters (all, trainable), seconds per epoch of training steps and of the whole run, and
    the per-seed runs (:func:`seed_runs`)."""
    epochs = [r["iterations"] / epoch_steps for r in seeds]
    final = seeds[0]["final"]
    return {
        "score": mean_std(r["final"].get(score) for r in seeds),
        "scores": {k: mean_std(r["final"].get(k) for r in seeds) for k in SCORE_KEYS if k in final},
        "parameters": seeds[0]["parameters"],
        "trainable_parameters": seeds[0]["trainable_parameters"],
        "train_seconds_per_epoch": mean_std((r["train_seconds"] or math.nan) / e for r, e in zip(seeds, epochs)),
        "wall_seconds_per_epoch": mean_std(r["wall_seconds"] / e for r, e in zip(seeds, epochs)),
        "runs": seed_runs(seeds),
    }
