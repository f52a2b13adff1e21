"""How much gradient reaches the first stage of a network, relative to the last (no Lightning).

FishNet (Sun et al., 2018) argues that a 1x1 convolution on a residual skip where the resolution
drops hinders the propagation of gradients to shallow layers. The quantity measured here, after
``loss.backward()`` and before the optimizer step::

    norm(stage) = || dL / d(parameters of the stage) ||_2      (all its parameters, one vector)
    ratio       = norm(first stage) / norm(last stage)

Stages are modules named by path (default: the first and last entries of the model's
``feature_info``, e.g. ``features.stage0`` and ``features.stage3``). A stage's parameters include
those of any skip projection it holds. Parameters without a gradient (frozen, or unused in the
step) count as zero.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fcnkit.errors import InputError, did_you_mean

__all__ = ["grad_norm", "stage_grad_norms"]


def grad_norm(module: nn.Module) -> float:
    """L2 norm of the gradients of all ``module``'s parameters taken as one vector (0.0 if none)."""
    grads = [p.grad.detach() for p in module.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    norms = torch.stack([torch.linalg.vector_norm(g.double()) for g in grads])
    return float(torch.linalg.vector_norm(norms))


def stage_grad_norms(model: nn.Module, first: str | None = None, last: str | None = None) -> dict[str, float]:
    """``{"first", "last", "ratio"}``: the gradient norms of two stages and ``first / last``
    (module docstring). ``first``/``last`` are module paths; by default the model's
    ``feature_info[0].module`` and ``feature_info[-1].module``. ``ratio`` is NaN when the
    last stage has no gradient."""
    if first is None or last is None:
        info = getattr(model, "feature_info", None)
        if info is None or not len(info):
            raise InputError(f"{type(model).__name__} has no feature_info; name the stages: first='...', last='...'")
        first = info[0].module if first is None else first
        last = info[-1].module if last is None else last
    norms = {}
    for key, path in (("first", first), ("last", last)):
        try:
            norms[key] = grad_norm(model.get_submodule(path))
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n]
            raise InputError(
                f"{key}={path!r} is not a module of {type(model).__name__}{did_you_mean(path, names)}"
            ) from None
    norms["ratio"] = norms["first"] / norms["last"] if norms["last"] > 0 else math.nan
    return norms
