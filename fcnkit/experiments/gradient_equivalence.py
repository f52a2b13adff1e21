"""Experiment ``gradient-equivalence``: the same gradient, whole-image vs patchwise, timed.

For a valid all-convolutional net (no padding; :mod:`fcnkit.training.equivalence`) one training
gradient is computed two ways on images of ``sizes`` x ``sizes`` pixels:

    whole      one forward/backward pass of the image; loss summed over its n = h * w cells
    patchwise  the n receptive-field patches of equivalent_patch_batch, forward/backward in
               chunks of ``chunk`` patches, gradients accumulated

and the two gradients are compared (max relative difference, float32 at every size and float64
once at the smallest). Reported per size: the seconds of each (median of ``repeats`` after one
warm-up; patch extraction, one copy, not timed), the measured speed ratio patchwise / whole,
and the FLOP redundancy factor ``n * flops(r x r) / flops(H x W)`` (forward FLOPs counted by
:mod:`fcnkit.training.flops`): the work the whole image shares between overlapping windows.

Writes ``results.json``, ``timing.png`` and ``summary.md`` into ``out_dir``. On CPU by default;
``devices="auto"`` adds a CUDA GPU when one is visible.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fcnkit.constants import IGNORE_INDEX
from fcnkit.errors import InputError
from fcnkit.utils.device import resolve_device

__all__ = ["run", "DEFAULT_SIZES"]

DEFAULT_SIZES = (64, 128, 256, 512)


def run(
    out_dir,
    *,
    sizes=DEFAULT_SIZES,
    devices="cpu",
    repeats: int = 5,
    budget_minutes: float | None = 20.0,
    width: int = 8,
    stages: int = 3,
    in_channels: int = 3,
    num_classes: int = 11,
    chunk: int = 512,
    seed: int = 0,
    threads: int | None = None,
) -> dict:
    """Run the experiment; write results.json, timing.png, summary.md into ``out_dir``; return the results.

    ``devices``: ``"cpu"``, ``"cuda"``, ``"auto"`` (CPU, plus CUDA when available) or a list.
    ``budget_minutes``: sizes not started within the budget (per device) are skipped and listed.
    ``threads``: torch CPU threads (default 1).
    The model is ``allconv(output="coarse", padding="valid", norm="none", width, stages)``.
    """
    from fcnkit.models.registry import build_model

    devices = _devices(devices)
    sizes = sorted(int(s) for s in sizes)
    if repeats < 1:
        raise InputError(f"repeats must be >= 1, got {repeats}; e.g. --seeds 3")
    spec: dict[str, Any] = dict(
        num_classes=num_classes,
        in_channels=in_channels,
        width=width,
        stages=stages,
        output="coarse",
        padding="valid",
        norm="none",
    )
    torch.manual_seed(seed)
    model = build_model("allconv", **spec)
    if sizes and sizes[0] < model.receptive_field:
        raise InputError(
            f"size {sizes[0]} is below the model's receptive field {model.receptive_field}; "
            f"use sizes >= {model.receptive_field}"
        )
    old_threads = torch.get_num_threads()
    # one CPU thread unless asked (as the training experiments): on a shared 2-core machine two
    # threads made the same timings 5-30x noisier (whole-image 256 px: 0.52 s vs 0.018 s, measured)
    torch.set_num_threads(threads or 1)
    try:
        results: dict[str, Any] = {
            "experiment": "gradient-equivalence",
            "model": {"name": "allconv", "kwargs": spec},
            "receptive_field": model.receptive_field,
            "stride": model.stride,
            "settings": {
                "sizes": sizes,
                "repeats": repeats,
                "chunk": chunk,
                "seed": seed,
                "budget_minutes": budget_minutes,
                "cpu_threads": torch.get_num_threads(),
            },
            "fp64_max_rel_grad_diff": _fp64_check(model, sizes[0] if sizes else 64, seed),
            "devices": {},
        }
        for device in devices:
            results["devices"][device] = _measure_device(model, device, sizes, repeats, chunk, seed, budget_minutes)
    finally:
        torch.set_num_threads(old_threads)
    _write(Path(out_dir), results)
    return results


def _devices(devices) -> list[str]:
    """``auto`` -> cpu, plus cuda when a GPU is visible; else each named device, checked."""
    if devices == "auto":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [resolve_device(d).type for d in ([devices] if isinstance(devices, str) else devices)]


def _problem(size: int, in_channels: int, num_classes: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed + size)
    image = torch.randn(in_channels, size, size, generator=g, dtype=dtype)
    mask = torch.randint(0, num_classes, (size, size), generator=g)
    return image, mask


def _whole_grads(model, image, targets):
    """Gradient of the summed cell loss of one whole-image pass; ``targets [h, w]`` = cell_targets."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(image[None]), targets[None], reduction="sum", ignore_index=IGNORE_INDEX).backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def _timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _measure_device(model, device, sizes, repeats, chunk, seed, budget_minutes) -> dict:
    from fcnkit.training.equivalence import equivalent_patch_batch
    from fcnkit.training.flops import forward_flops

    model = model.to(device)
    params = list(model.parameters())
    c, r = params[0].shape[1], model.receptive_field
    rows, skipped, began = [], [], time.perf_counter()
    for size in sizes:
        if budget_minutes is not None and time.perf_counter() - began > budget_minutes * 60:
            skipped.append(size)
            continue
        image, mask = _problem(size, c, model.score.out_channels, seed)
        # checked and cut on the CPU, outside the timing; the whole image uses the same targets
        patches, labels = equivalent_patch_batch(model, image, mask)
        image, targets, patches, labels = (
            t.to(device) for t in (image, _grid_targets(labels, size, r, model.stride), patches, labels)
        )
        whole: dict[str, list[torch.Tensor]] = {}

        # this size's tensors bound as defaults: each closure is timed within its own iteration
        def run_whole(image=image, targets=targets, whole=whole) -> None:
            whole["grads"] = _whole_grads(model, image, targets)

        def run_patches(patches=patches, labels=labels) -> None:
            model.zero_grad(set_to_none=True)
            for start in range(0, len(patches), chunk):
                out = model(patches[start : start + chunk]).flatten(1)
                F.cross_entropy(
                    out, labels[start : start + chunk], reduction="sum", ignore_index=IGNORE_INDEX
                ).backward()

        times: dict[str, list[float]] = {"whole": [], "patch": []}
        for k in range(repeats + 1):  # the first pass of each warms up (allocator, kernels)
            for name, fn in (("whole", run_whole), ("patch", run_patches)):
                seconds = _timed(fn, device)
                if k:
                    times[name].append(seconds)
        diff = max(
            float((p.grad - g).abs().max() / g.abs().max().clamp_min(1e-30)) for p, g in zip(params, whole["grads"])
        )
        whole_flops = forward_flops(model, (c, size, size))
        patch_flops = len(patches) * forward_flops(model, (c, r, r))
        t_whole, t_patch = statistics.median(times["whole"]), statistics.median(times["patch"])
        rows.append(
            {
                "size": size,
                "cells": len(patches),
                "whole_seconds": t_whole,
                "patch_seconds": t_patch,
                "speed_ratio": t_patch / t_whole,
                "whole_flops": whole_flops,
                "patch_flops": patch_flops,
                "flop_redundancy": patch_flops / whole_flops,
                "max_rel_grad_diff_fp32": diff,
                "whole_runs": times["whole"],
                "patch_runs": times["patch"],
            }
        )
    model.to("cpu")
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return {"device_name": name, "rows": rows, "skipped_sizes": skipped}


def _grid_targets(labels: torch.Tensor, size: int, r: int, stride: int) -> torch.Tensor:
    """The patch labels (row-major, one per cell) as the whole image's ``[h, w]`` target grid."""
    n = (size - r) // stride + 1
    return labels.reshape(n, n)


def _fp64_check(model, size: int, seed: int) -> float:
    """Max relative gradient difference whole vs patchwise in float64 (the tests' 1e-10 claim)."""
    import copy

    from fcnkit.training.equivalence import equivalent_patch_batch

    m = copy.deepcopy(model).double()
    image, mask = _problem(size, list(m.parameters())[0].shape[1], m.score.out_channels, seed, torch.float64)
    patches, labels = equivalent_patch_batch(m, image, mask)
    whole = _whole_grads(m, image, _grid_targets(labels, size, m.receptive_field, m.stride))
    m.zero_grad(set_to_none=True)
    F.cross_entropy(m(patches).flatten(1), labels, reduction="sum", ignore_index=IGNORE_INDEX).backward()
    return max(float((p.grad - g).abs().max() / g.abs().max().clamp_min(1e-300)) for p, g in zip(m.parameters(), whole))


def _write(out: Path, results: dict) -> None:
    from fcnkit.utils.atomic import atomic_path, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    with atomic_path(out / "timing.png", suffix=".png") as tmp:
        _plot(results, tmp)
    atomic_write_text(out / "summary.md", _summary(results))


def _plot(results: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_time, ax_ratio = fig.subplots(1, 2)
    for device, block in results["devices"].items():
        rows = block["rows"]
        if not rows:
            continue
        x = [r["size"] for r in rows]
        ax_time.plot(x, [r["whole_seconds"] for r in rows], "o-", label=f"whole image ({device})")
        ax_time.plot(x, [r["patch_seconds"] for r in rows], "s--", label=f"patchwise ({device})")
        ax_ratio.plot(x, [r["speed_ratio"] for r in rows], "o-", label=f"measured time ratio ({device})")
    first: list[dict] = next((b["rows"] for b in results["devices"].values() if b["rows"]), [])
    if first:
        ax_ratio.plot([r["size"] for r in first], [r["flop_redundancy"] for r in first], "k:", label="FLOP redundancy")
    sizes = sorted({r["size"] for b in results["devices"].values() for r in b["rows"]})
    for ax in (ax_time, ax_ratio):
        ax.set_xscale("log", base=2)
        if sizes:
            ax.set_xticks(sizes, [str(v) for v in sizes])
            ax.minorticks_off()
        ax.set_xlabel("image size (pixels per side)")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # nothing measured (budget 0): no legend
            ax.legend(fontsize=8)
    ax_time.set_yscale("log")
    ax_time.set_ylabel("seconds per gradient")
    ax_time.set_title("same gradient: whole image vs patch batch")
    ax_ratio.set_ylabel("patchwise / whole")
    ax_ratio.set_title(f"receptive field {results['receptive_field']}, stride {results['stride']}")
    fig.savefig(path, dpi=110)


def _summary(results: dict) -> str:
    s = results["settings"]
    lines = [
        "# gradient-equivalence",
        "",
        f"Model: valid allconv ({results['model']['kwargs']['width']} channels wide, "
        f"{results['model']['kwargs']['stages']} downsamplings), receptive field {results['receptive_field']}, "
        f"stride {results['stride']}. One gradient of the summed cell loss, whole image vs one "
        f"{results['receptive_field']}x{results['receptive_field']} patch per output cell (chunks of {s['chunk']}); "
        f"median of {s['repeats']} runs after a warm-up; CPU threads {s['cpu_threads']}.",
        "",
        f"Float64 check at {s['sizes'][0]}x{s['sizes'][0]}: max relative gradient difference "
        f"{results['fp64_max_rel_grad_diff']:.1e} (the gradients are the same).",
    ]
    for device, block in results["devices"].items():
        lines += [
            "",
            f"## {device} ({block['device_name']})",
            "",
            "| size | cells | whole s | patchwise s | time ratio | FLOP redundancy | max rel. grad diff (fp32) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in block["rows"]:
            lines.append(
                f"| {r['size']} | {r['cells']} | {r['whole_seconds']:.4f} | {r['patch_seconds']:.4f} | "
                f"{r['speed_ratio']:.1f}x | {r['flop_redundancy']:.1f}x | {r['max_rel_grad_diff_fp32']:.1e} |"
            )
        if block["skipped_sizes"]:
            lines.append(f"\nSkipped (time budget of {s['budget_minutes']} min): {block['skipped_sizes']}")
    lines += [
        "",
        "The patch batch recomputes the features that overlapping windows share, which the whole-image "
        "pass computes once: the FLOP redundancy is that extra work, the time ratio what it costs here.",
    ]
    for device, block in results["devices"].items():
        if block["rows"]:
            big = block["rows"][-1]
            lines.append(
                f"At {big['size']}x{big['size']} on {device}: {big['cells']} patches, "
                f"{big['flop_redundancy']:.1f}x the FLOPs, {big['speed_ratio']:.1f}x the time "
                f"(time / FLOP ratio {big['speed_ratio'] / big['flop_redundancy']:.2f})."
            )
    return "\n".join(lines) + "\n"
