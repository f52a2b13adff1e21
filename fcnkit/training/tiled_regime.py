"""The ``tiled`` regime: whole-image training with the loss evaluated tile by tile (core: torch only).

``--regime tiled:tile=512`` (or ``tile=auto,memory=2G``) trains exactly as ``whole`` does (the
same loss, the same gradient; :mod:`fcnkit.training.tiled_backward`) with the memory of one
tile, so images larger than memory train whole. It wraps a sampling regime, ``sample=``
``whole`` (default) | ``loss-sampling`` | ``class-balanced``, whose options follow inline::

    --regime tiled:tile=512,sample=loss-sampling,p=0.25,seed=0

The wrapped regime decides what enters a batch and the weight map, as without tiles; tiles whose
core holds no cell of weight > 0 are skipped (forward and backward), so loss sampling saves compute.

How the training step uses it: the LightningModule calls :meth:`Tiled.training_loss` instead of
``model(batch) -> pixelwise_loss``. It runs the tiles (gradients summed in buffers, not ``.grad``)
and returns a surrogate ``loss + (S - S.detach())`` with ``S = sum_p <p, g_p>``: its value is the
loss and its gradient is exactly ``g`` (``d<p, g>/dp = g``, one multiplication by 1), so
Lightning's own backward, zero_grad order, gradient accumulation and clipping, AMP loss scaling
and DDP's all-reduce see an ordinary loss.

BatchNorm must not use batch statistics (tiles differ from the image): build the model with
``norm: none``, or set ``freeze_bn=true`` to run BatchNorm layers in eval mode (running
statistics, e.g. from a pretrained backbone) during the tiled step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fcnkit.errors import InputError

__all__ = ["Tiled", "SAMPLES", "OWN_OPTIONS"]

SAMPLES = ("whole", "loss-sampling", "class-balanced")
OWN_OPTIONS = ("tile", "memory", "sample", "freeze_bn")  # the rest of ``tiled:...`` goes to the sampled regime


@dataclass(frozen=True)
class Tiled:
    """Whole-image training, tile by tile; ``inner`` is the sampling regime (its batch and weight map).

    Built by :func:`fcnkit.training.regimes.build_regime` (``"tiled:tile=512,sample=..."``); it has
    the :class:`~fcnkit.training.regimes.Regime` interface plus :meth:`training_loss`.
    """

    inner: Any  # a bound or unbound Regime among SAMPLES
    name: str = "tiled"
    tile: int | str = "auto"
    memory: str = "auto"  # budget for tile=auto: "512M", "2G"; auto = 512 MiB on CPU, half the free GPU memory
    freeze_bn: bool = False
    _tile: int | None = field(default=None, repr=False)
    _geometry: object = field(default=None, repr=False)

    def __post_init__(self):
        if self.tile != "auto" and (isinstance(self.tile, bool) or not isinstance(self.tile, int) or self.tile < 1):
            raise InputError(
                f"regime 'tiled': tile must be a whole number of pixels or auto, got {self.tile!r}; e.g. tile=512"
            )
        object.__setattr__(self, "memory", str(self.memory))
        if self.memory != "auto":
            from fcnkit.inference.predict import parse_memory

            parse_memory(self.memory)
        if isinstance(self.freeze_bn, str):
            flag = {"true": True, "false": False}.get(self.freeze_bn.lower(), self.freeze_bn)
            object.__setattr__(self, "freeze_bn", flag)
        if not isinstance(self.freeze_bn, bool):
            raise InputError(f"regime 'tiled': freeze_bn must be true or false, got {self.freeze_bn!r}")
        if getattr(self.inner, "name", None) not in SAMPLES:
            raise InputError(
                f"regime 'tiled': sample={getattr(self.inner, 'name', self.inner)} cannot be tiled; "
                f"use one of {', '.join(SAMPLES)}"
            )

    @property
    def sample(self) -> str:
        return self.inner.name

    def options(self) -> dict:
        inner = {k: v for k, v in self.inner.options().items() if k != "name"}
        return {
            "name": self.name,
            "tile": self.tile,
            "memory": self.memory,
            "freeze_bn": self.freeze_bn,
            "sample": self.inner.name,
            **inner,
        }

    def bind(self, model, train_set=None, *, num_classes=None, in_channels=None) -> Tiled:
        from fcnkit.training.tiled_backward import tileable_geometry, training_tile

        inner = self.inner.bind(model, train_set, num_classes=num_classes, in_channels=in_channels)
        channels = int(in_channels or 3)
        was = model.training
        model.train()  # checked as it will train: fails now on train-mode BatchNorm, GroupNorm, ...
        try:
            with _frozen_bn(model, self.freeze_bn):
                geometry = tileable_geometry(model, channels)
        finally:
            model.train(was)
        tile = self.tile
        if tile == "auto":
            from fcnkit.inference.predict import memory_budget_bytes

            p = next(model.parameters(), None)
            device = p.device if p is not None else torch.device("cpu")
            budget = memory_budget_bytes(device, None if self.memory == "auto" else self.memory)
            tile = training_tile(model, geometry, channels, budget)
        return dataclasses.replace(self, inner=inner, _tile=int(tile), _geometry=geometry)

    def train_dataset(self, dataset):
        return self.inner.train_dataset(dataset)

    def train_sampler(self, dataset):
        return self.inner.train_sampler(dataset)

    def batch_size(self, base: int) -> int:
        return self.inner.batch_size(base)

    def collate_fn(self):
        return self.inner.collate_fn()

    def weight_map(self, batch, logits, step=0, rank=0):
        return self.inner.weight_map(batch, logits, step, rank)

    def training_loss(
        self, model: nn.Module, batch: dict, *, step: int = 0, rank: int = 0, class_weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(loss, weight_map)`` of one training batch; ``loss.backward()`` gives the whole-image gradient."""
        from fcnkit.training.tiled_backward import tiled_gradients

        if self._tile is None:
            raise RuntimeError("tiled regime used before bind()")
        image, mask = batch["image"], batch["mask"]
        # the weight map only needs the logits' shape and device: a stride-0 view stands in for them
        stand_in = torch.empty((1, 1, 1, 1), device=mask.device).expand(mask.shape[0], 1, *mask.shape[-2:])
        weight_map = self.weight_map(batch, stand_in, step, rank)
        with _frozen_bn(model, self.freeze_bn):
            result = tiled_gradients(
                model,
                image,
                mask,
                self._tile,
                weights=weight_map,
                class_weights=class_weights,
                reduction="mean",
                geometry=self._geometry,
            )
        params = [p for p in model.parameters() if p.requires_grad]
        terms = [(p * g).sum() for p, g in zip(params, result.grads) if g is not None]
        if not terms:  # every tile skipped: a zero gradient that still reaches every parameter
            terms = [p.sum() * 0 for p in params]
        inner = sum(terms) if terms else torch.zeros((), device=mask.device)
        loss = torch.tensor(result.loss, dtype=torch.float32, device=mask.device) + (inner - inner.detach())
        object.__setattr__(self, "last_pass", result)  # tiles run and skipped, for the experiment (not a setting)
        return loss, weight_map


class _frozen_bn:
    """Within the block, BatchNorm layers run in eval mode (running statistics) when ``on``."""

    def __init__(self, model: nn.Module, on: bool):
        bn = nn.modules.batchnorm._BatchNorm
        self.layers = [m for m in model.modules() if isinstance(m, bn) and m.training] if on else []

    def __enter__(self):
        for m in self.layers:
            m.eval()

    def __exit__(self, *exc):
        for m in self.layers:
            m.train()
