r"""Bilinear upsampling as a transposed convolution (fixed, or learned from a bilinear start).

Geometry. A ``ConvTranspose2d(kernel K, stride f, padding 0)`` maps input cell ``j`` to a
"tent" of output indices ``f*j .. f*j + K - 1`` whose peak is at kernel index ``kc = (K - 1) / 2``.
The output is then cropped to start at index ``a`` (what ``padding`` does in a ConvTranspose2d,
done explicitly here so any alignment is possible). Say the input cell ``j`` sits at output
coordinate ``f*j + shift``; the tent must peak there, so ``a = kc - shift``::

    input cells      j=0            j=1            j=2          (cell j at f*j + shift)
                      ^              ^              ^
    tents          /\/\/\         /\/\/\         /\/\/\        weight 1 - |d| / f, width 2f
    output      |0 1 2 3 4 5 6 7 8 9 ...                         (after cropping a)

* ``shift`` half-integer (e.g. ``(f - 1) / 2`` for even f): ``K = 2f``, ``kc = f - 1/2``.
* ``shift`` integer: ``K = 2f - 1``, ``kc = f - 1``.

The default ``shift = (f - 1) / 2`` is the convention of ``F.interpolate(mode="bilinear",
align_corners=False)``: output pixel ``o`` reads the input at ``(o + 0.5) / f - 0.5``. It gives
``K = 2f - f % 2`` and ``a = f // 2``: exactly ``ConvTranspose2d(2f - f % 2, stride f, padding
f // 2)``, the FCN upsampling layer, with an output of ``n * f`` cells. Away from the borders the
two agree to rounding; ``border="replicate"`` (pad the input by one edge cell first) also makes
the borders agree, because F.interpolate clamps its source coordinates to the edge cells. A fixed
layer with ``border="replicate"`` is therefore computed with F.interpolate itself (the same
numbers, several times faster on CPU than a depthwise transposed convolution); its weight stays
in the module as the definition.

For a pooling network ("same" padding, 2x2 pools) a cell at stride ``s`` is centred on input pixel
``s*i + (s - 1) / 2``, so upsampling it by ``f = s`` with the default shift puts output pixel
``o`` exactly at pixel ``o``. Backbones centred elsewhere (ResNet: ``s*i``) pass their own
``shift``; see :func:`upsample_alignment`.

The crop depends on the requested output size, so torch.fx tracers should treat
:class:`BilinearUpsample` as a leaf module (``Tracer.is_leaf_module``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["bilinear_kernel", "upsample_alignment", "BilinearUpsample"]


def bilinear_kernel(factor: int, channels: int, size: int | None = None) -> torch.Tensor:
    """Bilinear ConvTranspose2d weight ``[channels, channels, size, size]`` (channel c -> c only).

    ``size`` defaults to ``2 * factor - factor % 2`` (FCN's ``upsample_filt``); the tent
    ``1 - |x - (size - 1) / 2| / factor`` is centred in the kernel, in each dimension.
    """
    if factor < 1 or channels < 1:
        raise ValueError(f"factor and channels must be >= 1, got {factor}, {channels}")
    size = 2 * factor - factor % 2 if size is None else size
    centre = (size - 1) / 2
    x = torch.arange(size, dtype=torch.float64)
    tent = (1 - (x - centre).abs() / factor).clamp(min=0)
    kernel2d = tent[:, None] * tent[None, :]
    weight = torch.zeros(channels, channels, size, size, dtype=torch.float64)
    idx = torch.arange(channels)
    weight[idx, idx] = kernel2d
    return weight.to(torch.get_default_dtype())


def upsample_alignment(factor: int, shift: float) -> tuple[int, int]:
    """``(kernel_size, crop_start)`` for input cell ``j`` at output coordinate ``factor*j + shift``.

    ``shift`` must be a multiple of 1/2 (tents can only peak on or between output cells).
    """
    twice = 2 * shift
    if abs(twice - round(twice)) > 1e-9:
        raise ValueError(f"cannot align a bilinear upsampling to shift {shift}: not a multiple of 1/2")
    half = round(twice) % 2 == 1
    size = 2 * factor if half else 2 * factor - 1
    start = (size - 1) / 2 - shift
    if start < 0:
        raise ValueError(f"shift {shift} too large for factor {factor}: the crop would start before the output")
    return size, int(round(start))


class BilinearUpsample(nn.ConvTranspose2d):
    """Upsample ``[B, C, h, w]`` by ``factor`` with a ConvTranspose2d initialised to bilinear.

    ``learnable=False`` freezes the weight (``requires_grad=False``; it stays in the state dict)
    and makes the layer depthwise (``groups=C``, weight ``[C, 1, K, K]``: C times cheaper);
    ``True`` learns a full ``[C, C, K, K]`` weight from the bilinear start (classes may interact,
    as in FCN). ``shift`` places the input cells (module docstring; default is the
    ``align_corners=False`` convention). ``border="zeros"`` treats cells outside the input as 0
    (a plain transposed convolution); ``"replicate"`` repeats the edge cells. ``forward(x, size)``
    returns ``size = (H, W)`` cells (default ``(h * factor, w * factor)``).
    """

    def __init__(
        self,
        channels: int,
        factor: int,
        learnable: bool = False,
        *,
        shift: float | None = None,
        border: str = "zeros",
    ):
        shift = (factor - 1) / 2 if shift is None else shift
        size, start = upsample_alignment(factor, shift)
        if border not in ("zeros", "replicate"):
            raise ValueError(f"border must be 'zeros' or 'replicate', got {border!r}")
        groups = 1 if learnable else channels
        super().__init__(channels, channels, size, stride=factor, padding=0, groups=groups, bias=False)
        self.factor, self.shift, self.border, self.crop_start = factor, shift, border, start
        kernel = bilinear_kernel(factor, channels, size)
        if groups > 1:
            idx = torch.arange(channels)
            kernel = kernel[idx, idx].unsqueeze(1)
        with torch.no_grad():
            self.weight.copy_(kernel)
        self.weight.requires_grad_(learnable)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:  # type: ignore[override]
        h, w = size if size is not None else (x.shape[-2] * self.factor, x.shape[-1] * self.factor)
        if self.border == "replicate" and not self.weight.requires_grad:
            fast = self._interpolated(x, h, w)
            if fast is not None:
                return fast
        start = self.crop_start
        if self.border == "replicate":
            x = F.pad(x, (1, 1, 1, 1), mode="replicate")
            start += self.factor  # the extra leading cell adds one stride of output
        y = F.conv_transpose2d(x, self.weight, None, self.stride, groups=self.groups)
        if not _tracing() and (y.shape[-2] < start + h or y.shape[-1] < start + w):
            raise ValueError(f"cannot produce {h}x{w} from a {x.shape[-2]}x{x.shape[-1]} grid at factor {self.factor}")
        return y[..., start : start + h, start : start + w]

    def _interpolated(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor | None:
        """The fixed layer with replicated borders, computed by F.interpolate (same numbers, several
        times faster on CPU than a grouped transposed convolution); None if the shift needs the conv."""
        f, n, m = self.factor, x.shape[-2], x.shape[-1]
        d = self.shift - (f - 1) / 2
        if d == int(d):  # cells on f*j + (f - 1)/2 + d: the align_corners=False grid, moved by d
            y = F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False) if f > 1 else x
        elif self.shift == int(self.shift):  # cells on f*j + shift: the align_corners=True grid, moved
            d = self.shift
            y = F.interpolate(x, size=((n - 1) * f + 1, (m - 1) * f + 1), mode="bilinear", align_corners=True)
        else:
            return None
        d = int(d)  # out[o] = y[o - d], edge values repeated beyond y
        top, left = max(d, 0), max(d, 0)
        # sym_max, and no branch when exporting: the exported graph then keeps H and W symbolic
        bottom, right = _at_least_0(h - d - y.shape[-2]), _at_least_0(w - d - y.shape[-1])
        if _tracing() or top or bottom or left or right:
            y = F.pad(y, (left, right, top, bottom), mode="replicate")
        return y[..., top - d : top - d + h, left - d : left - d + w]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, shift={self.shift}, crop_start={self.crop_start}, border={self.border}"


def _tracing() -> bool:
    """True while torch.jit.trace (ONNX/TorchScript export) or torch.export/compile trace the model:
    sizes are then tensors or symbols, and a Python branch on them would freeze the traced size."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting() or torch.compiler.is_compiling()


def _at_least_0(v):
    """``max(v, 0)`` that stays traced when ``v`` is a traced size (a tensor or a SymInt)."""
    return torch.clamp(v, min=0) if isinstance(v, torch.Tensor) else torch.sym_max(v, 0)
