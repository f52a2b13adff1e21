"""Downsampling surgery for the All-CNN comparison (Springenberg et al. 2015): swap pooling
layers for learned stride-s convolutions and back, keeping every feature map's grid size.

::

    kind="strided":             Pool(k, s, p)            ->  Conv2d(C, C, k, s, p)        (new weights)
    kind="maxpool"/"avgpool":   Conv2d(.., k, s, p, d)   ->  Conv2d(.., k, 1, p, d) -> Pool(s, s, ceil_mode=True)

Why ``ceil_mode=True`` keeps the grid: with ``n = H + 2p - d(k-1)`` the stride-1 conv gives
``n`` cells and the stride-s conv ``floor((n-1)/s) + 1 = ceil(n/s)``; an ``s x s`` pool with
stride s gives ``floor(n/s)`` cells with ``ceil_mode=False`` but ``ceil(n/s)`` with
``ceil_mode=True`` (its last window starts at ``s*(ceil(n/s)-1) <= n-1``, inside the map, so
PyTorch never drops it). The two agree for every ``H``, not only even sizes.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fcnkit.convert._fx import as_size, first_in_channels, meta_copy, set_submodule
from fcnkit.errors import InputError

__all__ = ["replace_downsampling"]

KINDS = ("strided", "maxpool", "avgpool")
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def replace_downsampling(
    model: nn.Module,
    kind: str = "strided",
    *,
    layers: list[str] | None = None,
    input_size: int | tuple[int, int] | None = None,
) -> nn.Module:
    """Swap downsampling layers; returns a new model (deep copy), the input is not modified.

    * ``kind="strided"``: every ``MaxPool2d``/``AvgPool2d`` with stride > 1 becomes a
      ``Conv2d(C, C)`` with the pool's kernel, stride and padding (a ``ceil_mode`` pool gets
      ``s-1`` extra zero rows/columns at the bottom/right so its grid is kept). These convs are
      **new, default-initialised** layers (PyTorch's Kaiming-uniform); all other weights are kept.
      ``C`` is read from a shape pass at ``input_size`` (default 224) on meta tensors (free).
    * ``kind="maxpool"`` / ``"avgpool"``: every ``Conv2d`` with stride ``s > 1`` becomes the same
      convolution (same weights, nothing re-initialised) at stride 1 followed by an ``s x s``
      pool with stride ``s`` and ``ceil_mode=True``, which gives the same grid size for every
      input size (derivation in the module docstring). Its output values of course differ: the
      model needs (re-)training. For ResNet this includes the 7x7 stem and the 1x1 shortcut convs.

    ``layers`` restricts the surgery to these module paths (e.g. ``["features.4"]``). Pools with
    stride 1 and adaptive/global pools are not downsampling layers and are left alone. State-dict
    keys of a replaced pool-to-conv that needed padding, and of every conv-to-pool, gain a
    sub-index (``features.3`` -> ``features.3.0``) because the layer becomes an ``nn.Sequential``.
    """
    if kind not in KINDS:
        raise InputError(
            f"kind={kind!r} is not one of {KINDS}; use 'strided' (pool -> conv) or 'maxpool'/'avgpool' (conv -> pool)"
        )
    new = copy.deepcopy(model)
    targets: list[tuple[str, nn.Module]]
    if kind == "strided":
        targets = [(n, m) for n, m in new.named_modules() if isinstance(m, _POOLS) and _stride(m) != (1, 1)]
        what = "MaxPool2d/AvgPool2d with stride > 1"
    else:
        targets = [(n, m) for n, m in new.named_modules() if isinstance(m, nn.Conv2d) and tuple(m.stride) != (1, 1)]
        what = "Conv2d with stride > 1"
    if layers is not None:
        names = {n for n, _ in targets}
        missing = [p for p in layers if p not in names]
        if missing:
            from fcnkit.errors import did_you_mean

            raise InputError(
                f"layers: '{missing[0]}' is not a {what} in {type(model).__name__}{did_you_mean(missing[0], names)}"
            )
        targets = [(n, m) for n, m in targets if n in set(layers)]
    if not targets:
        raise InputError(
            f"replace_downsampling: {type(model).__name__} has no {what} module to replace (pooling done with "
            "torch.nn.functional in forward() cannot be swapped; use nn.MaxPool2d/nn.AvgPool2d modules)"
        )
    if kind == "strided":
        channels = _pool_input_channels(new, [n for n, _ in targets], input_size)
        for name, pool in targets:
            set_submodule(new, name, _pool_to_conv(name, pool, channels[name], _factory(new)))  # type: ignore[arg-type]
    else:
        pool_cls = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
        for name, conv in targets:
            set_submodule(new, name, _conv_to_pool(conv, pool_cls))  # type: ignore[arg-type]  # Conv2d here
    return new


def _stride(pool: nn.MaxPool2d | nn.AvgPool2d) -> tuple[int, int]:
    stride = pool.stride if pool.stride is not None else pool.kernel_size
    return (stride, stride) if isinstance(stride, int) else (int(stride[0]), int(stride[1]))


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _factory(model: nn.Module) -> dict:
    p = next(iter(model.parameters()), None)
    return {"device": p.device, "dtype": p.dtype} if p is not None else {}


def _pool_to_conv(name: str, pool: nn.MaxPool2d | nn.AvgPool2d, channels: int, factory: dict) -> nn.Module:
    k, s, p = _pair(pool.kernel_size), _stride(pool), _pair(pool.padding)
    dilation = _pair(getattr(pool, "dilation", 1))
    conv = nn.Conv2d(channels, channels, k, s, p, dilation=dilation, **factory)
    if not pool.ceil_mode:
        return conv
    # ceil_mode: ceil((n - k)/s) + 1 cells = floor((n + s - 1 - k)/s) + 1, i.e. s-1 extra zeros at the end;
    # exact unless PyTorch drops a last window that would start in the padding (only if p > 0 or k < s)
    if p != (0, 0) or k[0] < s[0] or k[1] < s[1]:
        raise InputError(
            f"replace_downsampling: '{name}' uses ceil_mode with padding {p} and kernel {k} < stride {s}, whose grid "
            "no convolution reproduces for every size; set ceil_mode=False or padding=0 on it first"
        )
    return nn.Sequential(nn.ZeroPad2d((0, s[1] - 1, 0, s[0] - 1)), conv)


def _conv_to_pool(conv: nn.Conv2d, pool_cls) -> nn.Module:
    s = tuple(conv.stride)
    conv.stride = (1, 1)  # ``conv`` belongs to our deep copy; its weights stay as they are
    return nn.Sequential(conv, pool_cls(kernel_size=s, stride=s, ceil_mode=True))


def _pool_input_channels(model: nn.Module, names: list[str], input_size) -> dict[str, int]:
    """Channels entering each pool, from one forward pass on meta tensors (no compute)."""
    size = as_size(input_size if input_size is not None else 224, "input_size")
    meta = meta_copy(model).eval()
    seen: dict[str, int] = {}

    def record(name):
        def hook(module, args):  # returns None: a pre-hook's return value would replace the input
            seen.setdefault(name, args[0].shape[1])

        return hook

    hooks = [meta.get_submodule(n).register_forward_pre_hook(record(n)) for n in names]
    x = torch.zeros(
        1, first_in_channels(model), *size, device="meta", dtype=_factory(model).get("dtype", torch.float32)
    )
    try:
        meta(x)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(
            f"replace_downsampling: {type(model).__name__} fails on a {size[0]}x{size[1]} input ({first}); "
            "pass input_size=(H, W) that the model accepts"
        ) from None
    finally:
        for h in hooks:
            h.remove()
    unused = [n for n in names if n not in seen]
    if unused:
        raise InputError(f"replace_downsampling: '{unused[0]}' is never called in forward(); pass layers= without it")
    return seen
