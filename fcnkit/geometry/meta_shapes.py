"""Output shapes of a few ops on meta tensors, computed directly during a geometry trace.

Their meta kernels are Python decompositions wrapped in ``torch._disable_dynamo``, whose first
call imports ``torch._dynamo`` (~1.5 s): ``fcnkit rf`` on an allconv model would pay it.
"""

from __future__ import annotations

import torch

__all__ = ["meta_shortcut"]

_ARGS = {"pad": ("input", "pad"), "interpolate": ("input", "size", "scale_factor")}  # leading positional params


def _bind(name: str, args: tuple, kwargs: dict) -> dict:
    out = dict(zip(_ARGS[name], args))
    out.update(kwargs)
    return out


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[-1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


_BINARY = {"add", "__add__", "__radd__", "sub", "__sub__", "mul", "__mul__", "__rmul__"}


def meta_shortcut(func, args: tuple, kwargs: dict):
    """The meta-device result of add/sub/mul, batch_norm, pad and interpolate (None for anything else):
    the same shape and dtype as their meta kernels give, without importing ``torch._dynamo``."""
    name = getattr(func, "__name__", "")
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, torch.Tensor) or not x.is_meta or x.dim() != 4:
        return None
    if name in _BINARY and len(args) >= 2 and not kwargs:
        other = args[1]
        shape = torch.broadcast_shapes(x.shape, other.shape) if isinstance(other, torch.Tensor) else x.shape
        return torch.empty(shape, device="meta", dtype=torch.result_type(x, other))
    if name == "batch_norm":
        return torch.empty_like(x)
    if name == "pad":
        pad = list(_bind(name, args, kwargs)["pad"])
        if len(pad) not in (2, 4):
            return None
        pad += [0, 0]
        shape = list(x.shape)
        shape[-1] += int(pad[0]) + int(pad[1])
        shape[-2] += int(pad[2]) + int(pad[3])
        return torch.empty(shape, device="meta", dtype=x.dtype) if min(shape) >= 0 else None
    if name == "interpolate":
        a = _bind(name, args, kwargs)
        size, sf = a.get("size"), a.get("scale_factor")
        if size is None and sf is not None:
            sf = sf if isinstance(sf, (list, tuple)) else (sf, sf)
            size = [int(n * float(f)) for n, f in zip(x.shape[-2:], sf)]  # floor, as F.interpolate
        if size is None:
            return None
        size = _pair(size)
        return torch.empty(*x.shape[:2], *size, device="meta", dtype=x.dtype)
    return None
