"""The report's figures that must stay readable for 2 to 50 classes (issue 11).

confusion.png     two panels, counts and row-normalised (each ground-truth row sums to 1); the
                  figure grows with the number of classes (cells >= 0.3 inch) and the cell text
                  shrinks with it, down to none above 25 classes
predictions.png   the k WORST validation images by their own mean IU: image | ground truth |
                  prediction (| errors: false positives red, false negatives blue, for 2 classes),
                  with a colour legend of the classes
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from fcnkit.utils.atomic import atomic_path

__all__ = [
    "pyplot",
    "save_figure",
    "plot_confusion",
    "plot_predictions",
    "per_image_iu",
    "worst_images",
    "confusion_size",
]

ERROR_COLOURS = {"false positive": (230, 25, 25), "false negative": (30, 90, 255)}


def pyplot():
    """matplotlib.pyplot with the Agg backend (no display), chosen on first use, not at import."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display needed; chosen here, not at import
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, plt) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def confusion_size(k: int) -> tuple[float, float]:
    """Figure size in inches of the two-panel confusion matrix of ``k`` classes."""
    side = min(13.0, max(3.6, 1.6 + 0.3 * k))
    return 2 * side + 1.0, side + 0.6


def plot_confusion(cm, class_names, path: str | os.PathLike) -> Path:
    """Counts and row-normalised confusion matrices side by side (rows: ground truth)."""
    plt = pyplot()
    cm = np.asarray(cm, dtype=np.float64)
    k = len(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    fig, axes = plt.subplots(1, 2, figsize=confusion_size(k), layout="constrained")
    label_size = 10 if k <= 10 else 8 if k <= 25 else 6
    text_size = 11 if k <= 4 else 9 if k <= 10 else 7 if k <= 25 else 0
    names = [str(n) if len(str(n)) <= 14 else str(n)[:13] + "…" for n in class_names]
    for ax, values, title, vmax in (
        (axes[0], cm, "pixel counts", max(1.0, cm.max())),
        (axes[1], norm, "normalised by row (recall)", 1.0),
    ):
        im = ax.imshow(values, vmin=0, vmax=vmax, cmap="Blues")
        ax.set_xticks(range(k), names, rotation=90, fontsize=label_size)
        ax.set_yticks(range(k), names, fontsize=label_size)
        ax.set_xlabel("prediction", fontsize=11)
        ax.set_ylabel("ground truth", fontsize=11)
        ax.set_title(title, fontsize=11)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        if text_size:
            for i in range(k):
                for j in range(k):
                    v = values[i, j]
                    text = f"{v:.2f}" if values is norm else _count(v)
                    if v > 0:
                        ax.text(
                            j,
                            i,
                            text,
                            ha="center",
                            va="center",
                            fontsize=text_size,
                            color="white" if v > 0.5 * vmax else "black",
                        )
    return save_figure(fig, path, plt)


def _count(v: float) -> str:
    return f"{v:.0f}" if v < 1e4 else f"{v / 1e3:.0f}k" if v < 1e6 else f"{v / 1e6:.1f}M"


def per_image_iu(pred: np.ndarray, mask: np.ndarray, num_classes: int, ignore: int = 255) -> float:
    """Mean IU of one image (classes absent from both its ground truth and prediction left out)."""
    keep = mask != ignore
    p, t = pred[keep].astype(np.int64), mask[keep].astype(np.int64)
    cm = np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else math.nan


def worst_images(model, dataset, num_classes: int, k: int = 6, device="cpu", limit: int = 500):
    """``[(mean IU, index, prediction)]`` of the ``k`` images with the lowest mean IU among the first
    ``limit`` of ``dataset`` (worst first)."""
    import torch

    model = model.to(device).eval()
    scored = []
    for i in range(min(limit, len(dataset))):
        item = dataset[i]
        with torch.no_grad():
            pred = model(item["image"][None].to(device))[0].argmax(0).cpu().numpy()
        iu = per_image_iu(pred, item["mask"].numpy(), num_classes)
        scored.append((-1.0 if math.isnan(iu) else iu, i, pred))
    scored.sort(key=lambda s: (s[0], s[1]))
    return scored[:k]


def error_map(image: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image (grey) with false positives red and false negatives blue (class 1 = positive)."""
    from fcnkit.data.io import display_uint8

    base = display_uint8(image)
    grey = base if base.ndim == 2 else base[..., :3].mean(-1)
    out = np.repeat(np.asarray(grey, dtype=np.uint8)[..., None], 3, axis=-1)
    known = mask != 255
    for colour, where in zip(ERROR_COLOURS.values(), ((pred == 1) & (mask == 0), (pred == 0) & (mask == 1))):
        out[where & known] = colour
    return out


def _rgb(colour) -> tuple[float, float, float]:
    r, g, b = (float(v) / 255 for v in colour)
    return r, g, b


def plot_predictions(
    model, dataset, palette, class_names, path: str | os.PathLike, count: int = 6, device="cpu"
) -> tuple[Path, list[tuple[str, float]]]:
    """The ``count`` worst images by mean IU (see the module docstring); returns the path and
    ``[(image name, mean IU)]`` in the order shown."""
    from matplotlib.patches import Patch

    from fcnkit.data.io import overlay

    plt = pyplot()
    k = len(class_names)
    worst = worst_images(model, dataset, k, count, device)
    binary = k == 2
    cols = 4 if binary else 3
    fig, axes = plt.subplots(
        len(worst), cols, figsize=(2.6 * cols, 2.6 * len(worst) + 0.9), squeeze=False, layout="constrained"
    )
    shown = []
    for row, (iu, i, pred) in enumerate(worst):
        image, mask = dataset.raw(i)
        mask = np.asarray(mask)
        name = str(dataset[i].get("meta", {}).get("name", i))
        shown.append((name, iu))
        panels = [
            (f"{name} (IU {iu:.2f})" if iu >= 0 else name, overlay(image, np.zeros_like(mask), palette)),
            ("ground truth", overlay(image, mask, palette)),
            ("prediction", overlay(image, pred, palette)),
        ]
        if binary:
            panels.append(("errors", error_map(image, pred, mask)))
        for ax, (title, picture) in zip(axes[row], panels):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    handles = [
        Patch(facecolor=_rgb(palette[c]), edgecolor="grey", label=str(class_names[c])) for c in range(min(k, 50))
    ]
    if binary:
        handles += [Patch(facecolor=_rgb(rgb), label=name) for name, rgb in ERROR_COLOURS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    return save_figure(fig, path, plt), shown
