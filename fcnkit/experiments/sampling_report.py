"""summary.md and sampling.png of the ``sampling`` experiment, phrased from the measured numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fcnkit.experiments import runner
from fcnkit.experiments.plots import new_figure, save, seed_band, smooth

__all__ = ["summary", "plot", "verdict"]

TOLERANCE = 0.10  # "same per iteration": within 10% of whole's final loss, or within twice the seed std


def _f(stat: dict, digits: int = 3) -> str:
    return runner.fmt_mean_std(stat, digits)


def verdict(block: dict, tolerance: float) -> dict:
    """The paper's two claims, checked on one dataset's numbers.

    ``same_per_iteration[arm]``: final training loss within ``tolerance`` (relative) of whole
    images', or within twice the larger seed std. ``whole_fastest``: whole images reached the
    target mean IU (every seed) in less mean training time than every other arm (an arm that
    did not reach it in every seed counts as slower).
    """
    arms = block["arms"]
    if "whole" not in arms:
        return {"same_per_iteration": {}, "whole_fastest": None, "holds": None}
    w = arms["whole"]
    same = {}
    for name, a in arms.items():
        if name == "whole" or a["final_loss"]["mean"] is None or w["final_loss"]["mean"] is None:
            continue
        gap = abs(a["final_loss"]["mean"] - w["final_loss"]["mean"])
        allowed = max(tolerance * w["final_loss"]["mean"], 2 * max(a["final_loss"]["std"], w["final_loss"]["std"]))
        same[name] = gap <= allowed
    t_whole = w["time_to_target"]
    whole_all = t_whole["reached"] == t_whole["of"] and t_whole["mean"] is not None
    fastest = whole_all and all(
        not (a["time_to_target"]["reached"] == a["time_to_target"]["of"])
        or a["time_to_target"]["mean"] > t_whole["mean"]
        for name, a in arms.items()
        if name != "whole"
    )
    sampled = [v for k, v in same.items() if k.startswith("loss-sampling")]
    holds = (all(sampled) if sampled else None, fastest)
    # where loss sampling differs per iteration: lower or higher final loss than whole images
    lower = [
        arms[k]["final_loss"]["mean"] < w["final_loss"]["mean"]
        for k, v in same.items()
        if k.startswith("loss-sampling") and not v
    ]
    direction = None if not lower else "lower" if all(lower) else "higher" if not any(lower) else "mixed"
    return {"same_per_iteration": same, "whole_fastest": fastest, "holds": holds, "sampled_direction": direction}


def summary(results: dict, tolerance: float | None = None) -> str:

    tolerance = TOLERANCE if tolerance is None else tolerance
    first: dict[str, Any] = next(iter(results["settings"].values()), {})
    lines = [
        "# sampling: whole images vs loss sampling vs patchwise (FCN paper, Figure 5)",
        "",
        f"{runner.measured_on(results)} {results['seeds']} seed(s) per arm; mean ± std over seeds.",
        "",
        f"Every arm: model {first.get('model')} {first.get('model_options')}, "
        f"{first.get('optimizer')} lr {first.get('lr')}, {results['steps']} iterations. "
        f"Whole images and patchwise: {first.get('batch_size')} images per iteration; "
        "loss sampling with probability p: ceil(batch / p) images per iteration (each stride-s score cell's loss "
        "kept with probability p), so the loss cells kept per iteration match whole images in expectation and "
        "an iteration costs about 1/p the work. Patchwise: N x N crops at uniform random centres, "
        f"{results['arms'].get('patchwise', {}).get('patches_per_image', '-')} per image, the loss on all labelled "
        f"cells of each crop, N = {results.get('patch_size', '?')} px (the model's receptive field). "
        "Time = training steps (forward, backward, optimizer), data loading and validation excluded; "
        "'wall' = the whole run.",
        "",
    ]
    overall = []
    for name, block in results["datasets"].items():
        arms = block["arms"]
        lines += [f"## {name}", ""]
        rows = []
        for arm, a in arms.items():
            t = a["time_to_target"]
            rows.append(
                [
                    arm,
                    f"{a['images_per_iteration']['mean']:.1f}",
                    f"{a['cells_per_iteration']['mean']:.0f}",
                    f"{a['forward_gflops_per_iteration']['mean']:.3f}",
                    _f(a["train_seconds"], 1),
                    _f(a["wall_seconds"], 1),
                    _f(a["final_loss"]),
                    _f(a["final_mean_iu"]),
                    _f(a["mean_iu_at_matched_time"]),
                    f"{_f(t, 1)} ({t['reached']}/{t['of']})",
                ]
            )
        target = block["target_mean_iu"]
        lines += [
            runner.markdown_table(
                [
                    "arm",
                    "images/iter",
                    "loss cells/iter",
                    "fwd GFLOP/iter",
                    "train s",
                    "wall s",
                    "final train loss",
                    f"val mean IU @ {results['steps']} iter",
                    f"val mean IU @ {block['matched_seconds']:.1f} s",
                    f"s to mean IU {target:.3f} (seeds)" if target is not None else "s to target",
                ],
                rows,
            ),
            "",
        ]
        v = verdict(block, tolerance)
        lines += _conclusion(name, block, v, results["steps"], tolerance) + [""]
        from fcnkit.experiments.chance import chance_note

        note = chance_note({arm: a["final_mean_iu"]["mean"] for arm, a in arms.items()}, "mean_iu", name, "mean IU")
        lines += [note, ""] if note else []
        overall.append((name, v["holds"], v.get("sampled_direction")))
    lines += ["## Verdict", ""]
    for name, holds, direction in overall:
        if holds is None:
            lines.append(f"- {name}: no whole-image arm, nothing to compare with.")
            continue
        same, fastest = holds
        if same and fastest:
            text = (
                "holds: loss sampling converged like whole images per iteration, "
                "and whole images were faster in wall time"
            )
        elif same is False and not fastest:
            text = (
                "does not hold: loss sampling converged differently per iteration, "
                "and whole images were not the fastest in wall time"
            )
        else:
            why = {
                "lower": " (loss sampling reached a LOWER training loss per iteration: "
                "each iteration sees 1/p times the images)",
                "higher": " (loss sampling ended with a higher training loss per iteration)",
                "mixed": " (one p lower, one higher)",
            }.get(direction or "", "")
            parts = [
                ("same convergence per iteration: " + ("yes" if same else ("no" + why) if same is False else "n/a")),
                "whole images fastest in wall time: " + ("yes" if fastest else "no"),
            ]
            text = "holds in part (" + "; ".join(parts) + ")"
        lines.append(f"- {name}: the paper's conclusion {text}.")
    return "\n".join(lines) + "\n"


def _conclusion(name: str, block: dict, v: dict, steps: int, tolerance: float) -> list[str]:
    arms = block["arms"]
    w = arms.get("whole")
    if w is None:
        return ["(No whole-image arm: no comparison.)"]
    out = []
    losses = ", ".join(
        f"{arm} {a['final_loss']['mean']:.3f}"
        + ("" if arm == "whole" else f" ({_rel(a['final_loss']['mean'], w['final_loss']['mean'])})")
        for arm, a in arms.items()
        if a["final_loss"]["mean"] is not None
    )
    matched = [arm for arm, ok in v["same_per_iteration"].items() if ok]
    differ = [arm for arm, ok in v["same_per_iteration"].items() if not ok]
    out.append(
        f"Per iteration: after {steps} iterations the training loss (mean of the last 10% of steps) was {losses}. "
        f"Within {tolerance:.0%} of whole images (or twice the seed std): {', '.join(matched) or 'none'}"
        f"{'; not: ' + ', '.join(differ) if differ else ''}. Validation mean IU at {steps} iterations: "
        + ", ".join(f"{arm} {_f(a['final_mean_iu'])}" for arm, a in arms.items())
        + "."
    )
    target = block["target_mean_iu"]
    t_whole = w["time_to_target"]["mean"]
    if target is not None and t_whole is not None:
        parts = []
        for arm, a in arms.items():
            if arm == "whole":
                continue
            t = a["time_to_target"]
            if t["mean"] is None:
                parts.append(f"{arm} did not reach it")
            else:
                reach = "" if t["reached"] == t["of"] else f" ({t['reached']} of {t['of']} seeds)"
                parts.append(f"{arm} needed {t['mean']:.1f} s ({t['mean'] / t_whole:.2f}x){reach}")
        out.append(
            f"Wall time: whole images reached validation mean IU {target:.3f} in {t_whole:.1f} s of training; "
            + "; ".join(parts)
            + "."
        )
    elif target is not None:
        out.append(f"Wall time: whole images did not reach validation mean IU {target:.3f} in every seed.")
    per_iter = ", ".join(
        f"{arm} {a['train_seconds']['mean'] / a['iterations']:.3f} s"
        for arm, a in arms.items()
        if a["train_seconds"]["mean"] is not None
    )
    at_matched = [a["mean_iu_at_matched_time"] for a in arms.values()]
    missing = any(v is None or (isinstance(v, dict) and v.get("mean") is None) for v in at_matched)
    out.append(
        f"Training time per iteration: {per_iter}. At {block['matched_seconds']:.1f} s of training (all the "
        f"fastest arm used) validation mean IU was "
        + ", ".join(f"{arm} {_f(a['mean_iu_at_matched_time'])}" for arm, a in arms.items())
        + (" (n/a: no validation yet by then)." if missing else ".")
    )
    return [" ".join(out)]


def _rel(value: float, ref: float) -> str:
    return f"{(value - ref) / ref:+.0%}" if ref else "n/a"


def plot(results: dict, path: Path) -> None:

    blocks = results["datasets"]
    fig, axes = new_figure(len(blocks), 4, size=(4.2, 3.3))
    window = max(1, results["steps"] // 10)
    for row, (name, block) in zip(axes, blocks.items()):
        for arm, a in block["arms"].items():
            seed_band(row[0], curves(a, "iteration", "loss", window=window), arm)
            seed_band(row[1], curves(a, "seconds", "loss", window=window), arm)
            seed_band(row[2], curves(a, "iteration", "mean_iu", rows="val"), arm, marker="o")
            seed_band(row[3], curves(a, "seconds", "mean_iu", rows="val"), arm, marker="o")
        titles = [
            ("iterations", "training loss"),
            ("training seconds", "training loss"),
            ("iterations", "validation mean IU"),
            ("training seconds", "validation mean IU"),
        ]
        for ax, (xlabel, ylabel) in zip(row, titles):
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            ax.set_title(f"{name}: {ylabel} vs {xlabel.split()[-1]}", fontsize=9)
        row[0].set_yscale("log")
        row[1].set_yscale("log")
        row[0].legend(fontsize=7)
    fig.suptitle(
        f"whole images vs loss sampling vs patchwise; loss: running mean of {window} steps; bands: ± std over seeds",
        fontsize=9,
    )
    save(fig, path)


def curves(arm: dict, x: str, y: str, rows: str = "train", window: int = 1) -> list[tuple[list, list]]:
    """One ``(x values, y values)`` per seed of ``arm`` (``y`` smoothed over ``window`` rows)."""
    out = []
    for r in arm["runs"]:
        pts = [p for p in r[rows] if p.get(x) is not None and p.get(y) is not None]
        out.append(([p[x] for p in pts], list(smooth([p[y] for p in pts], window))))
    return out
