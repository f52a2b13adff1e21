"""Run a model under the :class:`~fcnkit.geometry.trace.Tracer` and turn the trace into a Geometry."""
from __future__ import annotations

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
    """Trace ``model`` (its ``forward``, or ``forward_dense`` for classifiers) and summarise."""
    label = type(model).__name__
    sizes = [tuple(input_size)] if input_size is not None else list(DEFAULT_SIZES)
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
            raise InputError(f"{label}: its output does not depend on the input; pass a network that maps images to score maps")
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
        )
    first = (str(last).strip().splitlines() or [type(last).__name__])[0][:200]
    raise InputError(
        f"{label}: the model fails on a {sizes[-1][0]}x{sizes[-1][1]} input ({first}); "
        "pass input_size=(H, W) that it accepts (and in_channels if not 3)"
    )
