"""Third-party segmentation models (random weights, nothing downloaded) through geometry and tiling.

torchvision's fcn_resnet50 / deeplabv3_resnet50 / lraspp_mobilenet_v3_large return ``{"out": ...}``
resized back to the input size; smp's Unet / FPN return a tensor. Geometry must be whole (stride 1),
tiling must equal whole-image inference where nothing global is in the net, and be refused (one
line) where something is (ASPP pooling, squeeze-excite, GroupNorm, align_corners resizes).
"""

import pytest
import segmentation_models_pytorch as smp
import torch
import torchvision.models.segmentation as tvseg
from torch import nn

import fcnkit
from fcnkit.errors import InputError


def fcn_resnet50():
    return tvseg.fcn_resnet50(weights=None, weights_backbone=None, num_classes=3, aux_loss=False)


def deeplabv3_resnet50():
    return tvseg.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=3, aux_loss=False)


def lraspp():
    return tvseg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)


def smp_unet():
    return smp.Unet("resnet18", encoder_weights=None, classes=3)


def smp_fpn():
    return smp.FPN("resnet18", encoder_weights=None, classes=3)


class TupleOutput(nn.Module):
    """A model returning ``(logits, aux)``: the first item is the score map."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        y = self.inner(x)["out"]
        return y, y.mean()


# (builder, receptive field, alignment, input multiple, words of a blocker or None)
CASES = {
    "fcn_resnet50": (fcn_resnet50, 458, 8, 8, None),
    "deeplabv3_resnet50": (deeplabv3_resnet50, 1034, 8, 8, "global"),
    "lraspp_mobilenet_v3_large": (lraspp, 698, 16, 16, "global"),
    "smp_unet_resnet18": (smp_unet, 592, 32, 32, None),
    "smp_fpn_resnet18": (smp_fpn, 638, 32, 32, "whole image"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_geometry_of_resized_output_models_is_whole(name):
    build, rf, align, multiple, blocker = CASES[name]
    model = build().eval()
    g = fcnkit.receptive_field(model)
    assert g.stride == (1, 1) and g.size == (rf, rf), (g.size, g.stride)
    assert g.align == (align, align) and g.input_multiple == (multiple, multiple)
    if blocker is None:
        assert g.exact_tiling, g.blockers
    else:
        assert any(blocker in b for b in g.blockers), g.blockers
        with pytest.raises(InputError, match="cannot equal whole-image"):
            fcnkit.predict(model, torch.randn(3, 2 * multiple, 4 * rf // multiple * multiple), tile=2 * rf)


@pytest.mark.parametrize(
    "build, size, tile",
    [
        (fcn_resnet50, (40, 496), 480),  # dict output; halo 232: windows [0, 480) and [16, 496)
        (smp_unet, (64, 704), 672),  # halo 320: windows [0, 672) and [32, 704)
    ],
)
def test_tiled_equals_whole_for_third_party_models(build, size, tile):
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(3, *size)
    whole = fcnkit.predict(model, x)
    tiled = fcnkit.predict(model, x, tile=tile)
    assert whole.shape == (3, *size)
    assert (tiled - whole).abs().max().item() <= 1e-5


def test_tuple_output_is_read_as_its_first_item():
    inner = fcn_resnet50().eval()
    model = TupleOutput(inner)
    g, h = fcnkit.receptive_field(model), fcnkit.receptive_field(inner)
    assert (g.size, g.stride, g.offset, g.align, g.blockers) == (h.size, h.stride, h.offset, h.align, h.blockers)
    x = torch.randn(3, 48, 64)
    assert torch.equal(fcnkit.predict(model, x), fcnkit.predict(inner, x))


def test_tiling_an_image_that_is_not_a_multiple_of_the_resize_is_refused():
    with pytest.raises(InputError, match="multiples of 8x8") as info:
        fcnkit.predict(fcn_resnet50().eval(), torch.randn(3, 80, 570), tile=480)
    assert "\n" not in str(info.value)
