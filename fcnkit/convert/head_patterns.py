"""Recognising the parts of a classifier head in a torch.fx graph, for :func:`~fcnkit.convert.convolutionalize`.

Which node is the flatten (or the ``x.mean((2, 3))`` that pools and flattens at once), which
adaptive pool precedes it, and which nodes after it act on each feature independently.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["is_flatten", "is_mean_flatten", "mean_dims", "is_elementwise", "softmax_dim", "pool_kind"]

# Layers that act on each feature independently: they commute with flatten, so they stay as they are.
_ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Dropout,
    nn.AlphaDropout,
    nn.Identity,
)
_ELEMENTWISE_FUNCTIONS = {
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.selu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    F.softplus,
    F.dropout,
    F.sigmoid,
    F.tanh,
}
_ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "contiguous", "clone"}
_SOFTMAX_MODULES = (nn.Softmax, nn.LogSoftmax)
_SOFTMAX_FUNCTIONS = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
_FLATTEN_FUNCTIONS = {torch.flatten, torch.reshape}
_FLATTEN_METHODS = {"flatten", "view", "reshape"}


def is_flatten(node: fx.Node, shapes) -> bool:
    """Whether ``node`` flattens a ``[B, C, H, W]`` map into ``[B, C*H*W]`` (module, function or method)."""
    src = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    if src is None or len(shapes.get(src.name, ())) != 4 or node.name not in shapes:
        return False
    b, c, h, w = shapes[src.name]
    if shapes[node.name] != (b, c * h * w):
        return False
    if node.op == "call_module":
        return isinstance(node.graph.owning_module.get_submodule(node.target), nn.Flatten)
    if node.op == "call_function":
        return node.target in _FLATTEN_FUNCTIONS
    return node.op == "call_method" and node.target in _FLATTEN_METHODS


def mean_dims(node: fx.Node):
    """``(dims, keepdim)`` when ``node`` is ``x.mean(dims)`` / ``torch.mean(x, dims)``, else None."""
    if not (
        (node.op == "call_method" and node.target == "mean")
        or (node.op == "call_function" and node.target is torch.mean)
    ):
        return None
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    if isinstance(dims, int):
        dims = (dims,)
    dims = tuple(sorted(d % 4 for d in dims)) if dims is not None else None
    return (dims, bool(keep)) if dims == (2, 3) else None


def is_mean_flatten(node: fx.Node) -> bool:
    """Whether ``node`` is ``x.mean((2, 3))`` without keepdim: a global average pool and a flatten in one."""
    dims = mean_dims(node)
    return dims is not None and not dims[1]


def is_elementwise(node: fx.Node, module) -> bool:
    """Whether ``node`` (``module`` when it calls one) acts on each feature alone, so it commutes with flatten."""
    if module is not None:
        return isinstance(module, _ELEMENTWISE_MODULES)
    if node.op == "call_function":
        return node.target in _ELEMENTWISE_FUNCTIONS
    return node.op == "call_method" and node.target in _ELEMENTWISE_METHODS


def softmax_dim(node: fx.Node, module):
    """The ``dim`` of a softmax / log-softmax node, else None."""
    if isinstance(module, _SOFTMAX_MODULES):
        return module.dim
    if (node.op == "call_function" and node.target in _SOFTMAX_FUNCTIONS) or (
        node.op == "call_method" and node.target in ("softmax", "log_softmax")
    ):
        return node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    return None


def pool_kind(node: fx.Node, gm: fx.GraphModule):
    """'avg' / 'max' when ``node`` is an adaptive (or keepdim-mean) pool, else None."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return {nn.AdaptiveAvgPool2d: "avg", nn.AdaptiveMaxPool2d: "max"}.get(type(module))
    if node.op == "call_function" and node.target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
        return "avg" if node.target is F.adaptive_avg_pool2d else "max"
    return "avg" if mean_dims(node) == ((2, 3), True) else None
