"""Patchwise training equals whole-image training for valid nets (float64), and where it does not."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnkit.errors import InputError
from fcnkit.geometry import Geometry
from fcnkit.models import build_model
from fcnkit.training.equivalence import (
    cell_targets,
    equivalent_patch_batch,
    valid_geometry,
)
from fcnkit.training.losses import pixelwise_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _allconv(**kw):
    return build_model(
        "allconv",
        **{
            "num_classes": 3,
            "in_channels": 2,
            "output": "coarse",
            "padding": "valid",
            "norm": "none",
            "width": 4,
            **kw,
        },
    )


def _dilated():
    # kernels 5/3/3/1, a dilation, average pooling and a stride-2 conv: stride 4, receptive field 18
    return nn.Sequential(
        nn.Conv2d(2, 6, 5),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 8, 3, dilation=2),
        nn.ReLU(),
        nn.Conv2d(8, 5, 3, stride=2),
        nn.ReLU(),
        nn.Conv2d(5, 3, 1),
    )


def _eval_bn():
    m = _allconv(norm="batch", downsample="strided")
    for bn in (x for x in m.modules() if isinstance(x, nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return m.eval()


NETS = {  # name: (model factory, image size, expected stride)
    "allconv-maxpool-s8": (lambda: _allconv(), (62, 71), 8),
    "allconv-strided-only-s8": (lambda: _allconv(downsample="strided-only", depth=2), (75, 83), 8),  # rf 59
    "dilated-avgpool-s4": (_dilated, (37, 30), 4),
    "allconv-strided-eval-bn-s8": (_eval_bn, (46, 54), 8),
}


def _grads(model, loss):
    return torch.autograd.grad(loss, list(model.parameters()))


@pytest.mark.parametrize("name", list(NETS))
def test_patch_batch_gives_the_whole_image_loss_and_gradient_fp64(name):
    factory, (h, w), stride = NETS[name]
    torch.manual_seed(0)
    model = factory().double()
    image = torch.randn(2, h, w, dtype=torch.float64)
    mask = torch.randint(0, 3, (h, w))
    geometry = valid_geometry(model, 2)
    c = int(geometry.offset[0])  # the centre pixel of cell (0, 0): an ignored cell
    mask[c, c] = 255
    assert geometry.stride == (stride, stride)
    patches, labels = equivalent_patch_batch(model, image, mask)
    out = model(image[None])
    cells = out.shape[-2] * out.shape[-1]
    r = geometry.size
    assert patches.shape == (cells, 2, *r) and labels.shape == (cells,) and cells > 1
    assert (labels == 255).any() and (labels != 255).any()
    targets = cell_targets(mask, geometry, tuple(out.shape[-2:]))
    whole = F.cross_entropy(out, targets[None], reduction="sum", ignore_index=255)
    patchwise = F.cross_entropy(model(patches).flatten(1), labels, reduction="sum", ignore_index=255)
    assert torch.allclose(whole, patchwise, rtol=1e-12)
    for gw, gp in zip(_grads(model, whole), _grads(model, patchwise)):
        assert ((gw - gp).abs().max() / gw.abs().max()).item() <= 1e-10
    # the mean loss of fcnkit (normalised by labelled cells) agrees too
    mean_whole = pixelwise_loss(out, targets[None])
    mean_patch = pixelwise_loss(model(patches), labels[:, None, None])
    assert torch.allclose(mean_whole, mean_patch, rtol=1e-12)


def test_patches_are_the_receptive_field_windows_at_the_stride():
    model = _allconv()
    image = torch.arange(2 * 46 * 54, dtype=torch.float32).reshape(2, 46, 54)
    patches, _ = equivalent_patch_batch(model, image, torch.zeros(46, 54, dtype=torch.int64))
    # grid (46 - 38) // 8 + 1 = 2 rows, (54 - 38) // 8 + 1 = 3 columns; row-major
    assert patches.shape == (6, 2, 38, 38)
    assert torch.equal(patches[4], image[:, 8:46, 8:46]) and torch.equal(patches[2], image[:, 0:38, 16:54])


def test_cell_targets_hand_computed():
    g = Geometry(size=(4, 4), stride=(2, 2), offset=(1.5, 1.5))  # centres 1.5, 3.5 -> pixels 1, 3
    mask = torch.arange(36).reshape(6, 6)
    assert cell_targets(mask, g).tolist() == [[7, 9], [19, 21]]
    # a grid reaching beyond the mask: those centres are ignored
    assert cell_targets(mask, g, (3, 2)).tolist() == [[7, 9], [19, 21], [31, 33]]
    assert cell_targets(mask, g, (4, 1)).tolist() == [[7], [19], [31], [255]]


@pytest.mark.parametrize(
    "model,pattern",
    [
        (lambda: _allconv(padding="same"), "pads its input"),
        (lambda: _allconv(output="dense"), "pads or resamples|use its coarse output"),
        (lambda: _allconv(norm="batch").train(), "BatchNorm in training mode"),
        (lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.Dropout(0.5)).train(), "Dropout in training mode"),
        (
            lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.AdaptiveAvgPool2d(1)),
            "whole image|coarse output|pads or resamples",
        ),
    ],
)
def test_refuses_nets_where_it_does_not_hold(model, pattern):
    with pytest.raises(InputError, match=pattern):
        equivalent_patch_batch(model(), torch.zeros(2, 64, 64), torch.zeros(64, 64, dtype=torch.int64))


def test_refuses_bad_inputs():
    model = _allconv()
    with pytest.raises(InputError, match="smaller than the receptive field 38x38"):
        equivalent_patch_batch(model, torch.zeros(2, 30, 64), torch.zeros(30, 64, dtype=torch.int64))
    with pytest.raises(InputError, match="does not match image"):
        equivalent_patch_batch(model, torch.zeros(2, 40, 40), torch.zeros(40, 41, dtype=torch.int64))
    with pytest.raises(InputError, match=r"\[C, H, W\]"):
        equivalent_patch_batch(model, torch.zeros(1, 2, 40, 40), torch.zeros(40, 40, dtype=torch.int64))


def test_same_padded_net_differs_at_the_border_and_agrees_inside():
    """The docstring's diagram, measured: a same-padded allconv (stride 8, offset 3.5, rf 38) on
    72x72. Cell i's window spans pixels 8i-15 .. 8i+22; its aligned patch is 40 pixels from 8i-16
    (zero-filled outside the image), whose output cell 2 is cell i. Interior cells (patch inside
    the image: 2 <= i <= 6) agree exactly; every border cell differs."""
    torch.manual_seed(0)
    model = _allconv(padding="same").double()
    image = torch.randn(2, 72, 72, dtype=torch.float64)
    whole = model(image[None])[0]
    assert whole.shape[-2:] == (9, 9) and model.offset == 3.5
    padded = F.pad(image, (16, 24, 16, 24))
    diff = torch.zeros(9, 9, dtype=torch.float64)
    for i in range(9):
        for j in range(9):
            patch = padded[:, 8 * i : 8 * i + 40, 8 * j : 8 * j + 40]
            diff[i, j] = (model(patch[None])[0, :, 2, 2] - whole[:, i, j]).abs().max()
    interior = torch.zeros(9, 9, dtype=torch.bool)
    interior[2:7, 2:7] = True
    assert diff[interior].max() <= 1e-12 * whole.abs().max()
    assert diff[~interior].min() > 1e-6  # every border cell sees padding the patch does not
