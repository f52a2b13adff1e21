"""Output shapes of a few ops on meta tensors, computed directly during a geometry trace.

Their meta kernels are Python decompositions wrapped in ``torch._disable_dynamo``, whose first
call imports ``torch._dynamo`` (~1.5 s): ``fcnkit rf`` on an allconv model would pay it. The first
meta conv2d, max_pool2d or relu imports sympy (0.3-0.8 s), which every ``fcnkit predict`` paid
when its model was built (the geometry trace of the constructor).
"""

from __future__ import annotations

import torch

__all__ = ["meta_shortcut"]

_ARGS = {  # leading positional params
    "pad": ("input", "pad"),
    "interpolate": ("input", "size", "scale_factor"),
    "conv2d": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "max_pool2d": ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
}


def _bind(name: str, args: tuple, kwargs: dict) -> dict:
    out = dict(zip(_ARGS[name], args))
    out.update(kwargs)
    return out


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[-1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


_BINARY = {"add", "__add__", "__radd__", "sub", "__sub__", "mul", "__mul__", "__rmul__"}
_INPLACE = {"add_", "__iadd__", "sub_", "__isub__", "mul_", "__imul__"}


def _broadcast(a, b) -> tuple[int, ...]:
    """``torch.broadcast_shapes(a, b)`` (which imports sympy on first use); raises as it does."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    if any(i != j and 1 not in (i, j) for i, j in zip(a, b)):
        raise RuntimeError(f"shapes {a} and {b} cannot be broadcast")
    return tuple(j if i == 1 else i for i, j in zip(a, b))


def _like(x: torch.Tensor) -> torch.Tensor:
    """``torch.empty_like(x)`` on meta, whose first call imports sympy (``empty_strided`` does not)."""
    return torch.empty_strided(x.shape, x.stride(), device="meta", dtype=x.dtype)


def _window_out(n: int, k: int, s: int, p: int, d: int, ceil: bool = False) -> int:
    """Output length of a conv/pool window (torch's formula, ceil_mode's last-window rule included)."""
    span = n + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


def _conv2d(x: torch.Tensor, a: dict):
    w = a.get("weight")
    if not isinstance(w, torch.Tensor) or w.dim() != 4 or w.dtype != x.dtype:
        return None
    groups = int(a.get("groups", 1))
    if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        return None  # torch's own error message
    k, s, d = _pair(w.shape[-2:]), _pair(a.get("stride", 1)), _pair(a.get("dilation", 1))
    p = a.get("padding", 0)
    if p == "same" and s == (1, 1):
        size = tuple(int(v) for v in x.shape[-2:])
    elif isinstance(p, str) and p != "valid":
        return None
    else:
        p = (0, 0) if p == "valid" else _pair(p)
        size = tuple(_window_out(int(x.shape[2 + i]), k[i], s[i], p[i], d[i]) for i in (0, 1))
    return torch.empty(x.shape[0], w.shape[0], *size, device="meta", dtype=x.dtype) if min(size) > 0 else None


def _max_pool2d(x: torch.Tensor, a: dict):
    if a.get("return_indices", False):
        return None
    k = _pair(a["kernel_size"])
    stride = a.get("stride")
    s = k if stride is None or (isinstance(stride, (list, tuple)) and not stride) else _pair(stride)
    p, d = _pair(a.get("padding", 0)), _pair(a.get("dilation", 1))
    if any(p[i] > k[i] // 2 for i in (0, 1)):
        return None  # torch's own error message
    ceil = bool(a.get("ceil_mode", False))
    size = tuple(_window_out(int(x.shape[2 + i]), k[i], s[i], p[i], d[i], ceil) for i in (0, 1))
    return torch.empty(*x.shape[:2], *size, device="meta", dtype=x.dtype) if min(size) > 0 else None


def meta_shortcut(func, args: tuple, kwargs: dict):
    """The meta-device result of add/sub/mul, batch_norm, relu, conv2d, max_pool2d, pad and interpolate
    (None for anything else): the same shape and dtype as their meta kernels give, without importing
    ``torch._dynamo`` or sympy."""
    name = getattr(func, "__name__", "")
    x = args[0] if args else kwargs.get("input")
    if name in _INPLACE and isinstance(x, torch.Tensor) and x.is_meta and len(args) == 2 and not kwargs:
        # BatchNorm's num_batches_tracked += 1 while a model in training mode is traced: self, unchanged
        other = args[1]
        if isinstance(other, (int, float, bool)) or (
            isinstance(other, torch.Tensor) and _broadcast(x.shape, other.shape) == x.shape
        ):
            return x if torch.can_cast(torch.result_type(x, other), x.dtype) else None
        return None
    if not isinstance(x, torch.Tensor) or not x.is_meta or x.dim() != 4:
        return None
    if name in _BINARY and len(args) >= 2 and not kwargs:
        other = args[1]
        dims = _broadcast(x.shape, other.shape) if isinstance(other, torch.Tensor) else tuple(x.shape)
        return torch.empty(dims, device="meta", dtype=torch.result_type(x, other))
    if name == "batch_norm":
        return _like(x)
    if name in ("relu", "relu_"):  # in place: the same tensor, as the real op returns
        inplace = name == "relu_" or bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
        return x if inplace else _like(x)
    if name in ("conv2d", "max_pool2d") and "input" not in kwargs:
        return (_conv2d if name == "conv2d" else _max_pool2d)(x, _bind(name, args, kwargs))
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
