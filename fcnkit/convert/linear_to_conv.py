"""Convolutionalization (FCN paper, Sec. 3.1): a classifier's fully connected layers are
convolutions whose kernels cover their whole input, so the classifier can be recast as a net that
takes any input size and returns a grid of class scores in one pass.

::

    classifier (native size, e.g. 224):   trunk -> [B,C,h,w] -> flatten -> Linear -> ... -> [B,K]
    FCN (any size >= native):             trunk -> [B,C,H',W'] -> Conv(h x w) -> Conv 1x1 -> [B,K,H'-h+1,W'-w+1]

    input     |<---------- native window (e.g. 224) ---------->|
              |<- stride ->|<---------- next window ---------->|
    output    cell (0,0)    cell (0,1)          (cell = classifier on its window)

Which cells equal which crops. Without padding (every conv/pool ``padding=0``) cell ``(i, j)``
on a larger input is *exactly* the classifier on the native-size crop whose top-left pixel is
``offset - (size - 1) / 2 + (i, j) * stride`` (``fcnkit.receptive_field(fcn)``; ``size`` is then
the native size, up to rows a floor-rounding pool never reads). With padding (AlexNet, VGG,
ResNet) the classifier on a crop zero-pads the crop's border at every padded layer, while the
FCN computes those positions from the real neighbouring pixels; so no cell equals its crop's
classification exactly, and the cells' receptive field is larger than the native window (VGG16:
404 px for a 224 window). What does hold is translation equivariance: an *interior* cell, whose
whole receptive field lies inside the image, is the same whatever surrounds it (the same number
on any larger canvas, shifted by whole strides), while a *border* cell whose receptive field
reaches past the image edge sees the image's zero padding instead (tested in tests/test_convert.py).

The graph is found with torch.fx (torchvision's AlexNet/VGG/ResNet call ``torch.flatten`` in
forward) and shapes come from a meta-device pass at the native size, so nothing is computed.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from fcnkit.convert._fx import (
    as_size,
    first_in_channels,
    node_shapes,
    trace,
    where,
)
from fcnkit.convert.head_patterns import is_elementwise, is_flatten, is_mean_flatten, softmax_dim
from fcnkit.convert.head_rewrites import replace_batchnorm, replace_linear, rewrite_entry, set_softmax_dim
from fcnkit.errors import InputError

__all__ = ["convolutionalize", "ConvolutionalizedNet"]

_CALLER = "convolutionalize"
POOL_OPTIONS = ("window", "none")


class ConvolutionalizedNet(nn.Module):
    """A classifier recast as a fully convolutional net (see :func:`convolutionalize`).

    ``forward(x[B, C, H, W]) -> scores[B, K, h, w]`` for any ``H, W >= input_size``. At the
    native ``input_size`` (and ``pool="window"``) ``h = w = 1`` and the scores equal the
    classifier's logits; on larger inputs cell ``(i, j)`` is the classifier applied to the
    native-size window whose position the model's receptive-field geometry gives
    (``fcnkit.receptive_field``): exactly for nets without padding, up to border effects otherwise.

    ``body`` is a ``torch.fx.GraphModule`` with the classifier's module paths (containers become
    plain modules: use ``body.get_submodule("classifier.1")``, not ``body.classifier[1]``).
    """

    def __init__(self, body: nn.Module, input_size: tuple[int, int], pool: str = "window"):
        super().__init__()
        self.body = body
        self.input_size = tuple(input_size)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, fx.Proxy):  # keep the net traceable (geometry analysis traces it)
            _check_input(x, self.input_size)
        return self.body(x)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, pool={self.pool!r}"


def _check_input(x: torch.Tensor, size: tuple[int, int]) -> None:
    if x.dim() != 4:
        raise InputError(
            f"convolutionalized net: input of shape {tuple(x.shape)} is not [B, C, H, W]; add a batch dimension"
        )
    if x.shape[-2] < size[0] or x.shape[-1] < size[1]:
        h, w = size
        raise InputError(
            f"convolutionalized net: input {x.shape[-2]}x{x.shape[-1]} is smaller than the native size {h}x{w} "
            f"(the minimum); resize/pad to at least {h}x{w}"
        )


def convolutionalize(
    model: nn.Module, input_size: int | tuple[int, int] | None = None, *, pool: str = "window"
) -> ConvolutionalizedNet:
    """Recast a classifier as an equivalent fully convolutional net; returns a new module.

    * The first ``Linear`` after a flatten (``nn.Flatten``, ``torch.flatten``, ``x.view(B, -1)``)
      becomes an ``h x w`` convolution whose kernel is the Linear weight reshaped in flatten order
      ``(C, h, w)``, where ``[C, h, w]`` is the feature map at the native ``input_size``; later
      ``Linear`` layers become 1x1 convolutions, ``BatchNorm1d`` after them ``BatchNorm2d``.
      Activations and Dropout stay; ``Softmax(dim=1 or -1)`` keeps acting on the class axis.
    * An adaptive pool before the flatten: dropped where it is the identity at the native size
      (AlexNet, VGG); a global pool (ResNet) becomes, with ``pool="window"`` (default), an
      ``h x w`` stride-1 pool so each cell equals the classifier on a native-size window and the
      native-size output is 1x1, or with ``pool="none"`` it is dropped so each feature-map cell is
      scored on its own (``h x w`` cells at the native size, their mean = the logits for a linear head);
      an integer down-scaling (e.g. 12x12 -> 6x6) becomes the equivalent fixed pool.

    ``input_size`` defaults to 224 for torchvision classifiers (299 for Inception3) and is
    required for other models. The input model is not modified (deep copy); the result keeps its
    train/eval modes and dtype. Unsupported graphs raise :class:`fcnkit.errors.InputError` naming
    the module and what would be needed.
    """
    if pool not in POOL_OPTIONS:
        raise InputError(
            f"pool={pool!r} is not one of {POOL_OPTIONS}; use 'window' (classifier on each native window) or 'none'"
        )
    size = _native_size(model, input_size)
    # every Linear is either replaced by a new conv (copying its weights) or conversion fails, so
    # the deep copy may share their (large: VGG's fc6 is 100 M numbers) parameters instead of cloning them
    shared = {id(p): p for m in model.modules() if isinstance(m, nn.Linear) for p in m.parameters(recurse=False)}
    net = copy.deepcopy(model, shared)
    gm = trace(net, _CALLER)
    shapes = node_shapes(gm, (1, first_in_channels(net), *size), _CALLER)
    entry = _find_entry(gm, shapes)
    actions = _plan_head(gm, entry, shapes)
    rewrite_entry(gm, entry, shapes, pool)
    for action, node, arg in actions:
        action(gm, node, arg)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    out = ConvolutionalizedNet(gm, size, pool)
    # not .train(): that would overwrite per-module modes (e.g. BN frozen in eval inside a training net)
    out.training = gm.training = model.training
    return out


def _native_size(model: nn.Module, input_size) -> tuple[int, int]:
    if input_size is None:
        if type(model).__module__.startswith("torchvision.models"):
            input_size = 299 if type(model).__name__ == "Inception3" else 224
        else:
            raise InputError(
                f"convolutionalize: {type(model).__name__} has no known native input size; "
                "pass input_size=(H, W), the image size the classifier was trained on"
            )
    return as_size(input_size, "input_size")


# --- finding the flatten --------------------------------------------------------------------


def _find_entry(gm: fx.GraphModule, shapes) -> fx.Node:
    entries = [n for n in gm.graph.nodes if is_flatten(n, shapes) or is_mean_flatten(n)]
    linears = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.Linear)]
    if not entries:
        if not linears:
            raise InputError(
                f"convolutionalize: {type(gm).__name__} has no flatten and no Linear layer: it is already fully "
                "convolutional, nothing to convert"
            )
        raise InputError(
            f"convolutionalize: Linear {where(linears[0])} is not fed by a flatten of a [B, C, H, W] feature map into "
            "[B, C*H*W] (nn.Flatten, torch.flatten(x, 1) or x.view(x.size(0), -1)); only such classifier heads can be "
            "converted"
        )
    if len(entries) > 1:
        raise InputError(
            f"convolutionalize: found {len(entries)} flattens ({', '.join(where(n) for n in entries)}); only a single "
            "classifier head (one flatten followed by Linear layers) can be converted"
        )
    return entries[0]


# --- planning the head ----------------------------------------------------------------------


def _plan_head(gm: fx.GraphModule, entry: fx.Node, shapes) -> list:
    """Walk every node downstream of the flatten; return the rewrites, or raise for unsupported ones."""
    if is_mean_flatten(entry):
        c = shapes[entry.name][1]
        chw = (c, 1, 1)
    else:
        chw = shapes[entry.args[0].name][1:]
    state = {entry: chw}  # node -> (C, h, w) still to be folded into a kernel, or None once done
    actions, seen_linear = [], set()
    for node in gm.graph.nodes:
        inputs = node.all_input_nodes
        if node is entry or not any(i in state for i in inputs) or node.op == "output":
            continue
        if len(inputs) != 1:
            raise InputError(
                f"convolutionalize: {where(node)} combines the flattened features with other tensors; only a chain of "
                "Linear, BatchNorm1d, activation, Dropout and Softmax layers may follow the flatten"
            )
        pending = state[inputs[0]]
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(module, nn.Linear):
            if node.target in seen_linear:
                raise InputError(
                    f"convolutionalize: Linear {where(node)} is called twice; give each call its own layer"
                )
            seen_linear.add(node.target)
            actions.append((replace_linear, node, pending))
            state[node] = None
        elif isinstance(module, nn.BatchNorm1d):
            if pending is not None:
                raise InputError(
                    f"convolutionalize: BatchNorm1d {where(node)} normalises each flattened (channel, position) "
                    "feature on its own, which no convolution reproduces; put it after the first Linear or use "
                    "BatchNorm2d before the flatten"
                )
            actions.append((replace_batchnorm, node, None))
            state[node] = None
        elif is_elementwise(node, module):
            state[node] = pending
        elif softmax_dim(node, module) is not None and pending is None:
            if softmax_dim(node, module) not in (1, -1):
                raise InputError(f"convolutionalize: {where(node)} is not over the class axis (dim=1); use dim=1")
            actions.append((set_softmax_dim, node, None))
            state[node] = None
        else:
            what = type(module).__name__ if module is not None else getattr(node.target, "__name__", str(node.target))
            raise InputError(
                f"convolutionalize: cannot convert {where(node)} ({what}) after the flatten at {where(entry)}: only "
                "Linear, BatchNorm1d, elementwise activations, Dropout and Softmax(dim=1) may follow it; move it "
                "before the flatten"
            )
    others = [
        n
        for n in gm.graph.nodes
        if n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.Linear) and n.target not in seen_linear
    ]
    if others:
        raise InputError(
            f"convolutionalize: Linear {where(others[0])} is not part of the classifier head after the flatten at "
            f"{where(entry)}; only Linear layers that follow the flatten can be converted"
        )
    if not seen_linear:
        raise InputError(f"convolutionalize: no Linear layer follows the flatten at {where(entry)}; nothing to convert")
    return actions
