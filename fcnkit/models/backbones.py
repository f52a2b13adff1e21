"""Backbones for FCNs: ``forward(x) -> [tap8, tap16, tap32]``, feature maps at strides 8, 16, 32.

Each backbone has ``feature_info``: a validated :class:`~fcnkit.models.features.FeatureInfo`, one
``FeatureTap(name, module, channels, stride, offset)`` per tap (timm style). ``offset`` is the
input pixel on which the centre of cell 0 lies ("same" padding), so cell ``i`` of a tap
is centred on ``offset + i * stride``; the FCN head aligns its upsamplings with it.

=========  =======================================  ==================  ========================
name       taps (stride 8 / 16 / 32)                channels            cell centres
=========  =======================================  ==================  ========================
vgg16      pool3 / pool4 / fc7 (pool5 -> fc6, fc7)  256 / 512 / 4096    s*i + (s - 1) / 2
resnet18   layer2 / layer3 / layer4                 128 / 256 / 512     s*i
resnet50   layer2 / layer3 / layer4                 512 / 1024 / 2048   s*i
allconv    stage3 / stage4 / stage5                 128 / 128 / 128     s*i + (s - 1) / 2
=========  =======================================  ==================  ========================

VGG16: ``features`` is torchvision's ``vgg16().features`` (same indices, so its state dict loads);
``fc6`` / ``fc7`` are the classifier's first two Linear layers as convolutions (7x7 and 1x1, each
followed by ReLU and Dropout), as in the FCN paper. fc6 uses padding 3 (the FCN paper uses none
and pads the input by 100 pixels instead): the score grid stays the pool5 grid, cell for cell,
centred where pool5's cells are, and inputs as small as one pool5 cell work; border cells see
zeros beyond pool5. ResNets: torchvision's ``resnet18`` / ``resnet50`` without ``avgpool`` / ``fc``
(same attribute names, so their state dicts load); every conv and the stem max-pool is centred
(odd kernel, padding ``(k - 1) / 2``), so cells are centred on ``s*i``. allconv: the all-conv body
of :mod:`fcnkit.models.allconv` with 5 max-pools (width 16, BatchNorm), cheap enough for CPU.

``backbone_weights=PATH`` initialises a backbone from a LOCAL torchvision state-dict file (never a
download): ``torch.save(torchvision.models.resnet18(weights=...).state_dict(), PATH)`` or a
``.safetensors`` file. For vgg16, ``classifier.0`` / ``classifier.3`` are reshaped into fc6 / fc7
(the FCN paper's initialisation); classification heads (``fc``, ``classifier.6``) are ignored.
With ``in_channels != 3`` the first conv is adapted (1 channel: sum over RGB; otherwise RGB
repeated and scaled by ``3 / in_channels``). For allconv the file is the backbone's own state dict.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch
import torchvision
from torch import nn

from fcnkit.errors import InputError, MissingFileError
from fcnkit.models.allconv import allconv_body
from fcnkit.models.features import FeatureInfo, FeatureTap
from fcnkit.models.registry import check_choice

__all__ = ["BACKBONES", "VGG16Backbone", "ResNetBackbone", "AllConvBackbone", "build_backbone", "load_backbone_weights"]

BACKBONES = ("allconv", "vgg16", "resnet18", "resnet50")
_VGG_POOLS = {"pool3": 16, "pool4": 23}  # indices of the max-pools in torchvision's vgg16().features


def _first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    if in_channels == conv.in_channels:
        return conv
    k, s, p = conv.kernel_size, conv.stride, conv.padding
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        (k[0], k[1]),
        (s[0], s[1]),
        p if isinstance(p, str) else (p[0], p[1]),
        bias=conv.bias is not None,
    )


class VGG16Backbone(nn.Module):
    """VGG16 with FCN's fc6 (7x7 conv, padding 3) and fc7 (1x1 conv); taps pool3, pool4, fc7."""

    def __init__(self, in_channels: int = 3, dropout: float = 0.5):
        super().__init__()
        # features only: building torchvision's full vgg16 would allocate a 400 MB classifier
        self.features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
        self.features[0] = _first_conv(self.features[0], in_channels)
        for m in self.features.modules():  # torchvision's VGG initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)  # type: ignore[arg-type]  # VGG convs have biases
        self.fc6 = nn.Sequential(nn.Conv2d(512, 4096, 7, padding=3), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.fc7 = nn.Sequential(nn.Conv2d(4096, 4096, 1), nn.ReLU(inplace=True), nn.Dropout(dropout))
        for fc in (self.fc6[0], self.fc7[0]):  # as torchvision initialises the Linear layers they replace
            assert isinstance(fc, nn.Conv2d) and fc.bias is not None  # built just above
            nn.init.normal_(fc.weight, 0, 0.01)
            nn.init.zeros_(fc.bias)
        # checked against the traced geometry in tests (fcnkit.geometry.check_feature_info)
        self.feature_info = FeatureInfo(
            [
                FeatureTap("pool3", f"features.{_VGG_POOLS['pool3']}", 256, 8, 3.5),
                FeatureTap("pool4", f"features.{_VGG_POOLS['pool4']}", 512, 16, 7.5),
                FeatureTap("fc7", "fc7", 4096, 32, 15.5),
            ]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _VGG_POOLS.values():
                taps.append(x)
        return taps + [self.fc7(self.fc6(x))]


class ResNetBackbone(nn.Module):
    """torchvision ResNet-18/50 without its classification head; taps layer2, layer3, layer4."""

    def __init__(self, arch: str = "resnet18", in_channels: int = 3):
        super().__init__()
        net = getattr(torchvision.models, arch)(weights=None)
        self.conv1 = _first_conv(net.conv1, in_channels)
        if self.conv1 is not net.conv1:
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1, self.relu, self.maxpool = net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        width = 1 if arch == "resnet18" else 4  # Bottleneck expansion
        self.feature_info = FeatureInfo(
            FeatureTap(f"layer{k}", f"layer{k}", 64 * 2 ** (k - 1) * width, 2 ** (k + 1), 0.0) for k in (2, 3, 4)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        c8 = self.layer2(x)
        c16 = self.layer3(c8)
        return [c8, c16, self.layer4(c16)]


class AllConvBackbone(nn.Module):
    """The all-conv body with 5 downsamplings; taps stage3, stage4, stage5 (strides 8, 16, 32)."""

    def __init__(self, in_channels: int = 3, width: int = 16, depth: int = 2, norm: str = "batch"):
        super().__init__()
        self.features, info, _ = allconv_body(
            in_channels, width=width, depth=depth, stages=5, downsample="maxpool", padding="same", norm=norm
        )
        self.feature_info = info[3:]
        self._taps = {t.name for t in self.feature_info}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for name, layer in self.features.named_children():
            x = layer(x)
            if name in self._taps:
                taps.append(x)
        return taps


def build_backbone(name: str, *, in_channels: int = 3, weights: str | os.PathLike | None = None) -> nn.Module:
    """Build backbone ``name`` (one of :data:`BACKBONES`), optionally initialised from ``weights``."""
    check_choice("backbone", name, BACKBONES)
    backbone: nn.Module
    if name == "vgg16":
        backbone = VGG16Backbone(in_channels)
    elif name.startswith("resnet"):
        backbone = ResNetBackbone(name, in_channels)
    else:
        backbone = AllConvBackbone(in_channels)
    if weights is not None:
        load_backbone_weights(backbone, name, weights)
    return backbone


def load_backbone_weights(backbone: nn.Module, name: str, path: str | os.PathLike) -> None:
    """Load a local state-dict file into ``backbone`` (a backbone ``name``); InputError says what fits."""
    path = Path(path)
    state = _read_state_dict(path)
    state = _to_backbone_keys(state, name, path)
    expected = backbone.state_dict()
    first = "features.0.weight" if name == "vgg16" else "conv1.weight"
    if first in state and first in expected and state[first].shape[1] != expected[first].shape[1]:
        state[first] = _adapt_input_conv(state[first], expected[first].shape[1])
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        guess = _guess_arch(path, name)
        detail = "; ".join(
            f"{what} {len(keys)} key(s), e.g. '{keys[0]}'"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape of", wrong))
            if keys
        )
        fix = (
            f"this file fits backbone='{guess}', pass that instead"
            if guess
            else f"save torchvision.models.{name}().state_dict() with torch.save"
            if name != "allconv"
            else "save the state dict of an 'allconv' FCN backbone (model.backbone.state_dict())"
        )
        raise InputError(f"backbone_weights {path}: not a state dict of backbone '{name}' ({detail}); {fix}")
    backbone.load_state_dict(state, strict=True)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise MissingFileError(
            f"backbone_weights {path}: file not found; "
            "give a local torchvision state-dict file (.pth/.pt or .safetensors)"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line fix
        if path.suffix != ".safetensors" and zipfile.is_zipfile(path):
            reason = "it holds pickled Python objects, not only tensors (a whole model?)"
        elif path.suffix == ".safetensors":
            reason = f"not a valid safetensors file: {str(exc).strip()[:80]}"
        else:
            reason = "not a file written by torch.save (name safetensors files *.safetensors)"
        raise InputError(
            f"backbone_weights {path}: cannot read a state dict ({reason}); save one with "
            "torch.save(model.state_dict(), PATH) or safetensors.torch.save_file"
        ) from None
    if isinstance(state, dict) and set(state) == {"state_dict"} and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(
            f"backbone_weights {path}: not a state dict (a dict of tensors); "
            "save one with torch.save(model.state_dict(), PATH)"
        )
    return dict(state)


def _to_backbone_keys(state: dict[str, torch.Tensor], name: str, path: Path) -> dict[str, torch.Tensor]:
    """Map torchvision classification keys to backbone keys (drop heads, reshape VGG fc layers)."""
    if name == "vgg16":
        out = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        for src, dst, shape in (
            ("classifier.0", "fc6.0", (4096, 512, 7, 7)),
            ("classifier.3", "fc7.0", (4096, 4096, 1, 1)),
        ):
            w, b = state.get(f"{src}.weight"), state.get(f"{src}.bias")
            if w is not None and b is not None and w.numel() == _prod(shape):
                out[f"{dst}.weight"], out[f"{dst}.bias"] = w.reshape(shape), b
            elif w is not None:  # wrong size: keep it so the shape check reports it
                out[f"{dst}.weight"] = w
        return out
    if name.startswith("resnet"):
        return {k: v for k, v in state.items() if not k.startswith("fc.")}
    return dict(state)


def _adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB first-conv weights for ``in_channels`` inputs (timm's rule: sum for 1, repeat + rescale otherwise)."""
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeat = -(-in_channels // weight.shape[1])
    return weight.repeat(1, repeat, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


def _guess_arch(path: Path, tried: str) -> str | None:
    """The torchvision backbone whose keys and shapes the file matches exactly, if any (built on "meta")."""
    state = _read_state_dict(path)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for name in ("vgg16", "resnet18", "resnet50"):
        if name == tried:
            continue
        with torch.device("meta"):
            full = getattr(torchvision.models, name)(weights=None).state_dict()
        if {k: tuple(v.shape) for k, v in full.items() if not k.startswith(("fc.", "classifier.6"))} == {
            k: s for k, s in shapes.items() if not k.startswith(("fc.", "classifier.6"))
        }:
            return name
    return None


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out
