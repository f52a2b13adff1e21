"""replace_downsampling keeps every feature map's grid size, both ways, for any input size."""

import itertools

import pytest
import torch
import torchvision
from torch import nn

from fcnkit import replace_downsampling
from fcnkit.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")


SIZES = [(131, 97), (64, 65), (37, 50)]  # odd sizes are where ceil/floor choices show


def feature_shapes(model: nn.Module, size, names) -> dict:
    """Output shape of each named module for a zero input of ``size`` (hooks; real compute, tiny sizes)."""
    shapes, hooks = {}, []

    def record(name):
        def hook(module, args, out):  # returns None: a hook's return value would replace the output
            shapes.setdefault(name, tuple(out.shape))

        return hook

    for n in names:
        hooks.append(model.get_submodule(n).register_forward_hook(record(n)))
    with torch.no_grad():
        shapes["output"] = tuple(model(torch.zeros(1, 3, *size)).shape)
    for h in hooks:
        h.remove()
    return shapes


def test_ceil_mode_pool_after_stride1_conv_matches_strided_conv():
    """The derivation in fcnkit.convert.downsampling: ceil(n/s) cells both ways, for every size."""
    for k, s, p, d in itertools.product([1, 3, 7], [2, 3, 4], [0, 1, 3], [1, 2]):
        if p > k // 2:
            continue
        w = torch.zeros(1, 1, k, k, dtype=torch.float64)  # float64: no oneDNN set-up per new shape (slow)
        for h in range(max(1, d * (k - 1) + 1 - 2 * p), 30):
            x = torch.zeros(1, 1, h, h + 1, dtype=torch.float64)
            strided = nn.functional.conv2d(x, w, stride=s, padding=p, dilation=d)
            dense = nn.functional.conv2d(x, w, stride=1, padding=p, dilation=d)
            pooled = nn.functional.max_pool2d(dense, s, s, ceil_mode=True)
            assert pooled.shape == strided.shape, (h, k, s, p, d)


@pytest.fixture(scope="module")
def vgg():
    return torchvision.models.vgg11(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def resnet():
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def test_vgg_pools_to_strided_convs(vgg):
    strided = replace_downsampling(vgg, "strided")
    pools = [i for i, m in enumerate(vgg.features) if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5
    for i in pools:
        conv = strided.features[i]
        assert isinstance(conv, nn.Conv2d) and conv.in_channels == conv.out_channels
        assert (conv.kernel_size, conv.stride) == ((2, 2), (2, 2))
    assert [conv.out_channels for conv in (strided.features[i] for i in pools)] == [64, 128, 256, 512, 512]
    assert isinstance(vgg.features[pools[0]], nn.MaxPool2d)  # the input is not modified
    assert torch.equal(strided.features[0].weight, vgg.features[0].weight)  # other weights are kept
    names = [f"features.{i}" for i in pools]
    for size in SIZES:
        assert feature_shapes(strided, size, names) == feature_shapes(vgg, size, names)


def test_vgg_round_trip_back_to_pools(vgg):
    back = replace_downsampling(replace_downsampling(vgg, "strided"), "avgpool")
    names = [f"features.{i}" for i, m in enumerate(vgg.features) if isinstance(m, nn.MaxPool2d)]
    block = back.get_submodule(names[0])
    assert isinstance(block[0], nn.Conv2d) and block[0].stride == (1, 1) and isinstance(block[1], nn.AvgPool2d)
    for size in SIZES:
        assert feature_shapes(back, size, names) == feature_shapes(vgg, size, names)


def test_resnet_both_ways(resnet):
    names = ["maxpool", "layer1", "layer2", "layer3", "layer4"]
    strided = replace_downsampling(resnet, "strided")
    assert isinstance(strided.maxpool, nn.Conv2d) and strided.maxpool.out_channels == 64
    assert (strided.maxpool.kernel_size, strided.maxpool.stride, strided.maxpool.padding) == ((3, 3), (2, 2), (1, 1))
    pooled = replace_downsampling(resnet, "maxpool")  # strided stem, strided block convs and 1x1 shortcuts
    changed = [n for n, m in pooled.named_modules() if isinstance(m, nn.Sequential) and isinstance(m[-1], nn.MaxPool2d)]
    assert changed == [
        "conv1",
        "layer2.0.conv1",
        "layer2.0.downsample.0",
        "layer3.0.conv1",
        "layer3.0.downsample.0",
        "layer4.0.conv1",
        "layer4.0.downsample.0",
    ]
    assert torch.equal(pooled.conv1[0].weight, resnet.conv1.weight)  # nothing re-initialised
    assert resnet.conv1.stride == (2, 2)
    for size in SIZES:
        ref = feature_shapes(resnet, size, names)
        assert feature_shapes(strided, size, names) == ref
        assert feature_shapes(pooled, size, names) == ref


def test_layers_filter_and_ceil_mode_pool():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.MaxPool2d(3, 2, ceil_mode=True), nn.Conv2d(4, 5, 3, stride=2), nn.AvgPool2d(2)
    )
    only = replace_downsampling(net, "strided", layers=["1"], input_size=32)
    assert isinstance(only[3], nn.AvgPool2d) and isinstance(only[1][1], nn.Conv2d)
    for h in range(12, 40):
        x = torch.zeros(1, 3, h, h + 3)
        with torch.no_grad():
            assert only(x).shape == net(x).shape, h
    back = replace_downsampling(net, "maxpool", layers=["2"])
    assert isinstance(back[2][1], nn.MaxPool2d) and back[2][1].ceil_mode


def test_errors(vgg):
    with pytest.raises(InputError, match="kind="):
        replace_downsampling(vgg, "dilated")
    with pytest.raises(InputError, match="no MaxPool2d/AvgPool2d"):
        replace_downsampling(nn.Sequential(nn.Conv2d(3, 3, 3)), "strided")
    with pytest.raises(InputError, match=r"did you mean 'features\."):
        replace_downsampling(vgg, "strided", layers=["features.3"])
    with pytest.raises(InputError, match="padding"):
        replace_downsampling(nn.Sequential(nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)), "strided", input_size=16)


@pytest.mark.parametrize("downsample,kind", [("maxpool", "strided"), ("strided", "maxpool"), ("avgpool", "strided")])
def test_fcnkit_allconv_both_ways(downsample, kind):
    from fcnkit.models import build_model

    net = build_model("allconv", num_classes=3, width=4, downsample=downsample, output="coarse").eval()
    new = replace_downsampling(net, kind, input_size=32)
    if kind == "strided":
        assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in new.modules())
    else:
        assert sum(isinstance(m, nn.MaxPool2d) and m.ceil_mode for m in new.modules()) == 3  # one per stage
    for h, w in [(32, 32), (37, 45), (61, 50)]:
        x = torch.zeros(1, 3, h, w)
        with torch.no_grad():
            assert new(x).shape == net(x).shape
