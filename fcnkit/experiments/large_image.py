"""Experiment ``large-image``: whole-image steps vs exact tiled steps vs random patches, at equal wall time.

Data: large images made of real digit canvases. A *mosaic* is a ``grid x grid`` arrangement of
``digit-canvas`` canvases (64 x 84 pixels, 1-3 MNIST digits each, labels 0 = background,
k + 1 = digit k), so a mosaic of grid 6 is 384 x 504 pixels with 6-18 digits; training mosaics
come from the canvases of the train split, validation mosaics from the val split::

    +------+------+------+
    | 3  7 |   1  | 5    |    one mosaic = grid x grid canvases (here 3 x 3)
    +------+------+------+
    |  2   | 9    |  4 8 |
    +------+------+------+

One model (``allconv``, ``norm="none"``: no batch statistics, so tiles are exact), one optimiser
(Adam), the same wall-time budget per arm (the arms take turns, one step each, so the machine's
load changes hit them alike), one mosaic per step (cycled)::

    whole            model(mosaic) -> pixelwise loss -> backward
    tiled            fcnkit.tiled_backward(tile=T): the same gradient, memory of one tile
    patches          ``patches`` random N x N crops (uniform centres), loss on their labelled pixels
    tiled p=0.25     tiled + loss sampling p=0.25 on the stride-8 cells: tiles without a sampled
                     cell are skipped (forward and backward)
    tiled p=0.25 b128 the same with 128 x 128-pixel sampling blocks (``cell=128``), so whole tile
                     cores can be empty and skipping saves compute

Measured: for each arm on the first mosaic, in a fresh process, the max relative difference of its
gradient from the whole-image one (tiled: equal to float32 rounding), the step time (median of
``repeats`` after the first step) and the peak resident memory the first step adds (Linux: peak
RSS reset before it, minus the RSS then); during training, steps done, training loss, tiles skipped, and validation mean
IU (whole-image prediction of the validation mosaics) at the end of the budget.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcnkit.experiments import runner
from fcnkit.metrics import confusion_matrix, scores

__all__ = ["run", "ARMS", "DEFAULTS", "make_mosaics"]

ARMS = ("whole", "tiled", "patches", "tiled p=0.25", "tiled p=0.25 b128")
REFERENCE_MINUTES = 4.0
DEFAULTS = {
    "grid": 6,
    "train_mosaics": 8,
    "val_mosaics": 2,
    "tile": 256,
    "patch": 96,
    "patches": 4,
    "width": 16,
    "lr": 3e-3,
    "repeats": 3,
    "seconds_per_arm": 36.0,
}
NUM_CLASSES = 11


def make_mosaics(split: str, grid: int, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` mosaics of ``grid x grid`` digit canvases: images uint8 and masks int64 ``(N, H, W)``."""
    from fcnkit.data.canvas import DEFAULT_SIZE, make_canvases

    images, masks = make_canvases(split, DEFAULT_SIZE, count * grid * grid, seed)[:2]
    h, w = DEFAULT_SIZE
    shape = (count, grid, grid, h, w)
    images = images.reshape(shape).transpose(0, 1, 3, 2, 4).reshape(count, grid * h, grid * w)
    masks = masks.reshape(shape).transpose(0, 1, 3, 2, 4).reshape(count, grid * h, grid * w)
    return images, masks.astype(np.int64)


def _data(settings, seed=0):
    train_x, train_y = make_mosaics("train", settings["grid"], settings["train_mosaics"], seed)
    val_x, val_y = make_mosaics("val", settings["grid"], settings["val_mosaics"], seed)
    mean, std = float(train_x.mean()) / 255, float(train_x.std()) / 255

    def norm(x):
        return ((torch.from_numpy(x.astype(np.float32)) / 255 - mean) / std)[:, None]

    return norm(train_x), torch.from_numpy(train_y), norm(val_x), torch.from_numpy(val_y)


def _model(settings, seed=0):
    from fcnkit.models.registry import build_model

    torch.manual_seed(seed)
    return build_model("allconv", num_classes=NUM_CLASSES, in_channels=1, width=settings["width"], norm="none")


class _Step:
    """One training step of an arm on image ``x [1, H, W]`` and mask ``y [H, W]``: gradients in ``.grad``."""

    def __init__(self, arm: str, model, settings, seed: int = 0):
        from fcnkit.training.regimes import LossSampling

        self.arm, self.model, self.settings = arm, model, settings
        self.generator = torch.Generator().manual_seed(seed)
        self.sampling = None
        if arm.startswith("tiled p="):
            self.sampling = LossSampling(p=0.25, seed=seed, cell=128 if arm.endswith("b128") else "auto").bind(model)
        self.tiles = self.skipped = 0

    def __call__(self, x, y, step: int) -> float:
        from fcnkit.training.losses import pixelwise_loss
        from fcnkit.training.samplers import crop_patches, uniform_centres
        from fcnkit.training.tiled_backward import tiled_gradients

        self.model.zero_grad(set_to_none=True)
        if self.arm == "whole":
            loss = pixelwise_loss(self.model(x[None]), y[None])
            loss.backward()
            return float(loss.detach())
        if self.arm == "patches":
            n = self.settings["patch"]
            centres = uniform_centres(tuple(y.shape), self.settings["patches"], self.generator)
            px, py = crop_patches(x, y, centres, n)
            loss = pixelwise_loss(self.model(px), py)
            loss.backward()
            return float(loss.detach())
        weights = None
        if self.sampling is not None:
            batch = {"image": x[None], "mask": y[None]}
            weights = self.sampling.weight_map(batch, torch.empty(1, 1, *y.shape), step=step)[0]
        result = tiled_gradients(self.model, x, y, self.settings["tile"], weights=weights, reduction="mean")
        for p, g in zip([p for p in self.model.parameters() if p.requires_grad], result.grads):
            p.grad = g
        self.tiles += result.tiles
        self.skipped += result.skipped
        return result.loss


def _memory_mb(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process in MiB (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(settings) -> dict:
    """One step of each arm on the first mosaic, each in a fresh process (so memory is its own)."""
    import json
    import subprocess
    import sys
    import tempfile

    out, ref = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for arm in ARMS:
            grads_file = Path(tmp, "grads.pt")
            code = "import sys; from fcnkit.experiments.large_image import measure_child; measure_child()"
            done = subprocess.run(
                [sys.executable, "-c", code, arm, json.dumps(settings), str(grads_file)],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": _root()},
            )
            if done.returncode:
                raise RuntimeError(f"measuring arm {arm} failed: {done.stderr.strip()[-2000:]}")
            out[arm] = json.loads(done.stdout.strip().splitlines()[-1])
            grads = torch.load(grads_file, weights_only=True)
            ref = ref or grads
            out[arm]["grad_rel_diff"] = max(
                float((g - r).abs().max() / r.abs().max().clamp_min(1e-30)) for g, r in zip(grads, ref)
            )
    return out


def measure_child() -> None:
    """(In a fresh process) argv: arm, settings JSON, gradient file; prints one JSON line."""
    import json
    import sys

    arm, settings, grads_file = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(settings["threads"])
    x, y, _, _ = _data(settings)
    model = _model(settings)
    step = _Step(arm, model, settings)
    gc.collect()
    before = _memory_mb("VmRSS") if _reset_peak() else None
    t0 = time.perf_counter()
    step(x[0], y[0], 0)  # the first step: its memory peak (then the allocator keeps the pages)
    times = [time.perf_counter() - t0]
    peak = _memory_mb("VmHWM") if before is not None else None
    torch.save([p.grad.clone() for p in model.parameters() if p.requires_grad], grads_file)
    for _ in range(settings["repeats"]):
        t0 = time.perf_counter()
        step(x[0], y[0], 0)
        times.append(time.perf_counter() - t0)
    runs = settings["repeats"] + 1
    print(
        json.dumps(
            {
                "step_seconds": statistics.median(times[1:] or times),
                "step_seconds_all": times,
                "peak_added_mb": None if peak is None or before is None else peak - before,
                "tiles": step.tiles / runs,
                "skipped": step.skipped / runs,
            }
        )
    )


def _root() -> str:
    parent = str(Path(__file__).resolve().parents[2])  # the folder that holds the fcnkit package
    return os.pathsep.join([parent, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def _mean_iu(model, val_x, val_y) -> float:
    cm = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)
    with torch.no_grad():
        model.eval()
        for x, y in zip(val_x, val_y):
            cm += confusion_matrix(model(x[None]).argmax(1)[0], y, NUM_CLASSES)
        model.train()
    return float(scores(cm)["mean_iu"])


class _Arm:
    """One arm's training state: model, step, optimizer, curve and the step time it has spent."""

    def __init__(self, arm, settings, seed):
        self.model = _model(settings, seed)
        self.step = _Step(arm, self.model, settings, seed)
        self.optimizer = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=settings["lr"])
        self.curve, self.spent, self.k = [], 0.0, 0

    def advance(self, train_x, train_y) -> None:
        t0 = time.perf_counter()
        loss = self.step(train_x[self.k % len(train_x)], train_y[self.k % len(train_y)], self.k)
        self.optimizer.step()
        self.spent += time.perf_counter() - t0
        self.k += 1
        self.curve.append({"step": self.k, "seconds": self.spent, "loss": loss})


def train_arms(settings, data, seed: int = 0) -> dict:
    """Every arm until each has spent ``seconds_per_arm`` in its steps, round-robin: one step of
    each arm in turn, so a change of the machine's load slows all arms alike."""
    train_x, train_y, val_x, val_y = data
    arms = {arm: _Arm(arm, settings, seed) for arm in ARMS}
    while any(a.spent < settings["seconds_per_arm"] for a in arms.values()):
        for a in arms.values():
            if a.spent < settings["seconds_per_arm"]:
                a.advance(train_x, train_y)
    out = {}
    for arm, a in arms.items():
        tail = [c["loss"] for c in a.curve[-max(1, len(a.curve) // 10) :]]
        out[arm] = {
            "steps": a.k,
            "seconds": a.spent,
            "final_loss": sum(tail) / len(tail),
            "val_mean_iu": _mean_iu(a.model, val_x, val_y),
            "tiles_skipped": a.step.skipped / max(1, a.step.tiles + a.step.skipped),
            "curve": a.curve,
        }
    return out


def run(
    out_dir,
    *,
    seeds: int = 1,
    budget_minutes: float | None = REFERENCE_MINUTES,
    device: str = "auto",
    datasets: list[str] | None = None,
    progress=None,
    threads: int | None = None,
    **overrides,
) -> dict:
    """Run the experiment into ``out_dir`` (results.json, large_image.png, summary.md); CPU only."""
    from fcnkit.errors import InputError

    if datasets:
        raise InputError("large-image builds its own mosaics of digit canvases; drop --datasets")
    if device == "cuda":
        raise InputError("large-image runs on the CPU for now; use --device cpu")
    settings = {**DEFAULTS, **overrides, "threads": threads or 1}
    scale = (budget_minutes or REFERENCE_MINUTES) / REFERENCE_MINUTES
    settings["seconds_per_arm"] = DEFAULTS["seconds_per_arm"] * scale
    old = torch.get_num_threads()
    torch.set_num_threads(settings["threads"])
    try:
        results: dict[str, Any] = {
            "experiment": "large-image",
            "settings": {"mosaics": settings},
            "machine": runner.machine_info("cpu"),
        }
        results["measure"] = measure(settings)
        results["measure_load_average"] = [round(v, 2) for v in os.getloadavg()]
        if progress:
            progress("measured one step of each arm")
        data = _data(settings)
        results["image_size"] = list(data[0].shape[-2:])
        results["train"] = {}
        for seed in range(seeds):
            for arm, r in train_arms(settings, data, seed).items():
                results["train"].setdefault(arm, []).append(r)
                if progress:
                    progress(f"{arm} seed {seed}: {r['steps']} steps, val mean IU {r['val_mean_iu']:.3f}")
        results["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    finally:
        torch.set_num_threads(old)
    runner.write_outputs(out_dir, results, summary(results), {"large_image": lambda p: _plot(results, p)})
    return results


def summary(results) -> str:
    s, m = results["settings"]["mosaics"], results["measure"]
    h, w = results["image_size"]
    rows = []
    for arm in ARMS:
        tr = results["train"][arm]
        a = m[arm]
        skipped = f"{a['skipped'] / max(1, a['tiles'] + a['skipped']):.0%}" if arm.startswith("tiled") else "-"
        rows.append(
            [
                arm,
                f"{a['grad_rel_diff']:.1e}",
                f"{a['step_seconds']:.2f}",
                f"{a['peak_added_mb']:.0f}",
                skipped,
                round(statistics.mean(r["steps"] for r in tr), 1),
                f"{statistics.mean(r['final_loss'] for r in tr):.3f}",
                f"{statistics.mean(r['val_mean_iu'] for r in tr):.3f}",
            ]
        )
    table = runner.markdown_table(
        ["arm", "grad diff vs whole", "step s", "step peak +MB", "tiles skipped", "steps", "final loss", "val mean IU"],
        rows,
    )
    return (
        f"# large-image\n\n{runner.measured_on(results)}\n\n"
        f"Mosaics of {s['grid']} x {s['grid']} digit canvases ({h} x {w} pixels), {s['train_mosaics']} for "
        "training, "
        f"{s['val_mosaics']} for validation; allconv width {s['width']} (norm none), Adam lr {s['lr']}, one mosaic "
        f"per step, {s['seconds_per_arm']:.0f} s of training steps per arm (round-robin); tiles of {s['tile']} px; "
        f"patches: {s['patches']} crops of {s['patch']} px.\n\n{table}\n\n"
        "grad diff: max relative difference of one step's gradient from the whole-image one (float32). "
        "step peak +MB: peak resident memory of the first step above the resident memory before it "
        "(fresh process). "
        "tiles skipped: tiles without a sampled cell in their core, not run (forward or backward).\n"
    )


def _plot(results, path) -> None:
    from fcnkit.experiments.plots import new_figure, save

    fig, axes = new_figure(1, 1, (6.0, 4.0))
    ax = axes[0, 0]
    for arm in ARMS:
        c = results["train"][arm][0]["curve"]
        ax.plot([p["seconds"] for p in c], [p["loss"] for p in c], label=arm)
    ax.set_xlabel("training seconds")
    ax.set_ylabel("training loss")
    ax.legend()
    save(fig, path)
