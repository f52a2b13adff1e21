"""The report of a classification run: curves.png (loss, val accuracy), confusion.png, report.md."""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["write_classification_report"]


def write_classification_report(run: str | os.PathLike) -> Path:
    """curves.png (loss, val accuracy), confusion.png and report.md of a classification run."""
    from fcnkit.app.report import plot_confusion, pyplot, save_figure
    from fcnkit.checkpoint import read_config, resolve_checkpoint
    from fcnkit.engine.runlog import read_epochs
    from fcnkit.utils.atomic import atomic_write_text

    run = Path(run)
    ckpt = resolve_checkpoint(run)
    config = read_config(ckpt)
    metrics, train = config.get("metrics") or {}, config.get("train") or {}
    names = config.get("classes") or [str(i) for i in range(config["num_classes"])]
    images = []
    if (run / "metrics.csv").is_file():
        plt = pyplot()
        epochs = read_epochs(run / "metrics.csv")
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, keys in ((ax_loss, ("train_loss_epoch", "val_loss")), (ax_acc, ("val_accuracy", "val_mean_accuracy"))):
            for key in keys:
                pts = [(e, epochs[e][key]) for e in sorted(epochs) if key in epochs[e]]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=key.replace("_epoch", "").replace("_", " "))
            ax.set_xlabel("epoch")
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
        ax_acc.set_ylim(0, 1)
        fig.tight_layout()
        save_figure(fig, run / "curves.png", plt)
        images.append(("Training curves", "curves.png"))
    if metrics.get("confusion_matrix"):
        plot_confusion(metrics["confusion_matrix"], names, run / "confusion.png")
        images.append(("Confusion matrix (rows: ground truth, normalised by row)", "confusion.png"))
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"  # noqa: E731
    lines = [
        f"# fcnkit run report: {run.name}",
        "",
        f"- task: classification; model: `{config['model']['name']}` {config['model'].get('kwargs', {})}",
        f"- data: `{train.get('data')}` {train.get('data_options') or ''}; "
        f"training sizes: {train.get('sizes') or 'native'}",
        f"- checkpoint: `{ckpt.name}/` (epoch {metrics.get('epoch', 'n/a')}, step {metrics.get('step', 'n/a')})",
        "",
        "## Validation scores",
        "",
        "| score | value |",
        "|---|---|",
        f"| accuracy (top-1) | {fmt(metrics.get('accuracy'))} |",
        f"| mean per-class accuracy | {fmt(metrics.get('mean_accuracy'))} |",
        "",
        "## Per-class accuracy",
        "",
        "| class | accuracy |",
        "|---|---|",
    ]
    per_class = metrics.get("per_class_accuracy") or [None] * len(names)
    lines += [f"| {n} | {fmt(v)} |" for n, v in zip(names, per_class)]
    for title, file in images:
        lines += ["", f"## {title}", "", f"![{title}]({file})"]
    atomic_write_text(run / "report.md", "\n".join(lines) + "\n")
    return run / "report.md"
