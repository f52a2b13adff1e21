"""Run a model under the :class:`~fcnkit.geometry.trace.Tracer` and turn the trace into a Geometry."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import torch
from torch import nn
from torch.func import functional_call

from fcnkit.errors import InputError
from fcnkit.geometry.axis import Axis
from fcnkit.geometry.result import Geometry, number
from fcnkit.geometry.trace import State, Tracer, Unsupported

__all__ = ["analytic_geometry", "trace_model", "select_output", "dense_view", "DenseView", "DEFAULT_SIZES"]

# tried in turn: odd sizes so that a resize whose ratio depends on the image size shows up
DEFAULT_SIZES = ((225, 225), (449, 449), (897, 897), (1793, 1793))


class DenseView(nn.Module):
    """``forward`` = the wrapped classifier's ``forward_dense`` (its score map before pooling)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_dense(x)


def dense_view(model: nn.Module) -> nn.Module:
    """``model`` itself, or a view calling ``forward_dense`` for classifiers that have one."""
    return DenseView(model) if callable(getattr(model, "forward_dense", None)) else model


def select_output(out):
    """The segmentation logits of a forward's result: a tensor, ``dict["out"]`` or the first item."""
    if isinstance(out, dict):
        out = out.get("out", next(iter(out.values()), None))
    elif isinstance(out, (list, tuple)) and out:
        out = out[0]
    return out


def _install_hooks(model: nn.Module, tracer: Tracer) -> list:
    handles = []
    for name, module in model.named_modules():
        leaf = not any(True for _ in module.children())

        def pre(mod, args, name=name, leaf=leaf):
            tracer.names.append((name, leaf))

        def post(mod, args, out):
            if tracer.names:
                tracer.names.pop()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    return handles


def _first_param(model: nn.Module) -> torch.Tensor | None:
    return next(model.parameters(), None)


def trace_model(model: nn.Module, in_channels: int, size: tuple[int, int]) -> tuple[Tracer, object]:
    """One traced forward pass at ``size`` (meta device, else the model's device); returns (tracer, output)."""
    p = _first_param(model)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    last = None
    for meta in (True, False):
        tracer = Tracer()
        handles = _install_hooks(model, tracer)
        try:
            if meta:
                state = {k: torch.empty_like(v, device="meta") for k, v in model.named_parameters()}
                state.update({k: torch.empty_like(v, device="meta") for k, v in model.named_buffers()})
                x = torch.zeros(1, in_channels, *size, device="meta", dtype=dtype)
                tracer.watch(x, State((Axis(), Axis())))
                with tracer, torch.no_grad():
                    out = functional_call(model, state, (x,))
            else:
                x = torch.zeros(1, in_channels, *size, device=p.device if p is not None else "cpu", dtype=dtype)
                tracer.watch(x, State((Axis(), Axis())))
                with tracer, torch.no_grad():
                    out = model(x)
            return tracer, out
        except Unsupported:
            raise
        except (NotImplementedError, RuntimeError) as exc:
            last = exc
            if not meta or not ("meta" in str(exc).lower() or isinstance(exc, NotImplementedError)):
                raise
        finally:
            for h in handles:
                h.remove()
    raise AssertionError(f"unreachable: {last!r}")  # pragma: no cover - the loop always returns or raises


def analytic_geometry(model: nn.Module, in_channels: int = 3, input_size=None) -> Geometry:
    """Trace ``model`` (its ``forward``, or ``forward_dense`` for classifiers) and summarise.

    By default it traces at an odd size first (so a resize whose ratio depends on the image shows
    up). Models that resize their output back to the input size (torchvision's ``fcn_resnet50``,
    smp's ``Unet``) give whole strides only at sizes that are multiples of their alignment: then it
    traces at two such sizes, and returns that geometry with ``input_multiple`` set if both agree.
    Strides that are not whole (or ``1/n``) or that change with the size are refused.
    """
    label = type(model).__name__
    if input_size is not None:
        g = _first_geometry(model, in_channels, [tuple(input_size)])
        if not _whole_strides(g):
            raise InputError(
                f"{label}: stride {_fmt(g.stride)} at {_fmt(input_size)} is not a whole number of pixels "
                f"(a resize whose ratio depends on the input size); use input sizes that are multiples of "
                f"{_fmt(g.align)}, or leave input_size out"
            )
        return g
    try:
        g = _first_geometry(model, in_channels, DEFAULT_SIZES)
        if _whole_strides(g) and not any(_SIZE_DEPENDENT in b for b in g.blockers):
            return g
        odd = f"gives stride {_fmt(tuple(round(float(v), 4) for v in g.stride))} at {_fmt(g.trace_size)}"
    except InputError:  # refused odd sizes or traced inconsistent strides: try aligned sizes
        odd = "is refused by the model or gives inconsistent strides"
    a = _first_geometry(model, in_channels, ALIGNED_SIZES)
    traced = a.trace_size or ALIGNED_SIZES[0]  # always set by _first_geometry
    size_b = tuple(n + m for n, m in zip(traced, a.align))
    b = _first_geometry(model, in_channels, [size_b])
    if not _whole_strides(a) or _key(a) != _key(b):
        raise InputError(
            f"{label}: its geometry changes with the input size (stride {_fmt(a.stride)} at "
            f"{_fmt(a.trace_size)}, {_fmt(b.stride)} at {_fmt(size_b)}); use method='probe' at one size"
        )
    note = f"traced at {_fmt(a.trace_size)} and {_fmt(size_b)}: an odd size {odd}"
    return replace(a, input_multiple=a.align, notes=a.notes + (note,))


# aligned trace sizes: multiples of every power of two up to 512
ALIGNED_SIZES = ((512, 512), (1024, 1024), (2048, 2048))
_SIZE_DEPENDENT = "depends on the image size"


def _key(g: Geometry) -> tuple:
    return g.size, g.stride, g.offset, g.align


def _whole_strides(g: Geometry) -> bool:
    """Every stride is whole or 1/n: the output grid is the same for every tile."""
    return all(Fraction(s).numerator == 1 or Fraction(s).denominator == 1 for s in g.stride)


def _fmt(pair) -> str:
    if not pair:
        return "?"
    a, b = pair
    return f"{a}" if a == b else f"{a}x{b}"


def _first_geometry(model: nn.Module, in_channels: int, sizes) -> Geometry:
    """The geometry at the first of ``sizes`` that the model accepts."""
    label = type(model).__name__
    sizes = [tuple(size) for size in sizes]
    target = model
    last = None
    for size in sizes:
        try:
            tracer, out = trace_model(target, in_channels, size)
        except Unsupported as exc:
            raise InputError(f"{label}: cannot trace the receptive field: {exc}; use method='probe'") from None
        except InputError:
            raise
        except Exception as exc:  # the model refused this input size: try a larger one
            last = exc
            continue
        out = select_output(out)
        state = tracer.state(out)
        if (state is None or out.dim() < 3) and target is model and dense_view(model) is not model:
            target = dense_view(model)
            tracer, out = trace_model(target, in_channels, size)
            out = select_output(out)
            state = tracer.state(out)
        if not isinstance(out, torch.Tensor) or state is None:
            raise InputError(
                f"{label}: its output does not depend on the input; pass a network that maps images to score maps"
            )
        if out.dim() < 3:
            raise InputError(
                f"{label}: output has shape {list(out.shape)} (no spatial grid); pass a fully convolutional model "
                "(e.g. model.features, or one with forward_dense)"
            )
        summ = [a.summary() for a in state.axes]
        return Geometry(
            size=tuple(number(s[0]) for s in summ),
            stride=tuple(number(s[1]) for s in summ),
            offset=tuple(number(s[2]) for s in summ),
            align=tuple(a.align for a in state.axes),
            layers=tuple(tracer.rows),
            blockers=state.blockers,
            notes=state.notes,
            method="analytic",
            output_shape=tuple(int(v) for v in out.shape[-2:]),
            trace_size=tuple(size),
        )
    first = (str(last).strip().splitlines() or [type(last).__name__])[0][:200]
    raise InputError(
        f"{label}: the model fails on a {sizes[-1][0]}x{sizes[-1][1]} input ({first}); "
        "pass input_size=(H, W) that it accepts (and in_channels if not 3)"
    )
