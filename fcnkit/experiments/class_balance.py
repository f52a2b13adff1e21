"""Experiment ``class-balance``: does balancing the classes trade pixel accuracy for mean accuracy?

Four ways to treat rare classes, same model, optimiser and iterations, ``seeds`` seeds each::

    none       plain pixelwise cross-entropy: every labelled pixel weighs 1
    inverse    class weights 1 / frequency (training-set pixel counts), normalised   (class_weights)
    median     median frequency balancing: weight_c = median(freq) / freq_c          (class_weights)
    sampling   class-balanced SAMPLING (regime class-balanced, by: sampling): each pixel of class c
               is kept in the loss with probability min_k(n_k) / n_c, so every class contributes the
               same number of pixels in expectation; kept pixels weigh 1

on ``digit-canvas`` (11 classes, background ~90% of the pixels) and ``nuclei`` (2 classes).
Scores on the validation split after the last step: mean IU, mean (per-class) accuracy, pixel
accuracy, and the change of each against ``none`` in percentage points: balancing is expected to
raise mean accuracy (rare classes are found more often) at the price of pixel accuracy (the
frequent class is given up more often).

Writes ``results.json``, ``scores.png`` and ``summary.md``. Defaults: ~10-15 minutes on a 2-core CPU
(``budget_minutes`` scales the iterations).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fcnkit.experiments import runner
from fcnkit.experiments.plots import bars, mean_std_lists, panel_row

__all__ = ["run", "ARMS", "DATASETS", "DEFAULTS", "SCORES"]

ARMS: dict[str, dict[str, Any]] = {
    "none": {"class_weights": "none"},
    "inverse": {"class_weights": "inverse"},
    "median": {"class_weights": "median"},
    "sampling": {"regime": {"name": "class-balanced", "by": "sampling"}},
}
DATASETS = ("digit-canvas", "nuclei")
SCORES = ("mean_iu", "mean_accuracy", "pixel_accuracy")
LABELS = {"mean_iu": "mean IU", "mean_accuracy": "mean accuracy", "pixel_accuracy": "pixel accuracy"}
REFERENCE_MINUTES = 20.0
DEFAULTS: dict[str, Any] = {
    "steps": 600,  # iterations per run at budget_minutes=20 (CPU)
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
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the experiment; write results.json, scores.png, summary.md into ``out_dir``; return the results.

    ``steps``: iterations per run (default ``DEFAULTS["steps"]`` scaled by ``budget_minutes / 20``);
    ``overrides[dataset]``: train-config keys replacing the defaults; ``threads``: CPU threads per run.
    """
    setup = runner.setup(
        "class-balance", seeds=seeds, datasets=datasets, available=DATASETS, device=device, threads=threads
    )
    steps = steps or runner.scaled(DEFAULTS["steps"], budget_minutes, REFERENCE_MINUTES, minimum=2)
    settings = runner.step_settings(DEFAULTS, setup.datasets, overrides, steps=steps, threads=setup.threads)

    def make_config(dataset: str, arm: str, seed: int) -> dict:
        cfg = {**copy.deepcopy(settings[dataset]), **copy.deepcopy(ARMS[arm]), "seed": seed}
        if "regime" in ARMS[arm]:
            cfg["regime"] = {**cfg["regime"], "seed": seed}
        return cfg

    results = runner.run_experiment(
        setup,
        out_dir,
        list(ARMS),
        make_config,
        lambda dataset, runs: _summarise(runs),
        budget_minutes=budget_minutes,
        settings=settings,
        own={"steps": steps, "arms": ARMS},
        progress=progress,
    )
    runner.write_outputs(out_dir, results, summary(results), {"scores": lambda p: _plot(results, p)})
    return results


def _summarise(runs: dict[str, list[dict]]) -> dict:
    arms: dict[str, dict[str, Any]] = {}
    for arm, seeds in runs.items():
        arms[arm] = {
            "scores": {k: runner.mean_std(r["final"].get(k) for r in seeds) for k in SCORES},
            "cells_per_iteration": runner.mean_std(r["train"][-1].get("cells", 0) / r["iterations"] for r in seeds),
            "train_seconds": runner.mean_std(r["train_seconds"] for r in seeds),
            "runs": runner.seed_runs(seeds, train_keys=("iteration", "loss", "seconds", "cells")),
        }
    base = arms.get("none")
    for a in arms.values():
        # change against no balancing, in percentage points, per seed pair (same seed = same init and order)
        a["change_vs_none_pp"] = (
            {}
            if base is None
            else {
                k: runner.mean_std(
                    100 * (r["final"].get(k) - b["final"].get(k))
                    for r, b in zip(a["runs"], base["runs"])
                    if r["final"].get(k) is not None and b["final"].get(k) is not None
                )
                for k in SCORES
            }
        )
    return {"arms": arms}


def summary(results: dict) -> str:
    """summary.md: a table per dataset and a conclusion phrased from the measured numbers."""
    first: dict[str, Any] = next(iter(results["settings"].values()), {})
    lines = [
        "# class-balance: none vs inverse vs median weighting vs class-balanced sampling",
        "",
        f"{runner.measured_on(results)} Model {first.get('model')} {first.get('model_options')}, "
        f"{first.get('optimizer')} lr {first.get('lr')}, batch {first.get('batch_size')}, "
        f"{results['steps']} iterations, "
        f"{results['seeds']} seed(s); scores on the validation split after the last step, mean ± std over seeds; "
        "changes in percentage points (pp) against no balancing, paired by seed.",
        "",
    ]
    for name, block in results["datasets"].items():
        arms = block["arms"]
        lines += [f"## {name}", ""]
        rows = []
        for arm, a in arms.items():
            change = a["change_vs_none_pp"]
            rows.append(
                [arm]
                + [runner.fmt_mean_std(a["scores"][k]) for k in SCORES]
                + [
                    runner.fmt_mean_std(change.get(k, {}), 1) if arm != "none" else "-"
                    for k in ("mean_accuracy", "pixel_accuracy")
                ]
                + [f"{a['cells_per_iteration']['mean']:.0f}"]
            )
        lines += [
            runner.markdown_table(
                ["arm"] + [LABELS[k] for k in SCORES] + ["Δ mean acc. (pp)", "Δ pixel acc. (pp)", "loss cells/iter"],
                rows,
            ),
            "",
        ]
        lines += [_conclusion(arms), ""]
        from fcnkit.experiments.chance import chance_note

        note = chance_note({arm: a["scores"]["mean_iu"]["mean"] for arm, a in arms.items()}, "mean_iu", name, "mean IU")
        lines += [note, ""] if note else []
    return "\n".join(lines) + "\n"


def _conclusion(arms: dict) -> str:
    if "none" not in arms:
        return "(No unbalanced arm: no comparison.)"
    parts, traded = [], {}
    for arm, a in arms.items():
        if arm == "none":
            continue
        dm, dp = a["change_vs_none_pp"]["mean_accuracy"]["mean"], a["change_vs_none_pp"]["pixel_accuracy"]["mean"]
        di = a["change_vs_none_pp"]["mean_iu"]["mean"]
        if dm is None or dp is None:
            continue
        parts.append(f"{arm}: mean accuracy {dm:+.1f} pp, pixel accuracy {dp:+.1f} pp, mean IU {di:+.1f} pp")
        if dm > 0 and dp < 0:
            traded[arm] = f"{arm} ({-dp / dm:.2f} pp of pixel accuracy per pp of mean accuracy)"
    text = "Against no balancing: " + "; ".join(parts) + "."
    if traded:
        text += " Traded pixel accuracy for mean accuracy: " + ", ".join(traded.values()) + "."
    others = [arm for arm in arms if arm != "none" and arm not in traded]
    if others:
        text += " No such trade (mean accuracy not up, or pixel accuracy not down): " + ", ".join(others) + "."
    names = list(arms)
    same = [
        f"{a} and {b}"
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if all(x["final"].get(k) == y["final"].get(k) for x, y in zip(arms[a]["runs"], arms[b]["runs"]) for k in SCORES)
    ]
    if same:
        text += (
            " Identical scores in every seed: " + ", ".join(same) + " (class weights that are proportional give the "
            "same training: the loss is divided by the total weight; with 2 classes median-frequency weights "
            "are proportional to inverse-frequency ones)."
        )
    if "sampling" in arms and arms["none"]["cells_per_iteration"]["mean"]:
        kept = arms["sampling"]["cells_per_iteration"]["mean"] / arms["none"]["cells_per_iteration"]["mean"]
        text += f" Class-balanced sampling kept {kept:.1%} of the labelled pixels in the loss."
    best = max(arms, key=lambda k: arms[k]["scores"]["mean_iu"]["mean"] or -1.0)
    return text + f" Highest mean IU: {best} ({runner.fmt_mean_std(arms[best]['scores']['mean_iu'])})."


def _plot(results: dict, path: Path) -> None:
    def draw(ax, name: str, block: dict) -> None:
        arms = block["arms"]
        series = {arm: mean_std_lists(a["scores"][k] for k in SCORES) for arm, a in arms.items()}
        bars(ax, [LABELS[k] for k in SCORES], series, "validation score")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{name}: mean ± std of {results['seeds']} seed(s)")
        ax.legend(fontsize=8, loc="lower right")

    panel_row(results["datasets"], path, draw, size=(5.5, 3.8))
