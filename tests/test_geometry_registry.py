"""Every registry model: analytic receptive field == gradient probe.

FCN heads on the torchvision backbones: FCN-8s/VGG-16 is probed always, the other eight (~3 s
each) only with FCNKIT_FULL_PROBE=1 (all agree when run); their analytic geometry is checked in any
case. Models are built on the meta device: geometry needs no weights."""

import os

import pytest
import torch

from fcnkit.geometry import receptive_field
from fcnkit.models import registry  # noqa: E402

ALLCONV_VARIANTS = [dict(padding=p, output=o) for p in ("same", "valid") for o in ("dense", "coarse")] + [
    dict(downsample=d, padding="valid") for d in ("avgpool", "strided", "strided-only", "none")
]
HEAVY = [(head, b) for head in ("fcn8s", "fcn16s", "fcn32s") for b in ("vgg16", "resnet18", "resnet50")]


def build(name, **kw):
    with torch.device("meta"):
        return registry.build_model(name, num_classes=21, **kw).eval()


def agree(model):
    a, p = receptive_field(model), receptive_field(model, method="probe")
    assert not a.blockers, a.blockers
    assert (p.size, p.stride, p.offset, p.align) == (a.size, a.stride, a.offset, a.align)
    return a


@pytest.mark.parametrize("name", registry.list_models())
def test_every_registry_model_with_defaults(name):
    agree(build(name))


@pytest.mark.parametrize("kw", ALLCONV_VARIANTS, ids=lambda kw: "-".join(kw.values()))
def test_allconv_variants(kw):
    g = agree(build("allconv", **kw))
    if kw.get("output") == "coarse":
        assert g.stride == g.align  # the score grid itself: one cell per stride
    elif kw.get("downsample") != "none":
        assert g.stride == (1, 1) and g.align[0] > 1  # dense: stride 1, tiles still align to the trunk


@pytest.mark.parametrize("head, backbone", HEAVY)
def test_fcn_heads_on_torchvision_backbones(head, backbone):
    model = build(head, backbone=backbone)
    a = receptive_field(model)
    assert a.stride == (1, 1) and a.align == (32, 32) and not a.blockers
    trunk = {"vgg16": 212, "resnet18": 435, "resnet50": 427}[backbone]
    assert a.size[0] > trunk  # the head (fc6-style conv, upsampling) widens the trunk's field
    if os.environ.get("FCNKIT_FULL_PROBE") or (head, backbone) == ("fcn8s", "vgg16"):
        agree(model)
