"""The run report: curves.png, confusion.png, predictions.png and report.md (all written atomically).

Everything is read back from the run folder (metrics.csv, best/ or last/), so a report can be
rebuilt for any run with ``write_report(RUN)``. matplotlib is imported, with the Agg backend,
inside the functions only.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from fcnkit.engine.runlog import read_epochs
from fcnkit.utils.atomic import atomic_path, atomic_write_text

__all__ = ["write_report", "plot_curves", "plot_confusion", "plot_predictions", "pyplot", "save_figure"]

_SCORES = (
    ("pixel_accuracy", "pixel accuracy"),
    ("mean_accuracy", "mean accuracy"),
    ("mean_iu", "mean IU"),
    ("fw_iu", "frequency-weighted IU"),
)


def pyplot():
    """matplotlib.pyplot with the Agg backend (no display), chosen on first use, not at import."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display needed; chosen here, not at import
    import matplotlib.pyplot as plt

    return plt


def plot_curves(metrics_csv: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Train/val loss and val mean IU per epoch."""
    plt = pyplot()
    epochs = read_epochs(metrics_csv)
    xs = sorted(epochs)
    fig, (ax_loss, ax_iu) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, label in (("train_loss_epoch", "train loss"), ("val_loss", "val loss")):
        pts = [(e, epochs[e][key]) for e in xs if key in epochs[e]]
        if pts:
            ax_loss.plot(*zip(*pts), marker="o", label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    pts = [(e, epochs[e]["val_mean_iu"]) for e in xs if "val_mean_iu" in epochs[e]]
    if pts:
        ax_iu.plot(*zip(*pts), marker="o", color="tab:green")
    ax_iu.set_xlabel("epoch")
    ax_iu.set_ylabel("val mean IU")
    ax_iu.set_ylim(0, 1)
    fig.tight_layout()
    return save_figure(fig, path, plt)


def plot_confusion(cm, class_names, path: str | os.PathLike) -> Path:
    """The confusion matrix normalised by row (each ground-truth class sums to 1)."""
    plt = pyplot()
    cm = np.asarray(cm, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    k = len(cm)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * k, 1.0 + 0.45 * k))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=90)
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if norm[i, j] >= 0.01:
                    ax.text(
                        j,
                        i,
                        f"{norm[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path, plt)


def plot_predictions(model, dataset, palette, path: str | os.PathLike, count: int = 6, device="cpu") -> Path:
    """A grid: image | ground truth overlay | prediction overlay, for the first ``count`` items."""
    import torch

    from fcnkit.data.io import overlay

    plt = pyplot()
    count = min(count, len(dataset))
    fig, axes = plt.subplots(count, 3, figsize=(7.5, 2.5 * count), squeeze=False)
    model = model.to(device).eval()
    for row in range(count):
        image, mask = dataset.raw(row)
        with torch.no_grad():
            logits = model(dataset[row]["image"][None].to(device))
        pred = logits[0].argmax(0).cpu().numpy()
        for ax, (title, picture) in zip(
            axes[row],
            (
                ("image", overlay(image, np.zeros_like(mask), palette)),
                ("ground truth", overlay(image, mask, palette)),
                ("prediction", overlay(image, pred, palette)),
            ),
        ):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path, plt)


def write_report(run: str | os.PathLike, dataset=None, overlays: int = 6) -> Path:
    """Write curves.png, confusion.png, predictions.png and report.md into ``run``; returns report.md.

    Scores are the best checkpoint's validation scores (``best/config.json``, else ``last/``);
    ``dataset`` (default: the run's validation split) feeds the prediction overlays.
    """
    from fcnkit.checkpoint import load_checkpoint, resolve_checkpoint

    run = Path(run)
    ckpt = resolve_checkpoint(run)
    model, config = load_checkpoint(ckpt)
    metrics = config.get("metrics") or {}
    names = config.get("classes") or [str(i) for i in range(config["num_classes"])]
    images = []
    if (run / "metrics.csv").is_file():
        plot_curves(run / "metrics.csv", run / "curves.png")
        images.append(("Training curves", "curves.png"))
    if metrics.get("confusion_matrix"):
        plot_confusion(metrics["confusion_matrix"], names, run / "confusion.png")
        images.append(("Confusion matrix (rows: ground truth, normalised by row)", "confusion.png"))
    if dataset is None:
        from fcnkit.data import load_dataset

        train = config.get("train", {})
        options = {**(train.get("data_options") or {}), **(train.get("val_data_options") or {})}
        dataset = load_dataset(train["data"], split=train.get("val_split", "val"), **options)
    if overlays and len(dataset) and hasattr(dataset, "raw"):
        plot_predictions(model, dataset, config["palette"], run / "predictions.png", count=overlays)
        images.append(("Validation predictions (image | ground truth | prediction)", "predictions.png"))
    atomic_write_text(run / "report.md", _markdown(run, ckpt, config, metrics, names, images))
    return run / "report.md"


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _markdown(run: Path, ckpt: Path, config: dict, metrics: dict, names, images) -> str:
    train = config.get("train", {})
    lines = [
        f"# fcnkit run report: {run.name}",
        "",
        f"- model: `{config['model']['name']}` {config['model'].get('kwargs', {})}",
        f"- data: `{train.get('data')}` {train.get('data_options') or ''}",
        f"- checkpoint: `{ckpt.name}/` (epoch {metrics.get('epoch', 'n/a')}, step {metrics.get('step', 'n/a')})",
        f"- optimizer: {train.get('optimizer')} lr={train.get('lr')} batch={train.get('batch_size')} epochs={train.get('epochs')}",
        "",
        "## Validation scores",
        "",
        "| score | value |",
        "|---|---|",
    ]
    lines += [f"| {label} | {_fmt(metrics.get(key))} |" for key, label in _SCORES]
    lines += ["", "## Per-class IoU", "", "| class | IoU |", "|---|---|"]
    iu = metrics.get("iu") or [None] * len(names)
    lines += [f"| {name} | {_fmt(value)} |" for name, value in zip(names, iu)]
    lines.append("")
    lines.append("n/a: class absent from both ground truth and prediction (left out of the means).")
    for title, file in images:
        lines += ["", f"## {title}", "", f"![{title}]({file})"]
    return "\n".join(lines) + "\n"


def save_figure(fig, path, plt) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
