"""Classification training of any input size: the size-grouping batch sampler, the Lightning glue,
the scores and the run report (``task: classification`` in the train config).

A classification FCN (``allconv_cls``: convolutions, a 1x1 score conv, global average pooling)
takes any input size, so training may mix sizes. A batch still needs ONE size, and padding is not
an option: zeros added to an image enter the global average and change its logits (an image
padded from 28 to 36 pixels is scored over 36x36 cells of which 40% saw only padding). So
batches are GROUPED by size instead::

    sampler order     i0  i1  i2  i3  i4  i5  i6 ...        (shuffled; DDP: this rank's share)
    native sizes      A   B   A   A   B   A   B             (item_sizes: each item's own size)
    batches (B=3)     [i0 i2 i3] (A)   [i1 i4 i6] (B)   ... (each batch one size, order kept)

    with sizes=[24, 28, 36]: every batch of B consecutive indices is resized to one size drawn
    for that batch:   [i0 i1 i2] @ 36   [i3 i4 i5] @ 24   [i6 ...] @ 28

The batch sampler yields keys ``(index, (h, w))`` (or plain indices when nothing is resized) and
:class:`SizedItems` turns a key into the resized sample. Resizing happens after normalisation,
which is the same thing: bilinear weights sum to 1, so they commute with ``(x - mean) / std``.

Scores (validation, ``fcnkit evaluate``): ``accuracy`` (top-1), ``per_class_accuracy`` (recall
of each class) and their mean ``mean_accuracy``, all from one confusion matrix that is summed
over batches and processes (the same ``ConfusionMatrix`` metric as segmentation). The best
checkpoint is the one with the highest validation accuracy.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, Dataset

from fcnkit.errors import InputError
from fcnkit.training.config import TrainConfig
from fcnkit.training.evaluate import classification_scores  # re-exported: evaluate must not import Lightning
from fcnkit.training.module import ConfusionMatrix, SegmentationModule, _Augmented

__all__ = ["SizeGroupedBatchSampler", "SizedItems", "ClassificationModule", "ClassificationDataModule",
           "classification_scores", "parse_sizes", "write_classification_report"]

CLASSIFICATION_SCORES = ("accuracy", "mean_accuracy")


def parse_sizes(sizes: Sequence | None) -> list[tuple[int, int]] | None:
    """``[24, [28, 32]]`` -> ``[(24, 24), (28, 32)]``; ``None``/empty -> ``None``."""
    if not sizes:
        return None
    out = []
    for s in sizes:
        pair = (s, s) if isinstance(s, int) and not isinstance(s, bool) else tuple(s) if isinstance(s, (list, tuple)) else ()
        if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
            raise InputError(f"sizes: {s!r} is not a size; give pixels (e.g. 28) or [height, width] pairs, e.g. sizes: [24, 28, [28, 36]]")
        out.append((int(pair[0]), int(pair[1])))
    return out


class SizeGroupedBatchSampler(BatchSampler):
    """Batches of ``batch_size`` indices of ONE input size each (module docstring).

    ``sampler`` gives the order (Lightning swaps in a ``DistributedSampler`` under DDP: the
    batch sampler is re-created with it, keeping the other arguments). ``item_sizes[i]`` is the
    native ``(h, w)`` of dataset item ``i`` (``None``: all the same); batches then hold items of
    one native size, filled in sampler order, and the partial batch of each size comes last.
    ``sizes`` (a list of ``(h, w)``) instead resizes each batch of consecutive indices to one size
    drawn uniformly for it, from a generator seeded by torch's global RNG (so
    ``seed_everything`` makes it reproducible and epochs differ); the batch yields
    ``(index, (h, w))`` keys for :class:`SizedItems`.

    Under DDP with ``sizes`` (or one native size) every process gets the same number of batches.
    With MIXED native sizes and no ``sizes`` the count depends on each process's share and may
    differ by a few batches between processes, which DDP does not allow: resize with ``sizes``.
    """

    def __init__(self, sampler, batch_size: int, drop_last: bool = False,
                 item_sizes: Sequence[tuple[int, int]] | None = None, sizes: Sequence[tuple[int, int]] | None = None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, bool(drop_last)
        self.item_sizes = None if item_sizes is None else [tuple(int(v) for v in s) for s in item_sizes]
        self.sizes = None if not sizes else [tuple(int(v) for v in s) for s in sizes]

    def _groups(self, indices: list[int]) -> list[list[int]]:
        if self.sizes is not None or self.item_sizes is None:
            groups = [indices[i:i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        else:
            groups, open_batches = [], {}
            for i in indices:
                batch = open_batches.setdefault(self.item_sizes[i], [])
                batch.append(i)
                if len(batch) == self.batch_size:
                    groups.append(open_batches.pop(self.item_sizes[i]))
            groups += list(open_batches.values())  # the partial batch of each size
        return [g for g in groups if len(g) == self.batch_size or not self.drop_last]

    def __iter__(self) -> Iterator[list]:
        groups = self._groups([int(i) for i in self.sampler])
        if self.sizes is None:
            yield from groups
            return
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
        choice = torch.randint(0, len(self.sizes), (len(groups),), generator=generator).tolist()
        for batch, c in zip(groups, choice):
            yield [(i, self.sizes[c]) for i in batch]

    def __len__(self) -> int:
        if self.sizes is not None or self.item_sizes is None:
            n = len(self.sampler)
            return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        # the count depends on which indices come (a DDP share), not on their order
        return len(self._groups([int(i) for i in self.sampler]))


class SizedItems(Dataset):
    """``dataset[i]``, or for a key ``(i, (h, w))`` the sample with its image resized to ``h x w``
    (bilinear, antialiased when shrinking; the label is unchanged)."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.info = getattr(dataset, "info", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> dict:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, size = key
        sample = dict(self.dataset[index])
        image = sample["image"]
        if tuple(image.shape[-2:]) != tuple(size):
            shrink = size[0] < image.shape[-2] or size[1] < image.shape[-1]
            sample["image"] = F.interpolate(image[None], size=tuple(size), mode="bilinear", align_corners=False,
                                            antialias=shrink)[0]
        return sample


def item_sizes(dataset) -> list[tuple[int, int]]:
    """The native ``(h, w)`` of every item, read from ``raw(i)`` (no normalisation)."""
    return [tuple(int(v) for v in dataset.raw(i)[0].shape[:2]) for i in range(len(dataset))]


class ClassificationModule(L.LightningModule):
    """Trains a classification model (``forward -> logits[B, K]``) with cross-entropy.

    Logged: ``train_loss`` (step and epoch), ``val_loss``, ``val_accuracy``, ``val_mean_accuracy``.
    ``last_scores`` holds the validation scores and the confusion matrix, and ``monitor`` names
    the score the checkpoint callback keeps the best of.
    """

    monitor = "accuracy"
    # the optimizers, learning-rate schedules and divergence check are the segmentation ones
    configure_optimizers = SegmentationModule.configure_optimizers
    _stop_if_not_finite = SegmentationModule._stop_if_not_finite

    def __init__(self, model: torch.nn.Module, config: TrainConfig, num_classes: int, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.model, self.config, self.num_classes = model, config, num_classes
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.val_cm = ConfusionMatrix(num_classes)
        self.last_scores: dict | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2:
            raise InputError(f"model '{self.config.model}' returns logits of shape {tuple(logits.shape)}, not [B, K]; "
                             "use a classification model (fcnkit models), e.g. allconv_cls")
        return F.cross_entropy(logits, labels, weight=self.class_weights)

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        loss = self._loss(self(batch["image"]), batch["label"])
        self._stop_if_not_finite(loss)
        self.log("train_loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["image"]))
        # "cells": the loss terms, one per image (the per-step log, fcnkit.training.steplog)
        return {"loss": loss, "cells": len(batch["label"])}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["image"])
        self.log("val_loss", self._loss(logits, batch["label"]), on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=len(batch["image"]))
        self.val_cm.update(logits.detach(), batch["label"])

    def on_validation_epoch_end(self) -> None:
        cm = self.val_cm.compute()  # summed over processes
        self.val_cm.reset()
        result = classification_scores(cm)
        result["confusion_matrix"] = cm.cpu().tolist()
        self.last_scores = result
        for name in CLASSIFICATION_SCORES:
            value = result[name]
            self.log(f"val_{name}", 0.0 if math.isnan(value) else value, prog_bar=name == "accuracy", sync_dist=True)


class ClassificationDataModule(L.LightningDataModule):
    """Train/val loaders whose batches each hold one input size (:class:`SizeGroupedBatchSampler`).

    ``config.sizes`` resizes training batches to sizes drawn from that list; validation runs at
    the images' own sizes. ``augment: [flip]`` flips training images; ``scale`` is refused
    (a random size per image cannot be batched without padding): use ``sizes``.
    """

    def __init__(self, config: TrainConfig):
        super().__init__()
        from fcnkit.data import load_dataset

        self.config = config
        self.sizes = parse_sizes(config.sizes)
        if "scale" in (config.augment or []):
            raise InputError("augment: scale is not available for classification (a random size per image would need "
                             "padding, which changes the global average); use sizes: [24, 28, 36] to train at several sizes")
        self.train_set = load_dataset(config.data, split="train", **config.data_options)
        self.val_set = load_dataset(config.data, split=config.val_split, **{**config.data_options, **config.val_data_options})
        self.info = self.train_set.info
        for split, ds in (("training", self.train_set), (f"'{config.val_split}'", self.val_set)):
            if len(ds) == 0:
                raise InputError(f"data '{config.data}': the {split} split is empty; add images or check data_options/val_split")
        self._train_sizes = None if self.sizes else item_sizes(self.train_set)
        distributed = config.devices > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1
        if distributed and self._train_sizes and len(set(self._train_sizes)) > 1:
            raise InputError(f"data '{config.data}': training images of {len(set(self._train_sizes))} sizes cannot be split "
                             "evenly over DDP processes; resize them with sizes: [...] (e.g. sizes: [28]) or train on one device")
        self._val_sizes = item_sizes(self.val_set)

    def _loader(self, dataset, sampler, sizes, native):
        from torch.utils.data import DataLoader

        from fcnkit.data import pad_collate  # stacks a one-size batch as it is (no padding happens)

        batches = SizeGroupedBatchSampler(sampler, self.config.batch_size, drop_last=False, item_sizes=native, sizes=sizes)
        workers = self.config.num_workers
        return DataLoader(SizedItems(dataset), batch_sampler=batches, collate_fn=pad_collate, num_workers=workers,
                          persistent_workers=workers > 0)

    def train_dataloader(self):
        from torch.utils.data import RandomSampler

        dataset = _Augmented(self.train_set, self.config.augment) if self.config.augment else self.train_set
        return self._loader(dataset, RandomSampler(dataset), self.sizes, self._train_sizes)

    def val_dataloader(self):
        from torch.utils.data import SequentialSampler

        return self._loader(self.val_set, SequentialSampler(self.val_set), None, self._val_sizes)


def write_classification_report(run: str | os.PathLike) -> Path:
    """curves.png (loss, val accuracy), confusion.png and report.md of a classification run."""
    from fcnkit.checkpoint import read_config, resolve_checkpoint
    from fcnkit.training.report import _pyplot, _save, plot_confusion, read_epochs
    from fcnkit.utils.atomic import atomic_write_text

    run = Path(run)
    ckpt = resolve_checkpoint(run)
    config = read_config(ckpt)
    metrics, train = config.get("metrics") or {}, config.get("train") or {}
    names = config.get("classes") or [str(i) for i in range(config["num_classes"])]
    images = []
    if (run / "metrics.csv").is_file():
        plt = _pyplot()
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
        _save(fig, run / "curves.png", plt)
        images.append(("Training curves", "curves.png"))
    if metrics.get("confusion_matrix"):
        plot_confusion(metrics["confusion_matrix"], names, run / "confusion.png")
        images.append(("Confusion matrix (rows: ground truth, normalised by row)", "confusion.png"))
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"  # noqa: E731
    lines = [f"# fcnkit run report: {run.name}", "",
             f"- task: classification; model: `{config['model']['name']}` {config['model'].get('kwargs', {})}",
             f"- data: `{train.get('data')}` {train.get('data_options') or ''}; training sizes: {train.get('sizes') or 'native'}",
             f"- checkpoint: `{ckpt.name}/` (epoch {metrics.get('epoch', 'n/a')}, step {metrics.get('step', 'n/a')})",
             "", "## Validation scores", "", "| score | value |", "|---|---|",
             f"| accuracy (top-1) | {fmt(metrics.get('accuracy'))} |", f"| mean per-class accuracy | {fmt(metrics.get('mean_accuracy'))} |",
             "", "## Per-class accuracy", "", "| class | accuracy |", "|---|---|"]
    per_class = metrics.get("per_class_accuracy") or [None] * len(names)
    lines += [f"| {n} | {fmt(v)} |" for n, v in zip(names, per_class)]
    for title, file in images:
        lines += ["", f"## {title}", "", f"![{title}]({file})"]
    atomic_write_text(run / "report.md", "\n".join(lines) + "\n")
    return run / "report.md"
