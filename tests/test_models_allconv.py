"""All-convolutional nets: output sizes, strides of each downsampling kind, valid nets, alignment."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnkit.errors import InputError
from fcnkit.models.blocks import conv_block, downsample
from fcnkit.models.registry import build_model

KINDS = ["maxpool", "avgpool", "strided", "strided-only", "none"]


def _net(**kw):
    kw.setdefault("width", 4)
    kw.setdefault("depth", 2)  # the hand-computed sizes below are for 2 convs per stage
    return build_model("allconv", num_classes=3, in_channels=1, **kw).eval()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_dense_output_has_input_size(kind, padding):
    model = _net(downsample=kind, padding=padding, stages=2 if kind == "none" else 3)
    with torch.no_grad():
        for sk in model.skip_scores:  # make the skips count too
            nn.init.normal_(sk.weight)
        for h, w in [(37, 53), (65, 97), (1, 1)]:
            assert model(torch.randn(1, 1, h, w)).shape == (1, 3, h, w)


# coarse sizes, hand-computed for the default stem of 1 conv, then 3 stages of 2 convs:
#   maxpool/avgpool/strided, same: floor(n / 8);  strided-only, same: ceil(n / 2) three times;
#   receptive field, maxpool: 1 + 2 (stem) + 1 (pool) | + 2*2*2 + 2 | + 2*2*4 + 4 | + 2*2*8 = 66
#   strided-only: 1 + 2 (stem, stride 2) | + 2*2*2 | + 2*2*4 | + 2*2*8 = 59;  none: 1 + 7 * 2 = 15
#   valid: n -> (n - R) // 8 + 1
@pytest.mark.parametrize(
    "kind,padding,size,stride,rf",
    [
        ("maxpool", "same", (4, 6), 8, 66),
        ("avgpool", "same", (4, 6), 8, 66),
        ("strided", "same", (4, 6), 8, 66),
        ("strided-only", "same", (5, 7), 8, 59),
        ("none", "same", (37, 53), 1, 15),
        ("maxpool", "valid", (2, 5), 8, 66),
        ("strided-only", "valid", (3, 6), 8, 59),
    ],
)
def test_coarse_sizes_and_strides(kind, padding, size, stride, rf):
    model = _net(downsample=kind, padding=padding, output="coarse")
    h, w = (75, 100) if padding == "valid" else (37, 53)
    assert model(torch.randn(1, 1, h, w)).shape[-2:] == size
    assert model.stride == stride and model.receptive_field == rf


def test_pooling_layers_by_kind():
    def count(model, cls):
        return sum(isinstance(m, cls) for m in model.modules())

    assert count(_net(downsample="maxpool"), nn.MaxPool2d) == 3
    assert count(_net(downsample="avgpool"), nn.AvgPool2d) == 3
    for kind in ("strided", "strided-only"):
        model = _net(downsample=kind)
        assert count(model, nn.MaxPool2d) == count(model, nn.AvgPool2d) == 0
    strided = [
        m for m in _net(downsample="strided").features.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)
    ]
    assert len(strided) == 3 and all(m.kernel_size == (2, 2) and m.in_channels == m.out_channels for m in strided)
    only = [
        m for m in _net(downsample="strided-only").features.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)
    ]
    assert len(only) == 3 and all(m.kernel_size == (3, 3) for m in only)  # the preceding 3x3 convs took the stride
    convs = lambda m: sum(isinstance(c, nn.Conv2d) for c in m.features.modules())  # noqa: E731
    assert convs(_net(downsample="strided-only")) == convs(_net(downsample="maxpool")) == 7


@pytest.mark.parametrize("kind", ["maxpool", "avgpool", "strided", "strided-only"])
def test_valid_coarse_has_no_padding_anywhere(kind):
    model = _net(downsample=kind, padding="valid", output="coarse", norm="none")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            assert m.padding in (0, (0, 0)), m
    # cell (0, 0) depends on the input window [0, R) x [0, R) only
    r = model.receptive_field
    x = torch.randn(1, 1, r + 16, r + 16, requires_grad=True)
    model(x)[0, :, 0, 0].sum().backward()
    grad = x.grad[0, 0]
    assert grad[:r, :r].abs().sum() > 0
    assert grad[r:].abs().sum() == 0 and grad[:, r:].abs().sum() == 0


def test_valid_dense_padding_centres_cells_on_their_blocks():
    model = _net(padding="valid")
    # R = 66, S = 8: pad 29 on top so cell i (window starting at 8i - 29) is centred on 8i + 3.5
    assert model.offset == 32.5 and model.pad_before == 29
    assert model.offset - model.pad_before == (model.stride - 1) / 2
    assert model.dense_padding(37) == (29, 66 + 8 * 4 - 37 - 29)  # ceil(37 / 8) = 5 cells


def _coarse_twin(model, **kw):
    twin = _net(output="coarse", **kw)
    twin.load_state_dict(model.state_dict(), strict=False)
    return twin.eval()


def test_dense_same_equals_interpolated_coarse():
    torch.manual_seed(0)
    model = _net(skips=False)
    coarse = _coarse_twin(model)
    x = torch.randn(2, 1, 40, 56)  # divisible by 8: no internal padding
    ref = F.interpolate(coarse(x), scale_factor=8, mode="bilinear", align_corners=False)
    assert torch.allclose(model(x), ref, atol=1e-5)


def test_dense_valid_equals_interpolated_coarse_of_padded_input():
    torch.manual_seed(0)
    model = _net(padding="valid", skips=False)
    coarse = _coarse_twin(model, padding="valid")
    x = torch.randn(1, 1, 37, 45)
    (top, bottom), (left, right) = model.dense_padding(37), model.dense_padding(45)
    scores = coarse(F.pad(x, (left, right, top, bottom)))
    assert scores.shape[-2:] == (5, 6)  # ceil(37 / 8), ceil(45 / 8): every pixel has its cell
    ref = F.interpolate(scores, scale_factor=8, mode="bilinear", align_corners=False)[..., :37, :45]
    assert torch.allclose(model(x), ref, atol=1e-5)


def test_skips_start_at_zero():
    torch.manual_seed(0)
    with_skips = _net()
    without = _net(skips=False)
    without.load_state_dict(with_skips.state_dict(), strict=False)
    x = torch.randn(1, 1, 37, 53)
    assert torch.equal(with_skips(x), without(x))
    assert all(float(s.weight.detach().abs().sum()) == 0 for s in with_skips.skip_scores)


def test_learn_upsampling_flag():
    assert not _net().upsample.weight.requires_grad
    learned = _net(learn_upsampling=True)
    assert learned.upsample.weight.requires_grad and all(u.weight.requires_grad for u in learned.skip_upsamples)


def test_feature_info_and_norms():
    model = _net()
    assert [(f.name, f.channels, f.stride) for f in model.feature_info] == [
        ("stage0", 4, 1),
        ("stage1", 8, 2),
        ("stage2", 16, 4),
        ("stage3", 32, 8),
    ]
    assert any(isinstance(m, nn.GroupNorm) for m in _net(norm="group").modules())
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in _net(norm="none").modules())


def test_coarse_too_small_input_says_minimum():
    with pytest.raises(InputError, match="66x66"):
        _net(padding="valid", output="coarse")(torch.randn(1, 1, 40, 80))


def test_default_segmenter_size():
    model = build_model("allconv", num_classes=11, in_channels=1)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 80_000 <= trainable <= 300_000
    # 1 conv per stage: receptive field 1 + 2 + 1 | + 2*2 + 2 | + 2*4 + 4 | + 2*8 = 38
    assert (model.receptive_field, model.stride) == (38, 8)
    model.train()
    out = model(torch.randn(2, 1, 64, 84))
    assert out.shape == (2, 11, 64, 84)


@pytest.mark.parametrize("size", [(28, 28), (37, 53), (64, 84)])
def test_classifier_any_size_and_global_average(size):
    torch.manual_seed(0)
    model = build_model("allconv_cls", num_classes=10, in_channels=1, width=8).eval()
    x = torch.randn(3, 1, *size)
    logits, dense = model(x), model.forward_dense(x)
    assert logits.shape == (3, 10)
    assert dense.shape == (3, 10, size[0] // 4, size[1] // 4)
    assert torch.allclose(logits, dense.mean(dim=(2, 3)), atol=1e-6)


def test_classifier_minimum_size():
    model = build_model("allconv_cls", num_classes=10, in_channels=1, padding="valid", width=4).eval()
    assert model.min_input_size == 30  # 1 + 2 + 1 | + 2*2*2 + 2 | + 2*2*4
    assert model(torch.randn(1, 1, 30, 30)).shape == (1, 10)
    with pytest.raises(InputError, match="30x30"):
        model(torch.randn(1, 1, 28, 28))


def test_blocks():
    block = conv_block(3, 5, padding="valid", norm="none")
    assert block[0].padding == (0, 0) and block[0].bias is not None
    assert isinstance(downsample("maxpool", 4), nn.MaxPool2d)
    assert downsample("strided", 4)(torch.randn(1, 4, 9, 9)).shape == (1, 4, 4, 4)
    with pytest.raises(InputError, match="did you mean 'avgpool'"):
        downsample("avgpol", 4)


def test_torch_fx_traceable():
    """Coarse nets trace as they are; dense ones with BilinearUpsample as a leaf (its crop is size-dependent)."""
    import torch.fx as fx

    from fcnkit.models.upsample import BilinearUpsample

    class LeafUpsample(fx.Tracer):
        def is_leaf_module(self, m, name):
            return isinstance(m, BilinearUpsample) or super().is_leaf_module(m, name)

    x = torch.randn(1, 1, 70, 75)
    for model, tracer in [
        (_net(output="coarse", padding="valid"), fx.Tracer()),
        (_net(padding="valid"), LeafUpsample()),
    ]:
        traced = fx.GraphModule(model, tracer.trace(model))
        assert torch.allclose(traced(x), model(x))
