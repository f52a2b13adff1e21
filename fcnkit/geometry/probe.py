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
from fcnkit.geometry.analytic import DenseView, dense_view, select_output
from fcnkit.geometry.result import Geometry, number

__all__ = ["probe_geometry", "ProbeError"]

_RUNS = (5, 65, 257)  # cells probed: 2p + 1 shows a period p of up to 2, 32, 128


def _pair(v, default):
    if v is None or (isinstance(v, (list, tuple)) and not v):
        return default
    return (int(v[0]), int(v[-1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


class ProbeError(InputError):
    """The probe cannot measure this model (raised as is; other errors mean: grow the input)."""


class _Collapse(TorchFunctionMode):
    """Swap weighted/selecting ops for positive one-channel equivalents with the same geometry."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "conv2d":
            a = dict(zip(("input", "weight", "bias", "stride", "padding", "dilation", "groups"), args), **kwargs)
            x, k = a["input"], tuple(a["weight"].shape[-2:])
            return _box(x, k, a.get("stride", 1), a.get("padding", 0), a.get("dilation", 1))
        if name == "conv_transpose2d":
            names = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
            a = dict(zip(names, args), **kwargs)
            x, k = a["input"], a["weight"].shape[-2:]
            w = torch.ones(x.shape[1], 1, *k, dtype=x.dtype, device=x.device)
            return F.conv_transpose2d(
                x, w, None, a.get("stride", 1), a.get("padding", 0), a.get("output_padding", 0), 1, a.get("dilation", 1)
            )
        if name in ("max_pool2d", "_max_pool2d", "max_pool2d_with_indices"):
            a = dict(
                zip(("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"), args),
                **kwargs,
            )
            if a.get("return_indices") or name == "max_pool2d_with_indices":
                raise ProbeError("probe: max-pooling with indices (unpooling) is not supported; use method='analytic'")
            return _sum_pool(func, a)
        if name in ("adaptive_max_pool2d",):
            return F.adaptive_avg_pool2d(args[0], args[1] if len(args) > 1 else kwargs["output_size"])
        if name in ("batch_norm", "instance_norm", "group_norm", "layer_norm"):
            return args[0] if args else kwargs["input"]
        if name == "linear":
            raise ProbeError("probe: the model applies a Linear layer to a feature map; use method='analytic'")
        return func(*args, **kwargs)


def _box(x, k, stride, padding, dilation, ceil_mode=False):
    """A positive k x k window over the channel sum: average pooling where it can (fast on CPU),
    else a convolution with a ones kernel. Same output grid as the layer it replaces."""
    s, d = _pair(stride, (1, 1)), _pair(dilation, (1, 1))
    if padding == "same":
        padding = tuple(d[i] * (k[i] - 1) // 2 for i in (0, 1))
    p = (0, 0) if padding == "valid" else _pair(padding, (0, 0))
    if x.shape[1] > 1:
        x = x.sum(1, keepdim=True)
    if d == (1, 1) and all(2 * p[i] <= k[i] for i in (0, 1)):
        return F.avg_pool2d(x, k, s, p, ceil_mode=ceil_mode, count_include_pad=True)
    w = torch.ones(1, 1, *k, dtype=x.dtype, device=x.device)
    if ceil_mode:
        raise ProbeError("probe: dilated ceil-mode pooling is not supported; use method='analytic'")
    if isinstance(padding, str):  # "same" with an even dilated kernel: let conv2d place it
        return F.conv2d(x, w, None, s, padding, d)
    return F.conv2d(x, w, None, s, p, d)


def _sum_pool(func, a):
    """Max-pooling as a positive depthwise convolution; ``ceil_mode`` by padding the far side."""
    x = a["input"]
    k = _pair(a["kernel_size"], None)
    s, p, d = _pair(a.get("stride"), k), _pair(a.get("padding"), (0, 0)), _pair(a.get("dilation"), (1, 1))
    if d == (1, 1):
        return torch.cat([_box(x[:, c : c + 1], k, s, p, d, bool(a.get("ceil_mode"))) for c in range(x.shape[1])], 1)
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
    """Every parameter 1, running means 0, other float buffers 1: expanded CPU scalars, no memory
    (so a model built on the meta device can be probed without materialising its weights)."""
    one, zero = torch.ones((), dtype=dtype), torch.zeros((), dtype=dtype)
    state = {k: one.expand(v.shape) for k, v in model.named_parameters()}
    for k, v in model.named_buffers():
        if v.is_floating_point():
            state[k] = (zero if "mean" in k else one).expand(v.shape)
    return state


class _Overflow(Exception):
    pass


def _supports(model, in_channels, size, cells, dtype):
    """Forward once at ``size``; for each probed cell, the first/last input row and column with grad != 0."""
    x = torch.ones(1, in_channels, size, size, dtype=dtype, requires_grad=True)
    with _Collapse():
        y = select_output(functional_call(model, _positive_state(model, dtype), (x,)))
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
        if not torch.isfinite(g).all():
            raise _Overflow()
        r = torch.nonzero(g.sum(1)).flatten()
        c = torch.nonzero(g.sum(0)).flatten()
        if r.numel() == 0 or c.numel() == 0:
            raise ProbeError(
                "probe: an output cell does not depend on the input; pass a network that maps images to scores"
            )
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
    """Measure ``size``/``stride``/``offset``/``align`` by gradients (see the module docstring).

    All-ones weights keep every gradient >= the smallest resampling weight (no underflow); if a
    deep net overflows float32, the probe repeats in float64. Runs single-threaded: one-channel
    maps are too small to gain from threads, and on a busy machine threads cost 5-20x.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _probe(model, in_channels, max_size)
    finally:
        torch.set_num_threads(threads)


def _probe(model: nn.Module, in_channels: int, max_size: int) -> Geometry:
    dtype = torch.float32
    size, runs = 64, list(_RUNS)
    cells = runs.pop(0)
    while size <= max_size:
        try:
            rows, n0 = _supports(model, in_channels, size, cells, dtype)
        except _NotDense:
            if dense_view(model) is model or isinstance(model, DenseView):
                raise InputError(
                    f"probe: {type(model).__name__}'s output has no spatial grid; pass a dense model"
                ) from None
            model = dense_view(model)
            continue
        except _Overflow:
            if dtype == torch.float64:
                raise InputError("probe: gradients overflow even in float64; use method='analytic'") from None
            dtype = torch.float64
            continue
        except ProbeError:
            raise
        except Exception:  # noqa: BLE001 - the model refuses this input size (too small): grow it
            size *= 2
            continue
        if rows is None or any(lo < 1 or hi > size - 2 for r in rows for lo, hi in r):
            size *= 2  # too few output cells, or a window reaches the image border: grow the image
            continue
        found = [_period([r[i][0] for r in rows], [r[i][1] for r in rows]) for i in (0, 1)]
        if None in found:
            if not runs:
                raise InputError(
                    f"probe: no periodic pattern over {cells} cells; the model is not translation-equivariant"
                )
            # more cells: grow the image by what they need (the extent seen so far + their span)
            extent = max(r[i][1] - r[i][0] for r in rows for i in (0, 1)) + 1
            step = max(1.0, max((rows[-1][i][0] - rows[0][i][0]) / (cells - 1) for i in (0, 1)))
            cells = runs.pop(0)
            size = max(size, -(-int(extent + cells * step + 16) // 32) * 32)
            continue
        out: dict[str, list] = {"size": [], "stride": [], "offset": [], "align": []}
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
