"""Batches of one input size each, for classification of any input size (no padding).

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
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, Dataset

from fcnkit.errors import InputError

__all__ = ["SizeGroupedBatchSampler", "SizedItems", "parse_sizes", "item_sizes"]


def parse_sizes(sizes: Sequence | None) -> list[tuple[int, int]] | None:
    """``[24, [28, 32]]`` -> ``[(24, 24), (28, 32)]``; ``None``/empty -> ``None``."""
    if not sizes:
        return None
    out = []
    for s in sizes:
        pair = (
            (s, s)
            if isinstance(s, int) and not isinstance(s, bool)
            else tuple(s)
            if isinstance(s, (list, tuple))
            else ()
        )
        if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
            raise InputError(
                f"sizes: {s!r} is not a size; give pixels (e.g. 28) or [height, width] pairs, e.g. sizes: [24, 28, "
                "[28, 36]]"
            )
        out.append((int(pair[0]), int(pair[1])))
    return out


class SizeGroupedBatchSampler(BatchSampler):
    """Batches of ``batch_size`` indices of ONE input size each (module docstring).

    ``sampler`` gives the order (under DDP a ``DistributedSampler``: the training loader of
    :mod:`fcnkit.engine.resumable` passes this process's share). ``item_sizes[i]`` is the
    native ``(h, w)`` of dataset item ``i`` (``None``: all the same); batches then hold items of
    one native size, filled in sampler order, and the partial batch of each size comes last.
    ``sizes`` (a list of ``(h, w)``) instead resizes each batch of consecutive indices to one size
    drawn uniformly for it, from a generator seeded by torch's global RNG (which the training
    loader seeds per epoch: reproducible, epochs differ); the batch yields
    ``(index, (h, w))`` keys for :class:`SizedItems`.

    Under DDP with ``sizes`` (or one native size) every process gets the same number of batches.
    With MIXED native sizes and no ``sizes`` the count depends on each process's share and may
    differ by a few batches between processes, which DDP does not allow: resize with ``sizes``.
    """

    def __init__(
        self,
        sampler,
        batch_size: int,
        drop_last: bool = False,
        item_sizes: Sequence[tuple[int, int]] | None = None,
        sizes: Sequence[tuple[int, int]] | None = None,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, bool(drop_last)
        self.item_sizes = None if item_sizes is None else [tuple(int(v) for v in s) for s in item_sizes]
        self.sizes = None if not sizes else [tuple(int(v) for v in s) for s in sizes]

    def _groups(self, indices: list[int]) -> list[list[int]]:
        if self.sizes is not None or self.item_sizes is None:
            groups = [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        else:
            open_batches: dict[tuple[int, ...], list[int]] = {}
            groups = []
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
            n = len(self.sampler)  # type: ignore[arg-type]  # samplers here are sized
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
            sample["image"] = F.interpolate(
                image[None], size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink
            )[0]
        return sample


def item_sizes(dataset) -> list[tuple[int, int]]:
    """The native ``(h, w)`` of every item, read from ``raw(i)`` (no normalisation)."""
    return [(int(dataset.raw(i)[0].shape[0]), int(dataset.raw(i)[0].shape[1])) for i in range(len(dataset))]
