"""``evaluate(run_or_checkpoint, ...) -> scores``: the FCN scores of a checkpoint on a dataset split.

Whole-image inference, batching consecutive images of the same size (never padding, so every
image is scored exactly as it would be predicted alone), one confusion matrix over the split.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from fcnkit.errors import InputError
from fcnkit.metrics import classification_scores, confusion_matrix, scores
from fcnkit.utils.device import resolve_device

__all__ = ["evaluate", "check_scores_file", "write_scores"]


def _is_scores_file(path) -> bool:
    import json

    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "checkpoint" in data and "confusion_matrix" in data


def check_scores_file(path: str | os.PathLike):
    """Refuse ``--json PATH`` before any work: a folder, a file fcnkit did not write, an unwritable place."""
    from fcnkit.utils.outputs import check_output_file

    return check_output_file(path, "--json", _is_scores_file)


def write_scores(result: dict[str, Any], path: str | os.PathLike):
    """The scores as strict JSON (NaN -> null), written atomically to ``path`` (checked first)."""
    from fcnkit.utils.jsonsafe import write_json

    return write_json(result, check_scores_file(path))


def evaluate(
    run_or_checkpoint: str | os.PathLike,
    data: str | None = None,
    split: str = "val",
    device: str | torch.device | None = "auto",
    batch_size: int = 8,
    data_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score a checkpoint (or a run folder: its best/, else last/) on ``split`` of ``data``.

    ``data`` defaults to the dataset the checkpoint was trained on (its train config), and
    ``data_options`` to the ones used then when ``data`` is not given (``data_options`` updated
    with ``val_data_options`` for any split but train). Returns
    ``{"pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu", "iu", "confusion_matrix", "classes",
    "checkpoint", "data", "split", "images"}``; for a classification checkpoint ``{"accuracy",
    "mean_accuracy", "per_class_accuracy", ...}`` instead of the four segmentation scores.
    """
    from fcnkit.checkpoint import load_checkpoint, resolve_checkpoint
    from fcnkit.data import load_dataset

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    ckpt = resolve_checkpoint(run_or_checkpoint)
    dev = resolve_device(device)
    model, config = load_checkpoint(ckpt, map_location=dev)
    train = config.get("train") or {}
    if data is None:
        from fcnkit.app.datapath import training_data

        data = training_data(train, ckpt)
        if data is None:
            raise InputError(f"{ckpt}: the checkpoint does not record its training data; pass --data NAME|PATH")
        if data_options is not None:
            options = dict(data_options)
        else:  # as in training: evaluation splits take the validation overrides (e.g. their count)
            options = dict(train.get("data_options") or {})
            if split != "train":
                options.update(train.get("val_data_options") or {})
    else:
        options = dict(data_options or {})
    dataset = load_dataset(data, split=split, **options)
    k = int(config["num_classes"])
    task = config.get("task", "segmentation")
    if dataset.info.task != task:
        raise InputError(
            f"data '{data}' is a {dataset.info.task} dataset but {ckpt} is a {task} checkpoint; evaluate on {task} data"
        )
    if dataset.info.num_classes != k:
        raise InputError(
            f"data '{data}' has {dataset.info.num_classes} classes but the checkpoint predicts {k}; "
            "evaluate on matching data"
        )
    if len(dataset) == 0:
        raise InputError(f"data '{data}': split '{split}' is empty; pick another --split")
    cm = torch.zeros(k, k, dtype=torch.int64)
    for images, masks in _same_size_batches(dataset, batch_size):
        with torch.no_grad():
            logits = model(images.to(dev))
        cm += confusion_matrix(logits.argmax(1).cpu(), masks, k)
    if task == "classification":
        result = classification_scores(cm)
    else:
        result = scores(cm)
    result.update(
        confusion_matrix=cm.tolist(),
        classes=list(config.get("classes") or []),
        checkpoint=str(ckpt),
        data=str(data),
        split=split,
        images=len(dataset),
    )
    return result


def _same_size_batches(dataset, batch_size: int):
    images: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    for i in range(len(dataset)):
        item = dataset[i]
        if images and (item["image"].shape != images[0].shape or len(images) == batch_size):
            yield torch.stack(images), torch.stack(masks)
            images, masks = [], []
        images.append(item["image"])
        masks.append(item["label"] if "label" in item else item["mask"])  # classification: one label per image
    if images:
        yield torch.stack(images), torch.stack(masks)
