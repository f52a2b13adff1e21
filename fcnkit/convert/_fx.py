"""torch.fx plumbing shared by the surgery functions: tracing with user-facing errors, shapes at a
given input size without computing anything (meta tensors), and module replacement by path."""

from __future__ import annotations

import copy
import itertools

import torch
from torch import fx, nn

from fcnkit.errors import InputError

__all__ = ["trace", "meta_copy", "node_shapes", "set_submodule", "where", "first_in_channels", "as_size"]


def as_size(value, name: str) -> tuple[int, int]:
    """``224`` or ``(224, 224)`` -> ``(224, 224)``; anything else is a user error naming ``name``."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int):
        value = (value, value)
    try:
        h, w = (int(v) for v in value)
        ok = (h, w) == tuple(value) and h > 0 and w > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name}={value!r} is not a size; pass a positive int or (height, width)")
    return h, w


def trace(model: nn.Module, caller: str) -> fx.GraphModule:
    """``fx.symbolic_trace`` whose failure is a one-line user error with the fix."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, AttributeError, ... from user code
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(
            f"{caller}: torch.fx cannot trace {type(model).__name__}.forward ({first}); make forward free of "
            "data-dependent Python control flow, or write the classifier as an nn.Sequential"
        ) from None


def meta_copy(module: nn.Module) -> nn.Module:
    """A deep copy whose parameters and buffers live on the ``meta`` device (no memory, no compute).

    Deep copying with a pre-filled memo substitutes each tensor instead of copying its data, so
    this is cheap even for VGG's 138 M parameters.
    """
    memo: dict[int, object] = {}
    for t in itertools.chain(module.parameters(), module.buffers()):
        meta = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta
    return copy.deepcopy(module, memo)


class _ShapeRecorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.shapes: dict[str, tuple[int, ...]] = {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            self.shapes[n.name] = tuple(out.shape)
        return out


def node_shapes(gm: fx.GraphModule, input_shape: tuple[int, ...], caller: str) -> dict[str, tuple[int, ...]]:
    """Output shape of every tensor-valued node of ``gm`` for an input of ``input_shape``.

    Runs on a meta copy (free); falls back to a real zero input for ops without meta kernels.
    """
    param = next(itertools.chain(gm.parameters(), gm.buffers()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    try:
        meta = meta_copy(gm).eval()
        rec = _ShapeRecorder(meta)
        rec.run(torch.zeros(input_shape, dtype=dtype, device="meta"))
        return rec.shapes
    except (NotImplementedError, RuntimeError):
        pass
    device = param.device if param is not None else torch.device("cpu")
    real = copy.deepcopy(gm).eval()
    rec = _ShapeRecorder(real)
    try:
        with torch.no_grad():
            rec.run(torch.zeros(input_shape, dtype=dtype, device=device))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        size = "x".join(str(s) for s in input_shape[-2:])
        raise InputError(
            f"{caller}: the model fails on a {size} input ({first}); pass input_size=(H, W), the size it was trained on"
        ) from None
    return rec.shapes


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` (e.g. ``"classifier.1"``) by ``module``."""
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def where(node: fx.Node) -> str:
    """How to name a graph node in an error: the module path, or the call in forward()."""
    if node.op == "call_module":
        return f"'{node.target}'"
    if node.op in ("call_function", "call_method"):
        name = getattr(node.target, "__name__", str(node.target))
        return f"{name}() in forward() (node '{node.name}')"
    return f"'{node.name}'"


def first_in_channels(model: nn.Module, default: int = 3) -> int:
    """Input channels of the first convolution (or Linear-free guess ``default``)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return default
