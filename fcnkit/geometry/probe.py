"""Receptive fields measured, not derived: back-propagate from single output cells.

The model's own operations run (strides, paddings, dilations, crops, resampling, skip
connections), with every convolution collapsed to one channel of all-ones weights, max-pooling
replaced by sum-pooling and normalisation by the identity; all values stay positive, so the
gradient of an output cell is non-zero exactly on the input pixels it depends on. Measuring a
run of consecutive cells gives the stride (the period of the pattern), and the envelope of
their windows gives the size and offset the analytic trace reports::

    cells  n0 .. n0+L-1  (diagonal)    ->  [a_n, b_n] = first/last input pixel with grad != 0
    stride J = (a_{n+p} - a_n) / p      (smallest period p of the pattern)
    lo = min(a_n - n*J)   hi = max(b_n - n*J)   size = hi - lo + 1   offset = (lo + hi) / 2
"""
from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from fcnkit.errors import InputError
from fcnkit.geometry.analytic import _Dense, dense_view, select_output
from fcnkit.geometry.result import Geometry, number

__all__ = ["probe_geometry"]

_RUNS = (5, 17, 65, 257)  # cells probed: 2p + 1 shows a period p of up to 2, 8, 32, 128


def _pair(v, default):
    if v is None or (isinstance(v, (list, tuple)) and not v):
        return default
    return (int(v[0]), int(v[-1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


class _Collapse(TorchFunctionMode):
    """Swap weighted/selecting ops for positive one-channel equivalents with the same geometry."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "conv2d":
            a = dict(zip(("input", "weight", "bias", "stride", "padding", "dilation", "groups"), args), **kwargs)
            x, k = a["input"], a["weight"].shape[-2:]
            w = torch.ones(1, x.shape[1], *k, dtype=x.dtype, device=x.device)
            return F.conv2d(x, w, None, a.get("stride", 1), a.get("padding", 0), a.get("dilation", 1), 1)
        if name == "conv_transpose2d":
            names = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
            a = dict(zip(names, args), **kwargs)
            x, k = a["input"], a["weight"].shape[-2:]
            w = torch.ones(x.shape[1], 1, *k, dtype=x.dtype, device=x.device)
            return F.conv_transpose2d(x, w, None, a.get("stride", 1), a.get("padding", 0),
                                      a.get("output_padding", 0), 1, a.get("dilation", 1))
        if name in ("max_pool2d", "_max_pool2d", "max_pool2d_with_indices"):
            a = dict(zip(("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"), args), **kwargs)
            if a.get("return_indices") or name == "max_pool2d_with_indices":
                raise InputError("probe: max-pooling with indices (unpooling) is not supported; use method='analytic'")
            return _sum_pool(func, a)
        if name in ("adaptive_max_pool2d",):
            return F.adaptive_avg_pool2d(args[0], args[1] if len(args) > 1 else kwargs["output_size"])
        if name in ("batch_norm", "instance_norm", "group_norm", "layer_norm"):
            return args[0] if args else kwargs["input"]
        if name == "linear":
            raise InputError("probe: the model applies a Linear layer to a feature map; use method='analytic'")
        return func(*args, **kwargs)


def _sum_pool(func, a):
    """Max-pooling as a positive depthwise convolution; ``ceil_mode`` by padding the far side."""
    x = a["input"]
    k = _pair(a["kernel_size"], None)
    s, p, d = _pair(a.get("stride"), k), _pair(a.get("padding"), (0, 0)), _pair(a.get("dilation"), (1, 1))
    with torch.no_grad():
        want = func(x.detach(), k, s, p, d, bool(a.get("ceil_mode", False))).shape[-2:]
    extra = [max(0, (want[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 - (x.shape[-2 + i] + 2 * p[i])) for i in (0, 1)]
    if any(extra):
        x = F.pad(x, (0, extra[1], 0, extra[0]))
    w = torch.ones(x.shape[1], 1, *k, dtype=x.dtype, device=x.device)
    return F.conv2d(x, w, None, s, p, d, x.shape[1])


class _NotDense(Exception):
    pass


def _positive_state(model: nn.Module, dtype) -> dict:
    """Every parameter 1, running means 0, other float buffers 1: expanded scalars, no memory."""
    one, zero = torch.ones((), dtype=dtype), torch.zeros((), dtype=dtype)
    state = {k: one.to(v.device).expand(v.shape) for k, v in model.named_parameters()}
    for k, v in model.named_buffers():
        if v.is_floating_point():
            state[k] = (zero if "mean" in k else one).to(v.device).expand(v.shape)
    return state


def _supports(model, state, in_channels, size, cells, device):
    """Forward once at ``size``; for each probed cell, the first/last input row and column with grad != 0."""
    x = torch.ones(1, in_channels, size, size, dtype=torch.float64, device=device, requires_grad=True)
    with _Collapse():
        y = select_output(functional_call(model, state, (x,)))
    if not isinstance(y, torch.Tensor) or y.dim() < 3:
        raise _NotDense()
    y = y.reshape(-1, *y.shape[-2:]).sum(0)
    n = [(y.shape[i] - cells) // 2 for i in (0, 1)]
    if min(n) < 1:
        return None, n
    rows = []
    for t in range(cells):
        (g,) = torch.autograd.grad(y[n[0] + t, n[1] + t], x, retain_graph=t < cells - 1)
        g = g.detach().abs().sum(dim=(0, 1))
        r = torch.nonzero(g.sum(1)).flatten()
        c = torch.nonzero(g.sum(0)).flatten()
        if r.numel() == 0 or c.numel() == 0:
            raise InputError("probe: an output cell does not depend on the input; pass a network that maps images to scores")
        rows.append(((int(r[0]), int(r[-1])), (int(c[0]), int(c[-1]))))
    return rows, n


def _period(a: list[int], b: list[int]):
    """Smallest p with a[t+p]-a[t] == b[t+p]-b[t] == d > 0 for all t: stride d/p."""
    for p in range(1, (len(a) - 1) // 2 + 1):
        d = a[p] - a[0]
        if d > 0 and all(a[t + p] - a[t] == d and b[t + p] - b[t] == d for t in range(len(a) - p)):
            return p, d
    return None


def probe_geometry(model: nn.Module, in_channels: int = 3, max_size: int = 2048) -> Geometry:
    """Measure ``size``/``stride``/``offset``/``align`` by gradients (see the module docstring)."""
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    state = _positive_state(model, torch.float64)
    size, runs = 64, list(_RUNS)
    cells = runs.pop(0)
    while size <= max_size:
        try:
            rows, n0 = _supports(model, state, in_channels, size, cells, device)
        except _NotDense:
            if dense_view(model) is model or isinstance(model, _Dense):
                raise InputError(f"probe: {type(model).__name__}'s output has no spatial grid; pass a dense model") from None
            model = dense_view(model)
            state = _positive_state(model, torch.float64)
            continue
        if rows is None or any(lo < 1 or hi > size - 2 for r in rows for lo, hi in r):
            size *= 2  # too few output cells, or a window reaches the image border: grow the image
            continue
        found = [_period([r[i][0] for r in rows], [r[i][1] for r in rows]) for i in (0, 1)]
        if None in found:
            if not runs:
                raise InputError(f"probe: no periodic pattern over {cells} cells; the model is not translation-equivariant")
            cells = runs.pop(0)
            continue
        out = {"size": [], "stride": [], "offset": [], "align": []}
        for i, (per, shift) in enumerate(found):
            jump = Fraction(shift, per)
            lo = min(r[i][0] - (n0[i] + t) * jump for t, r in enumerate(rows))
            hi = max(r[i][1] - (n0[i] + t) * jump for t, r in enumerate(rows))
            out["size"].append(number(hi - lo + 1))
            out["stride"].append(number(jump))
            out["offset"].append(number((lo + hi) / 2))
            out["align"].append(shift)
        return Geometry(**{k: tuple(v) for k, v in out.items()}, method="probe")
    raise InputError(
        f"{type(model).__name__}: the receptive field still reaches the border of a {max_size}x{max_size} input; "
        "the output depends on the whole image (global pooling?) or the field is larger than max_size"
    )
