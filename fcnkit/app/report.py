"""The run report: curves.png, confusion.png, predictions.png and report.md (all written atomically).

Everything is read back from the run folder (metrics.csv, best/ or last/), so a report can be
rebuilt for any run with ``write_report(RUN)``. matplotlib is imported, with the Agg backend,
inside the functions only.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from fcnkit.app.report_figures import plot_confusion, plot_predictions, pyplot, save_figure
from fcnkit.engine.runlog import read_epochs
from fcnkit.utils.atomic import atomic_write_text

__all__ = ["write_report", "plot_curves", "plot_confusion", "plot_predictions", "pyplot", "save_figure"]

_SCORES = (
    ("pixel_accuracy", "pixel accuracy"),
    ("mean_accuracy", "mean accuracy"),
    ("mean_iu", "mean IU"),
    ("fw_iu", "frequency-weighted IU"),
    ("mean_dice", "mean Dice"),
)


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


def write_report(run: str | os.PathLike, dataset=None, overlays: int = 6, test: bool = True) -> Path:
    """Write curves.png, confusion.png, predictions.png and report.md into ``run``; returns report.md.

    Scores are the best checkpoint's validation scores (``best/config.json``, else ``last/``); a run
    that never validated says so. ``dataset`` (default: the run's validation split) feeds the
    ``overlays`` worst images by mean IU. With ``test``, the checkpoint is also scored on the
    dataset's test split when it has one.
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
        images.append(("Confusion matrix (rows: ground truth; counts and normalised by row)", "confusion.png"))
    train = config.get("train", {})
    if dataset is None:
        from fcnkit.app.datapath import training_data
        from fcnkit.data import load_dataset
        from fcnkit.errors import InputError

        options = {**(train.get("data_options") or {}), **(train.get("val_data_options") or {})}
        data = training_data(train, ckpt)
        if data is None:
            raise InputError(f"{ckpt}: the checkpoint does not record its training data; pass dataset=")
        dataset = load_dataset(data, split=train.get("val_split", "val"), **options)
    worst: list = []
    if overlays and len(dataset) and hasattr(dataset, "raw"):
        _, worst = plot_predictions(model, dataset, config["palette"], names, run / "predictions.png", count=overlays)
        errors = "; errors: false positives red, false negatives blue" if len(names) == 2 else ""
        title = f"The {len(worst)} worst validation images by mean IU (image | ground truth | prediction{errors})"
        images.append((title, "predictions.png"))
    test_scores = _test_scores(ckpt, train) if test else None
    text = _markdown(run, ckpt, config, metrics, names, images, worst, test_scores)
    atomic_write_text(run / "report.md", text)
    return run / "report.md"


def _test_scores(ckpt: Path, train: dict) -> dict | None:
    """The checkpoint's scores on the test split, or None when the dataset has no (labelled) test split."""
    from fcnkit.app.evaluate import evaluate
    from fcnkit.errors import InputError

    try:
        return evaluate(ckpt, split="test", device="cpu")
    except InputError:
        return None


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _markdown(run: Path, ckpt: Path, config: dict, metrics: dict, names, images, worst=(), test=None) -> str:
    train = config.get("train", {})
    validated = isinstance(metrics.get("mean_iu"), float)
    lines = [
        f"# fcnkit run report: {run.name}",
        "",
        f"- model: `{config['model']['name']}` {config['model'].get('kwargs', {})}",
        f"- data: `{train.get('data')}` {train.get('data_options') or ''}",
        f"- checkpoint: `{ckpt.name}/` (epoch {metrics.get('epoch', 'n/a')}, step {metrics.get('step', 'n/a')})",
        f"- optimizer: {train.get('optimizer')} lr={train.get('lr')} ({train.get('lr_schedule', 'none')} schedule, "
        f"warmup {train.get('warmup_steps', 0)}) batch={train.get('batch_size')} epochs={train.get('epochs')} "
        f"max_steps={train.get('max_steps')} loss={train.get('loss', 'ce')}",
        "",
    ]
    if not validated:
        lines += [
            "## No validation",
            "",
            f"This run never validated: it stopped at step {metrics.get('step', 'n/a')}, before the first "
            "validation (which runs at the end of each epoch). There are no validation scores; train "
            "longer, or pass --val-every-n-steps N to validate within an epoch.",
            "",
        ]
    else:
        lines += _score_tables("Validation scores", metrics, names)
    if test is not None:
        lines += _score_tables(f"Test scores ({test.get('images')} images)", test, names)
    lines += ["## Classes", "", "| class | colour |", "|---|---|"]
    lines += [f"| {name} | `#{r:02x}{g:02x}{b:02x}` |" for name, (r, g, b) in zip(names, config.get("palette", []))]
    lines.append("")
    if worst:
        lines += ["## Worst validation images", "", "| image | mean IU |", "|---|---|"]
        lines += [f"| {name} | {_fmt(iu if iu >= 0 else None)} |" for name, iu in worst]
        lines.append("")
    for title, file in images:
        lines += ["", f"## {title}", "", f"![{title}]({file})"]
    return "\n".join(lines) + "\n"


def _score_tables(title: str, metrics: dict, names) -> list[str]:
    lines = [f"## {title}", "", "| score | value |", "|---|---|"]
    lines += [f"| {label} | {_fmt(metrics.get(key))} |" for key, label in _SCORES]
    lines += ["", "| class | IoU | Dice |", "|---|---|---|"]
    iu = metrics.get("iu") or [None] * len(names)
    dice = metrics.get("dice") or [None] * len(names)
    lines += [f"| {name} | {_fmt(a)} | {_fmt(b)} |" for name, a, b in zip(names, iu, dice)]
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in iu):
        lines.append("")
        lines.append("n/a: class absent from both ground truth and prediction (left out of the means).")
    lines.append("")
    return lines
