"""Backbones: taps and feature_info, and initialisation from local torchvision state-dict files."""

import pytest
import torch
import torchvision

from fcnkit.errors import InputError, MissingFileError
from fcnkit.models.backbones import build_backbone
from fcnkit.models.registry import build_model


@pytest.mark.parametrize(
    "name,channels",
    [
        ("allconv", [128, 128, 128]),
        ("vgg16", [256, 512, 4096]),
        ("resnet18", [128, 256, 512]),
        ("resnet50", [512, 1024, 2048]),
    ],
)
def test_taps_match_feature_info(name, channels):
    with torch.device("meta"):
        net = build_backbone(name, in_channels=2).eval()
        taps = net(torch.empty(1, 2, 64, 96))
    assert net.feature_info.channels == channels
    assert net.feature_info.strides == [8, 16, 32]
    assert [tuple(t.shape) for t in taps] == [(1, c, 64 // s, 96 // s) for c, s in zip(channels, (8, 16, 32))]


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(state, path)
    return path, state


def test_resnet18_file_from_torchvision_loads(resnet18_file):
    path, state = resnet18_file
    model = build_model("fcn8s", num_classes=3, backbone="resnet18", backbone_weights=str(path))
    assert torch.equal(model.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(model.backbone.bn1.running_var, state["bn1.running_var"])
    assert "backbone_weights" not in model.fcnkit_spec["kwargs"]
    assert model.fcnkit_spec["kwargs"]["backbone"] == "resnet18"


def test_one_channel_input_sums_rgb_filters(resnet18_file):
    path, state = resnet18_file
    model = build_model("fcn32s", num_classes=3, in_channels=1, backbone="resnet18", backbone_weights=path)
    assert torch.allclose(model.backbone.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))


def test_mismatched_file_names_the_architecture_it_fits(resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(InputError) as exc:
        build_model("fcn8s", num_classes=3, backbone="resnet50", backbone_weights=path)
    msg = str(exc.value)
    assert str(path) in msg and "backbone='resnet18'" in msg and "missing" in msg


def test_unreadable_files(tmp_path):
    with pytest.raises(MissingFileError, match="nope.pth"):
        build_model("fcn8s", num_classes=3, backbone="resnet18", backbone_weights=tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pth.*state_dict"):
        build_model("fcn8s", num_classes=3, backbone="resnet18", backbone_weights=junk)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(InputError, match="list.pth: not a state dict"):
        build_model("fcn8s", num_classes=3, backbone="resnet18", backbone_weights=listed)


def test_allconv_backbone_round_trip(tmp_path):
    torch.manual_seed(0)
    source = build_model("fcn8s", num_classes=3)
    path = tmp_path / "allconv.safetensors"
    from safetensors.torch import save_file

    save_file(source.backbone.state_dict(), str(path))
    loaded = build_model("fcn16s", num_classes=5, backbone_weights=path)
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.backbone.state_dict().values(), source.backbone.state_dict().values())
    )


def test_vgg16_file_becomes_fc6_fc7_convolutions(tmp_path):
    """The one vgg16 build of this module: torchvision's classifier reshaped into fc6/fc7 (FCN init)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = torchvision.models.vgg16(weights=None).state_dict()
    path = tmp_path / "vgg16.safetensors"
    save_file(state, str(path))
    model = build_model("fcn8s", num_classes=3, backbone="vgg16", backbone_weights=path)
    backbone = model.backbone
    del model
    assert torch.equal(backbone.features[28].weight, state["features.28.weight"])
    assert torch.equal(backbone.fc6[0].weight, state["classifier.0.weight"].view(4096, 512, 7, 7))
    assert torch.equal(backbone.fc7[0].weight[:, :, 0, 0], state["classifier.3.weight"])
    assert torch.equal(backbone.fc6[0].bias, state["classifier.0.bias"])
    # the Linear on a flattened 512x7x7 pool5 block equals fc6 at the cell whose window is that block
    pool5 = torch.randn(1, 512, 7, 7)
    linear = torch.nn.functional.linear(pool5.flatten(1), state["classifier.0.weight"], state["classifier.0.bias"])
    conv = backbone.fc6[0](pool5)[:, :, 3, 3]
    assert torch.allclose(linear, conv, atol=1e-4)


def test_feature_info_validates_its_entries():
    from fcnkit.models.features import FeatureInfo, FeatureTap

    with pytest.raises(ValueError, match="channels must be a whole number"):
        FeatureTap("a", "a", 0, 8, 0.0)
    with pytest.raises(ValueError, match="non-decreasing strides"):
        FeatureInfo([FeatureTap("a", "a", 4, 16, 0.0), FeatureTap("b", "b", 4, 8, 0.0)])
    with pytest.raises(ValueError, match="unique"):
        FeatureInfo([FeatureTap("a", "a", 4, 8, 0.0), FeatureTap("a", "b", 4, 16, 0.0)])
    info = FeatureInfo([FeatureTap("a", "x.a", 4, 8, 3.5), FeatureTap("b", "x.b", 8, 16, 7.5)])
    assert info.get("b").channels == 8 and info[1:].strides == [16]
