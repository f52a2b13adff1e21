"""The graph rewrites of :func:`~fcnkit.convert.convolutionalize`: Linear -> Conv2d (weights copied in
flatten order), BatchNorm1d -> BatchNorm2d, Softmax onto the class axis, and the flatten (with the
adaptive pool before it) replaced so the head sees the 4-D feature map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils import skip_init

from fcnkit.convert._fx import set_submodule, where
from fcnkit.convert.head_patterns import is_mean_flatten, pool_kind
from fcnkit.errors import InputError

__all__ = ["replace_linear", "replace_batchnorm", "set_softmax_dim", "rewrite_entry"]


def replace_linear(gm: fx.GraphModule, node: fx.Node, chw) -> None:
    """Replace the Linear at ``node`` by a conv whose ``(h, w)`` kernel covers ``chw`` (1x1 when None)."""
    linear = gm.get_submodule(node.target)
    c, h, w = chw if chw is not None else (linear.in_features, 1, 1)
    p = linear.weight
    # skip_init: no random initialisation of weights that are overwritten at once (seconds for VGG)
    conv = skip_init(
        nn.Conv2d, c, linear.out_features, (h, w), bias=linear.bias is not None, device=p.device, dtype=p.dtype
    )
    with torch.no_grad():
        # flatten order of [C, h, w] is C-major: the Linear's input index is c*h*w + y*w + x
        conv.weight.copy_(p.reshape(linear.out_features, c, h, w))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    conv.weight.requires_grad_(p.requires_grad)
    if conv.bias is not None:
        conv.bias.requires_grad_(linear.bias.requires_grad)
    conv.train(linear.training)
    set_submodule(gm, node.target, conv)


def replace_batchnorm(gm: fx.GraphModule, node: fx.Node, _) -> None:
    """Replace the BatchNorm1d at ``node`` by a BatchNorm2d with the same state and mode."""
    bn = gm.get_submodule(node.target)
    ref = bn.weight if bn.affine else bn.running_mean
    factory = {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}
    new = nn.BatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, **factory)
    new.load_state_dict(bn.state_dict())
    new.train(bn.training)
    set_submodule(gm, node.target, new)


def set_softmax_dim(gm: fx.GraphModule, node: fx.Node, _) -> None:
    """Make the softmax at ``node`` act on dim 1, the class axis of the score map."""
    if node.op == "call_module":
        set_submodule(gm, node.target, type(gm.get_submodule(node.target))(dim=1))
    elif len(node.args) > 1:
        node.args = (node.args[0], 1, *node.args[2:])
    else:
        node.kwargs = {**node.kwargs, "dim": 1}


def rewrite_entry(gm: fx.GraphModule, entry: fx.Node, shapes, pool: str) -> None:
    """Remove the flatten (and rewrite the pool before it) so the head sees the 4-D map."""
    graph = gm.graph
    if is_mean_flatten(entry):  # x.mean((2, 3)): a global average pool and a flatten in one
        src = entry.args[0]
        hw = shapes[src.name][2:]
        new = _insert_pool(graph, entry, src, "avg", hw, (1, 1)) if pool == "window" else src
        entry.replace_all_uses_with(new)
        graph.erase_node(entry)
        return
    src = entry.args[0]
    kind = pool_kind(src, gm) if len(src.users) == 1 and src.args and isinstance(src.args[0], fx.Node) else None
    entry.replace_all_uses_with(src)
    graph.erase_node(entry)
    if kind is None:
        return
    x = src.args[0]
    in_hw, out_hw = shapes[x.name][2:], shapes[src.name][2:]
    if in_hw == out_hw:  # the identity at the native size (AlexNet, VGG): drop it
        src.replace_all_uses_with(x)
        graph.erase_node(src)
        return
    if out_hw == (1, 1) and pool == "none":
        src.replace_all_uses_with(x)
        graph.erase_node(src)
        return
    if out_hw != (1, 1) and (in_hw[0] % out_hw[0] or in_hw[1] % out_hw[1]):
        raise InputError(
            f"convolutionalize: {where(src)} pools the {in_hw[0]}x{in_hw[1]} feature map to {out_hw[0]}x{out_hw[1]}, "
            "which no fixed pooling window reproduces; convert at an input_size whose feature map is a multiple of "
            "the pooled size (e.g. the native 224)"
        )
    new = _insert_pool(graph, src, x, kind, in_hw, out_hw)
    src.replace_all_uses_with(new)
    graph.erase_node(src)


def _insert_pool(graph: fx.Graph, before: fx.Node, x: fx.Node, kind: str, in_hw, out_hw) -> fx.Node:
    """A fixed pool equal to the adaptive one at the native size: global -> h x w window, stride 1."""
    if out_hw == (1, 1):
        kernel, stride = tuple(in_hw), 1
    else:
        kernel = (in_hw[0] // out_hw[0], in_hw[1] // out_hw[1])
        stride = kernel
    fn = F.avg_pool2d if kind == "avg" else F.max_pool2d
    with graph.inserting_before(before):
        return graph.call_function(fn, (x, kernel), {"stride": stride})
