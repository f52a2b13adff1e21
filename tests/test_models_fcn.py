"""FCN-32s/16s/8s: any input size, zero output at init, skip fusion and upsampling alignment."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnkit.geometry import check_feature_info, receptive_field
from fcnkit.models.fcn import FCN
from fcnkit.models.features import FeatureInfo, FeatureTap
from fcnkit.models.registry import build_model

SIZES = [(37, 53), (65, 97)]


@pytest.fixture(scope="module")
def vgg_fcn8s():
    """The one real vgg16 model of this module (134 M parameters)."""
    torch.manual_seed(0)
    return build_model("fcn8s", num_classes=3, backbone="vgg16").eval()


# resnet18 fcn32s/fcn16s run real numbers in the alignment test below; shapes of all on "meta"
@pytest.mark.parametrize(
    "name,backbone", [("fcn32s", "allconv"), ("fcn16s", "allconv"), ("fcn8s", "allconv"), ("fcn8s", "resnet18")]
)
def test_any_size_and_zero_at_init(name, backbone):
    model = build_model(name, num_classes=3, backbone=backbone).eval()
    with torch.no_grad():
        for h, w in SIZES + [(1, 1)]:
            y = model(torch.randn(2, 3, h, w))
            assert y.shape == (2, 3, h, w)
            assert torch.count_nonzero(y) == 0


def test_resnet50_fcn8s_learned_upsampling_zero_at_init():
    model = build_model("fcn8s", num_classes=3, backbone="resnet50", learn_upsampling=True).eval()
    assert all(m.weight.requires_grad for m in (model.upscore2, model.upscore_pool4, model.upscore))
    with torch.no_grad():
        y = model(torch.randn(1, 3, 37, 53))
    assert y.shape == (1, 3, 37, 53) and torch.count_nonzero(y) == 0


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("backbone", ["vgg16", "resnet50", "resnet18"])
def test_shapes_on_meta_device(name, backbone):
    with torch.device("meta"):
        model = build_model(name, num_classes=21, backbone=backbone).eval()
        for h, w in SIZES + [(1, 1), (500, 375)]:
            assert model(torch.empty(1, 3, h, w)).shape == (1, 21, h, w)


def test_vgg16_fcn8s_sizes_zero_and_paper_layers(vgg_fcn8s):
    with torch.no_grad():
        for h, w in SIZES + [(1, 1)]:
            y = vgg_fcn8s(torch.randn(1, 3, h, w))
            assert y.shape == (1, 3, h, w) and torch.count_nonzero(y) == 0
    fc6, fc7 = vgg_fcn8s.backbone.fc6, vgg_fcn8s.backbone.fc7
    assert fc6[0].kernel_size == (7, 7) and fc6[0].padding == (3, 3) and isinstance(fc6[2], nn.Dropout)
    assert fc7[0].kernel_size == (1, 1) and isinstance(fc7[2], nn.Dropout)
    for layer in (vgg_fcn8s.score_fr, vgg_fcn8s.score_pool4, vgg_fcn8s.score_pool3):
        assert torch.count_nonzero(layer.weight) == 0 and torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize("skips", [0, 1])
def test_vgg16_fcn32s_fcn16s_heads_on_the_same_backbone(vgg_fcn8s, skips):
    model = FCN(vgg_fcn8s.backbone, 3, skips=skips).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 37, 53))
    assert y.shape == (1, 3, 37, 53) and torch.count_nonzero(y) == 0


@pytest.mark.parametrize("backbone", ["vgg16", "resnet18", "resnet50", "allconv"])
def test_declared_taps_match_the_traced_geometry(backbone):
    with torch.device("meta"):
        net = build_model("fcn8s", num_classes=2, backbone=backbone).backbone.eval()
    check_feature_info(net)  # raises on any tap whose stride/offset is not what the trace gives


def test_vgg16_fc7_sees_404_pixels():
    with torch.device("meta"):
        vgg = build_model("fcn8s", num_classes=2, backbone="vgg16").backbone.eval()
    g = receptive_field(nn.Sequential(vgg.features, vgg.fc6, vgg.fc7))
    assert g.size == (404, 404)  # pool5 sees 212 pixels, fc6 (7x7 at stride 32) 6 * 32 more


def test_a_wrong_tap_is_caught():
    with torch.device("meta"):
        net = build_model("fcn8s", num_classes=2, backbone="resnet18").backbone.eval()
    taps = list(net.feature_info)
    taps[1] = FeatureTap(taps[1].name, taps[1].module, taps[1].channels, 16, 4.0)
    net.feature_info = FeatureInfo(taps)
    with pytest.raises(ValueError, match="layer3: declared stride 16, offset 4.0"):
        check_feature_info(net)


def _randomise_scores(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for name in ("score_fr", "score_pool4", "score_pool3"):
            if hasattr(model, name):
                getattr(model, name).weight.normal_()
                getattr(model, name).bias.normal_()


def _scores(model, x):
    h, w = x.shape[-2:]
    taps = model.backbone(F.pad(x, (0, -w % 32, 0, -h % 32)))
    return (
        model.score_pool3(taps[0]) if hasattr(model, "score_pool3") else None,
        (model.score_pool4(taps[1]) if hasattr(model, "score_pool4") else None),
        model.score_fr(taps[2]),
    )


def _up_half(s, f):  # cells centred on f*i + (f-1)/2: the align_corners=False convention
    return F.interpolate(s, scale_factor=f, mode="bilinear", align_corners=False)


def _up_int(s, f):  # cells centred on f*i: tents on the cells, edge cells repeated after the last
    n, m = s.shape[-2:]
    y = F.interpolate(s, size=((n - 1) * f + 1, (m - 1) * f + 1), mode="bilinear", align_corners=True)
    return F.pad(y, (0, f - 1, 0, f - 1), mode="replicate")


@pytest.mark.parametrize("backbone,up", [("allconv", _up_half), ("resnet18", _up_int)])
@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
def test_fusion_and_upsampling_alignment(name, backbone, up):
    model = build_model(name, num_classes=2, backbone=backbone).eval().double()
    _randomise_scores(model)
    x = torch.randn(1, 3, 37, 53, dtype=torch.float64)
    with torch.no_grad():
        s8, s16, s32 = _scores(model, x)
        if name == "fcn32s":
            ref = up(s32, 32)
        elif name == "fcn16s":
            ref = up(up(s32, 2) + s16, 16)
        else:
            ref = up(up(up(s32, 2) + s16, 2) + s8, 8)
        y = model(x)
    assert y.abs().max() > 0.1
    assert torch.allclose(y, ref[..., :37, :53], atol=1e-9)


def test_train_step_changes_scores():
    torch.manual_seed(0)
    model = build_model("fcn8s", num_classes=3, in_channels=1).train()
    x, target = torch.randn(2, 1, 37, 53), torch.randint(0, 3, (2, 37, 53))
    loss = F.cross_entropy(model(x), target)
    loss.backward()
    # zero score layers still get gradients (the features are not zero), the backbone not yet
    assert model.score_fr.weight.grad.abs().sum() > 0 and model.score_pool3.weight.grad.abs().sum() > 0
    assert model.upscore.weight.grad is None  # fixed bilinear upsampling


def test_vgg16_spec_rebuilds_the_same_architecture():
    # (the checkpoint round trip itself is tested on the cheap backbones: a vgg16 one writes 540 MB)
    with torch.device("meta"):
        model = build_model("fcn16s", num_classes=5, backbone="vgg16", learn_upsampling=True)
        again = build_model(model.fcnkit_spec["name"], **model.fcnkit_spec["kwargs"])
    assert model.fcnkit_spec["kwargs"] == {
        "num_classes": 5,
        "in_channels": 3,
        "backbone": "vgg16",
        "learn_upsampling": True,
    }
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
