"""``pad_collate``: batch samples of different sizes by padding bottom/right.

::

    sample 0 (h0 x w0)      sample 1 (h1 x w1)          batch (B, C, max h, max w)
    +--------+              +-------------+             +-------------+
    | image  |              |             |             | image | 0   |   images padded with 0
    +--------+              +-------------+             |-------+     |   masks padded with 255
                                                        | 0  (255)    |   (ignored by loss/metrics)
                                                        +-------------+

Each returned ``meta`` is a shallow copy of the sample's meta with ``size = [h, w]`` (the size
before padding), so a prediction can be cropped back. Classification batches (``"label"``) of
one size are plainly stacked; of mixed sizes their images are padded with 0 the same way, and
``meta[i]["size"]`` tells where the real image ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from fcnkit.constants import IGNORE_INDEX

__all__ = ["pad_collate"]


def _pad(t: torch.Tensor, h: int, w: int, value) -> torch.Tensor:
    H, W = t.shape[-2:]
    if (H, W) == (h, w):
        return t
    return F.pad(t, (0, w - W, 0, h - H), value=value)


def pad_collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into ``{"image": [B, C, H, W], "mask": [B, H, W] | "label": [B], "meta": [...]}``."""
    if not batch:
        raise ValueError("pad_collate got an empty batch")
    h = max(int(s["image"].shape[-2]) for s in batch)
    w = max(int(s["image"].shape[-1]) for s in batch)
    metas = []
    for s in batch:
        meta = dict(s.get("meta") or {})
        meta["size"] = [int(s["image"].shape[-2]), int(s["image"].shape[-1])]
        metas.append(meta)
    out: dict[str, Any] = {"image": torch.stack([_pad(s["image"], h, w, 0.0) for s in batch])}
    if "mask" in batch[0]:
        out["mask"] = torch.stack([_pad(s["mask"].long(), h, w, IGNORE_INDEX) for s in batch])
    if "label" in batch[0]:
        out["label"] = torch.stack([torch.as_tensor(s["label"], dtype=torch.int64) for s in batch])
    out["meta"] = metas
    return out
