"""Device resolution, defined once: every job, experiment and the predictor use it."""

from __future__ import annotations

import torch
from torch import nn

from fcnkit.errors import InputError

__all__ = ["resolve_device", "model_device", "DEVICE_CHOICES"]

#: what ``--device`` accepts everywhere (a CUDA index such as ``cuda:1`` is accepted too)
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None -> CUDA when a GPU is visible, else CPU.

    Unknown names and ``cuda`` without a GPU are an :class:`~fcnkit.errors.InputError` naming the fix.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"--device {device!r} is not a device; use auto, cpu or cuda (or cuda:N)") from None
    if resolved.type not in ("cpu", "cuda"):
        raise InputError(f"--device {device!r}: fcnkit runs on cpu or cuda; use auto, cpu or cuda")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA GPU is visible; use --device auto or --device cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise InputError(
            f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) are visible "
            f"(cuda:0..cuda:{torch.cuda.device_count() - 1}); pick one of them or --device cpu"
        )
    return resolved


def model_device(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """``device`` resolved, or (``None``) the device the model's parameters are on (CPU if none)."""
    if device is not None:
        return resolve_device(device)
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
