"""Training regimes as small value objects (core: torch/numpy only).

A regime changes only two things: what enters a batch (a dataset wrapper, sampler, batch size and
collate function) and the per-cell weight map handed to
:func:`fcnkit.training.losses.pixelwise_loss`. The LightningModule asks its regime for both, so a
regime is a class here, never a trainer of its own::

    dataset --regime.train_dataset/train_sampler/batch_size/collate_fn--> batch --> model --> logits
    batch, logits --regime.weight_map(step, rank)--> weight map --pixelwise_loss--> loss

Regimes (``regime:`` in the train config, a name or ``{name: ..., option: value}``; on the
command line also ``--regime name:option=value,option=value``):

``whole`` (default)
    Whole-image training (FCN Sec. 4.4): each image is one batch item, every labelled cell counts.
``loss-sampling`` (``p``, ``seed``, ``cell``)
    Each final-layer cell's loss is kept with probability ``p`` (Bernoulli, seeded per step and
    process) and the loss is normalised by the kept cells (pixelwise_loss divides by the total
    weight). Images per batch become ``ceil(batch_size / p)`` so the number of cells in the
    loss per step is unchanged in expectation (FCN Sec. 4.4). For a dense model (logits at the
    input size) the Bernoulli mask is drawn on the coarse score grid of stride ``s`` (``cell:
    auto`` = the model's stride: allconv's ``stride``, FCN's last fused stride) and each draw is
    expanded to the ``s x s`` pixel block of its cell, so a cell is kept or dropped whole::

        coarse draw   1 0        expanded   1 1 1 1 0 0 0 0     (s = 4; blocks start at pixel 0,
                      0 1        weight     1 1 1 1 0 0 0 0      the blocks of allconv's cells)
                                 map        ...
    With ``p = 1`` every weight is 1.0 and the loss is bit-identical to ``whole``.
``class-balanced`` (``by``, ``seed``)
    ``by: sampling`` (default): each cell of class ``c`` is kept with probability
    ``q_c = min_k(n_k) / n_c`` (``n`` = training pixels per class), so every class contributes
    the same number of cells in expectation; drawn per logits cell (a coarse block mixes classes).
    ``by: inverse | median``: the class weights of
    :func:`~fcnkit.training.losses.class_weights_from_masks`, put in the weight map (the same loss
    as the ``class_weights`` setting, which must then stay ``none``).
``patchwise`` (``sampler``, ``patch_size``, ``patches_per_image``, ``stride``)
    Explicit ``N x N`` crops of image and mask (:mod:`fcnkit.training.samplers`: ``uniform``,
    ``class-balanced``, ``grid``), each an independent forward pass; ``batch_size`` images per
    step give ``batch_size * patches_per_image`` crops. ``patch_size: rf`` = the model's
    receptive field (allconv: the coarse cell's ``receptive_field``; else the geometry's size).

``tiled`` (``tile``, ``memory``, ``freeze_bn``, ``sample`` + the sampled regime's options)
    Whole-image training with the loss evaluated tile by tile: the same gradient, the memory of
    one tile (:mod:`fcnkit.training.tiled_regime`, :func:`fcnkit.tiled_backward`); ``sample`` =
    ``whole`` | ``loss-sampling`` | ``class-balanced`` gives the batch and the weight map, and
    tiles without a kept cell are skipped.

A regime is built from the config by :func:`build_regime` and then :meth:`Regime.bind` to the model
and training set (it resolves ``rf``, the cell size and the class frequencies).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fcnkit.constants import IGNORE_INDEX
from fcnkit.errors import InputError, did_you_mean

if TYPE_CHECKING:
    from fcnkit.training.tiled_regime import Tiled

__all__ = [
    "Regime",
    "WholeImage",
    "LossSampling",
    "ClassBalanced",
    "Patchwise",
    "build_regime",
    "count_kept_cells",
    "score_stride",
    "REGIMES",
]


@dataclass(frozen=True)
class Regime:
    """Base regime: the dataset as is, ``batch_size`` images, ``pad_collate``, no weight map.

    Fields whose name starts with ``_`` are resolved by :meth:`bind` and are not settings.
    """

    name: str = "whole"

    def bind(self, model, train_set=None, *, num_classes: int | None = None, in_channels: int | None = None) -> Regime:
        """This regime with its model- and data-dependent settings resolved (default: itself)."""
        return self

    def train_dataset(self, dataset):
        """The dataset the training loader reads (a wrapper of ``dataset``, or ``dataset``)."""
        return dataset

    def train_sampler(self, dataset) -> Any:
        """A ``torch.utils.data.Sampler`` over ``dataset`` for training, or ``None`` for shuffling.

        (Named apart from ``Patchwise.sampler``, the setting that picks the patch sampler.)
        """
        return None

    def batch_size(self, base: int) -> int:
        """Items per training batch for a configured ``batch_size`` of ``base`` images."""
        return base

    def collate_fn(self):
        """The training loader's collate function, or ``None`` for ``fcnkit.data.pad_collate``."""
        return None

    def weight_map(self, batch: dict, logits: torch.Tensor, step: int = 0, rank: int = 0) -> torch.Tensor | None:
        """Per-cell loss weights ``[B, H, W]`` for this batch, or ``None`` for all ones.

        ``step`` (optimizer step) and ``rank`` (process) seed random regimes, so a step's draw is
        reproducible and processes draw differently.
        """
        return None

    def options(self) -> dict:
        """The regime's settings, as saved in the resolved config."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}


@dataclass(frozen=True)
class WholeImage(Regime):
    """Whole-image training (FCN Sec. 4.4): each image is one batch item, all its labelled cells count."""

    name: str = "whole"


@dataclass(frozen=True)
class LossSampling(Regime):
    """Keep each final-layer cell's loss with probability ``p``; ``ceil(batch_size / p)`` images per step."""

    name: str = "loss-sampling"
    p: float = 0.5
    seed: int = 0
    cell: int | str = "auto"
    _cell: int | None = field(default=None, repr=False)

    def __post_init__(self):
        _set(self, "p", _number(self, "p", self.p, 0.0, 1.0, low_open=True))
        _set(self, "seed", _whole(self, "seed", self.seed, 0))
        if self.cell != "auto":
            _set(self, "cell", _whole(self, "cell", self.cell, 1))

    def bind(self, model, train_set=None, *, num_classes=None, in_channels=None) -> LossSampling:
        cell = score_stride(model, in_channels or 3) if self.cell == "auto" else int(self.cell)
        return dataclasses.replace(self, _cell=cell)

    def batch_size(self, base: int) -> int:
        # round first: 8 / 0.1 is 80.00000000000001 in floating point, and must give 80
        return max(1, math.ceil(round(base / self.p, 9)))

    def weight_map(self, batch, logits, step=0, rank=0):
        b, _, h, w = logits.shape
        dense = tuple(logits.shape[-2:]) == tuple(batch["image"].shape[-2:])
        block = (self._cell or 1) if dense else 1  # a coarse output IS the cell grid
        generator = torch.Generator().manual_seed(_stream(self.seed, step, rank))
        keep = torch.rand((b, -(-h // block), -(-w // block)), generator=generator) < self.p
        if block > 1:
            keep = keep.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :h, :w]
        return keep.to(device=logits.device, dtype=torch.float32)


@dataclass(frozen=True)
class ClassBalanced(Regime):
    """Class balancing by sampling (per-class keep probabilities) or by weighting (inverse, median)."""

    name: str = "class-balanced"
    by: str = "sampling"
    seed: int = 0
    _table: tuple | None = field(default=None, repr=False)  # keep probability or weight per class

    BY = ("sampling", "inverse", "median")

    def __post_init__(self):
        if self.by not in self.BY:
            raise InputError(
                f"regime 'class-balanced': by '{self.by}' is not known{did_you_mean(str(self.by), self.BY)}; use one "
                f"of {', '.join(self.BY)}"
            )
        _set(self, "seed", _whole(self, "seed", self.seed, 0))

    def bind(self, model, train_set=None, *, num_classes=None, in_channels=None) -> ClassBalanced:
        from fcnkit.training.losses import class_weights_from_masks

        if train_set is None or num_classes is None:
            raise ValueError("class-balanced regime: bind needs the training set and num_classes")
        masks = (train_set[i]["mask"] for i in range(len(train_set)))
        return self.with_table(
            class_weights_from_masks(masks, num_classes, "inverse" if self.by == "sampling" else self.by)
        )

    def with_table(self, weights: torch.Tensor) -> ClassBalanced:
        """Bound to class weights ``[K]`` (inverse-frequency weights when ``by: sampling``)."""
        weights = torch.as_tensor(weights, dtype=torch.float64)
        table = weights / weights.max() if self.by == "sampling" else weights  # q_c = min count / count_c
        return dataclasses.replace(self, _table=tuple(float(v) for v in table))

    def weight_map(self, batch, logits, step=0, rank=0):
        if self._table is None:
            raise RuntimeError("class-balanced regime used before bind()")
        target = batch["mask"].to(logits.device)
        table = torch.tensor(self._table, dtype=torch.float32, device=logits.device)
        # ignored cells (and labels beyond the table, which the loss rejects anyway) look up class 0
        per_cell = table[torch.where((target == IGNORE_INDEX) | (target >= len(table)), 0, target)]
        if self.by == "sampling":
            generator = torch.Generator().manual_seed(_stream(self.seed, step, rank))
            draw = torch.rand(per_cell.shape, generator=generator).to(logits.device)
            per_cell = (draw < per_cell).to(torch.float32)
        return per_cell


@dataclass(frozen=True)
class Patchwise(Regime):
    """Explicit ``N x N`` crops (sampler ``uniform`` | ``class-balanced`` | ``grid``) as batch items."""

    name: str = "patchwise"
    sampler: str = "uniform"
    patch_size: int | str = "rf"
    patches_per_image: int = 4
    stride: int | None = None  # grid: centre spacing (default: the patch size)
    _patch: int | None = field(default=None, repr=False)

    def __post_init__(self):
        from fcnkit.training.samplers import SAMPLERS

        if self.sampler not in SAMPLERS:
            raise InputError(
                f"regime 'patchwise': sampler '{self.sampler}' is not "
                f"known{did_you_mean(str(self.sampler), SAMPLERS)}; use one of {', '.join(SAMPLERS)}"
            )
        if self.patch_size != "rf":
            _set(self, "patch_size", _whole(self, "patch_size", self.patch_size, 1, hint="an integer or rf"))
        _set(self, "patches_per_image", _whole(self, "patches_per_image", self.patches_per_image, 1))
        if self.stride is not None:
            _set(self, "stride", _whole(self, "stride", self.stride, 1))

    def bind(self, model, train_set=None, *, num_classes=None, in_channels=None) -> Patchwise:
        size: int | str | None = self.patch_size
        if size == "rf":
            size = getattr(model, "receptive_field", None)
            if not isinstance(size, int):
                from fcnkit.geometry import receptive_field

                size = int(max(receptive_field(model, in_channels or 3).size))
        return dataclasses.replace(self, _patch=int(size))  # type: ignore[arg-type]  # an int by now

    def train_dataset(self, dataset):
        from fcnkit.training.samplers import PatchDataset

        if self._patch is None:
            raise RuntimeError("patchwise regime used before bind()")
        return PatchDataset(
            dataset,
            sampler=self.sampler,
            patch_size=self._patch,
            patches_per_image=self.patches_per_image,
            stride=self.stride,
        )

    def collate_fn(self):
        from fcnkit.training.samplers import patch_collate

        return patch_collate


REGIMES = {"whole": WholeImage, "loss-sampling": LossSampling, "class-balanced": ClassBalanced, "patchwise": Patchwise}
# "tiled" (fcnkit.training.tiled_regime.Tiled) wraps one of the first three: built apart in build_regime
NAMES = (*REGIMES, "tiled")


def build_regime(spec: str | dict | None) -> Regime | Tiled:
    """``"whole"``, ``"loss-sampling:p=0.25,seed=1"``, ``{"name": "patchwise", ...}`` or ``None``
    -> a :class:`Regime`."""
    if spec is None:
        spec = {"name": "whole"}
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise InputError(
            f"regime: expected a name or a mapping with 'name', got {spec!r}; use e.g. regime: {{name: whole}}"
        )
    spec = dict(spec)
    name, _, inline = str(spec.pop("name", "whole")).partition(":")
    name = name.strip()
    if name not in NAMES:
        raise InputError(f"regime: unknown name '{name}'{did_you_mean(name, NAMES)}; available: {', '.join(NAMES)}")
    spec = {**_parse_inline(name, inline), **spec}
    if name == "tiled":  # a wrapper: its remaining options belong to the regime it wraps
        from fcnkit.training.tiled_regime import OWN_OPTIONS, Tiled

        own = {k: spec.pop(k) for k in OWN_OPTIONS if k in spec}
        try:
            inner = build_regime({"name": str(own.pop("sample", "whole")), **spec})
        except InputError as exc:
            raise InputError(f"regime 'tiled': {exc}; its own options are {', '.join(OWN_OPTIONS)}") from None
        return Tiled(inner, **own)
    cls = REGIMES[name]
    allowed = [f.name for f in dataclasses.fields(cls) if f.name != "name" and not f.name.startswith("_")]
    for key in spec:
        if key not in allowed:
            takes = f"takes {', '.join(allowed)}" if allowed else "takes no options"
            raise InputError(f"regime '{name}': unknown option '{key}'{did_you_mean(str(key), allowed)}; it {takes}")
    return cls(**spec)


def count_kept_cells(
    target: torch.Tensor,
    weight_map: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Number of loss cells with a non-zero weight (labelled, kept by the weight map and class weights)."""
    kept = target != ignore_index
    if weight_map is not None:
        kept &= weight_map.to(kept.device) > 0
    if class_weights is not None:
        kept &= class_weights.to(kept.device)[torch.where(kept, target, 0)] > 0
    return kept.sum()


def score_stride(model, in_channels: int = 3) -> int:
    """Input pixels per cell of the model's score grid (the loss-sampling cell).

    A model that upsamples its scores says so (``model.score_stride``: allconv's coarse stride, an
    FCN's last fused stride); otherwise it is the traced geometry's output stride (1 for any model
    whose output has the input's resolution).
    """
    stride = getattr(model, "score_stride", None)
    if isinstance(stride, int) and not isinstance(stride, bool):
        return stride
    from fcnkit.geometry import receptive_field

    return max(1, int(max(receptive_field(model, in_channels=in_channels).stride)))


# --- option parsing and checks -----------------------------------------------------------------
def _parse_inline(name: str, text: str) -> dict:
    """``"p=0.25,seed=1"`` -> ``{"p": 0.25, "seed": 1}`` (numbers read as numbers)."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"regime '{name}': option {item!r} is not KEY=VALUE; write e.g. --regime {name}:p=0.25")
        text_value = value.strip()
        parsed: int | float | str = text_value
        for convert in (int, float):
            try:
                parsed = convert(text_value)
                break
            except ValueError:
                pass
        out[key.strip()] = None if parsed in ("none", "null") else parsed
    return out


def _stream(seed: int, step: int, rank: int) -> int:
    """One well-mixed 63-bit seed per (seed, step, process)."""
    return int(np.random.SeedSequence([int(seed), int(step), int(rank)]).generate_state(1, np.uint64)[0] >> 1)


def _set(regime, key, value) -> None:
    object.__setattr__(regime, key, value)  # frozen dataclass: normalise a value in __post_init__


def _whole(regime, key, value, low, hint=None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(
            f"regime '{regime.name}': {key} must be {hint or f'a whole number >= {low}'}, got {value!r}; fix {key}"
        )
    return int(value)


def _number(regime, key, value, low, high, low_open=False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > high or value < low or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise InputError(f"regime '{regime.name}': {key} must be in {interval}, got {value!r}; e.g. {key}: 0.25")
    return float(value)
