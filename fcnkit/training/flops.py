"""Forward FLOPs of a model at an input size, counted once and cached (core: torch only).

Regimes are compared at matched compute, so every training step logs the forward FLOPs of its
batch. Counting runs the model ONCE per ``(model, C, H, W)`` on the ``meta`` device (shapes only:
no arithmetic, no memory, no side effect on the real weights; in eval mode, so no BatchNorm
statistics move) under
``torch.utils.flop_counter.FlopCounterMode``, which counts a multiply-add as 2 FLOPs for
convolutions and matrix products and ignores cheap elementwise ops (ReLU, pooling, adds)::

    flops(batch [B, C, H, W]) = B * forward_flops(model, (C, H, W))      (cached per model and size)
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

__all__ = ["forward_flops", "batch_flops"]

# model -> {(C, H, W): flops}; weak keys so a discarded model frees its cache
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def forward_flops(model: nn.Module, chw: tuple[int, int, int]) -> int:
    """FLOPs of one forward pass of ``model`` on ONE input of shape ``chw = (C, H, W)``.

    Counted on the meta device through ``torch.func.functional_call`` with meta copies of the
    parameters and buffers, so it costs a trace, not a forward pass, and never touches the
    model's own tensors. The result is cached per model and shape (a changed architecture needs
    a new model object, as fcnkit's builders make).
    """
    from torch.func import functional_call
    from torch.utils.flop_counter import FlopCounterMode

    key = tuple(int(v) for v in chw)
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        meta = {
            name: torch.empty_like(t, device="meta") for name, t in [*model.named_parameters(), *model.named_buffers()]
        }
        counter = FlopCounterMode(display=False)
        # eval mode while counting (same arithmetic): a forward with train-only side effects
        # (batch statistics, counters) must not see this extra pass; each module's flag is restored
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with counter, torch.no_grad():
                functional_call(model, meta, (torch.empty((1, *key), device="meta"),))
        finally:
            for m, mode in modes:
                m.training = mode
        per_model[key] = int(counter.get_total_flops())
    return per_model[key]


def batch_flops(model: nn.Module, images: torch.Tensor) -> int:
    """Forward FLOPs of ``model`` on the batch ``images [B, C, H, W]``: ``B * forward_flops``."""
    c, h, w = (int(v) for v in images.shape[1:])
    return int(images.shape[0]) * forward_flops(model, (c, h, w))
