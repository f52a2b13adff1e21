"""Bilinear ConvTranspose2d upsampling: kernel values, equality with F.interpolate, alignment."""

import pytest
import torch
import torch.nn.functional as F

from fcnkit.models.upsample import BilinearUpsample, bilinear_kernel, upsample_alignment


def test_bilinear_kernel_factor_2_hand_computed():
    # FCN's upsample_filt(4): centre 1.5, tent 1 - |x - 1.5| / 2 = [0.25, 0.75, 0.75, 0.25]
    k = bilinear_kernel(2, 2)
    tent = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert k.shape == (2, 2, 4, 4)
    assert torch.equal(k[0, 0], tent[:, None] * tent[None, :])
    assert torch.equal(k[1, 1], k[0, 0])
    assert k[0, 1].abs().sum() == 0 and k[1, 0].abs().sum() == 0  # no mixing between channels


def test_bilinear_kernel_odd_factor_and_odd_size():
    # factor 3: size 5, centre 2: [1/3, 2/3, 1, 2/3, 1/3]
    t = bilinear_kernel(3, 1)[0, 0, 2]
    assert torch.allclose(t, torch.tensor([1 / 3, 2 / 3, 1, 2 / 3, 1 / 3]))
    # factor 2, integer-centred size 3: [0.5, 1, 0.5]
    assert torch.equal(bilinear_kernel(2, 1, size=3)[0, 0, 1], torch.tensor([0.5, 1.0, 0.5]))


@pytest.mark.parametrize("factor", [2, 8, 16, 32])
@pytest.mark.parametrize("learnable", [False, True])
def test_equals_interpolate_away_from_borders(factor, learnable):
    torch.manual_seed(factor)
    up = BilinearUpsample(3, factor, learnable).double()
    assert up.kernel_size == (2 * factor, 2 * factor) and up.stride == (factor, factor) and up.crop_start == factor // 2
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    y = up(x)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert y.shape == ref.shape == (2, 3, 5 * factor, 6 * factor)
    inner = (slice(None), slice(None), slice(factor, -factor), slice(factor, -factor))
    assert (y[inner] - ref[inner]).abs().max() <= 1e-12
    assert (y - ref).abs().max() > 1e-3  # zeros border: the edges do differ (the test can fail)


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_replicate_border_equals_interpolate_everywhere(factor):
    up = BilinearUpsample(2, factor, border="replicate").double()
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert (up(x) - ref).abs().max() <= 1e-12


def test_same_as_plain_conv_transpose_with_padding():
    # the explicit crop equals ConvTranspose2d(kernel 2f, stride f, padding f // 2)
    f = 4
    up = BilinearUpsample(3, f, learnable=True).double()
    x = torch.randn(1, 3, 4, 5, dtype=torch.float64)
    ref = F.conv_transpose2d(x, up.weight, stride=f, padding=f // 2)
    assert torch.equal(up(x), ref)


def test_integer_shift_centres_tents_on_cells():
    # shift 0: cell j sits on output f*j, so output f*j reproduces the input exactly
    assert upsample_alignment(4, 0) == (7, 3)
    up = BilinearUpsample(1, 4, shift=0).double()
    x = torch.randn(1, 1, 3, 3, dtype=torch.float64)
    y = up(x)
    assert torch.allclose(y[..., ::4, ::4], x, atol=1e-12)
    assert torch.allclose(y[..., 2, 0], (x[..., 0, 0] + x[..., 1, 0]) / 2, atol=1e-12)  # halfway


def test_alignment_rejects_quarter_shift():
    with pytest.raises(ValueError):
        upsample_alignment(4, 0.25)


def test_fixed_is_frozen_and_depthwise_learnable_is_full():
    fixed, learned = BilinearUpsample(5, 8), BilinearUpsample(5, 8, learnable=True)
    assert not fixed.weight.requires_grad and fixed.weight.shape == (5, 1, 16, 16)
    assert learned.weight.requires_grad and learned.weight.shape == (5, 5, 16, 16)
    x = torch.randn(1, 5, 3, 3)
    assert torch.allclose(fixed(x), learned(x), atol=1e-6)


@pytest.mark.parametrize("factor,shift", [(2, None), (8, None), (8, 0.0), (4, 2.5), (2, -0.5), (16, -1.0), (1, -1.0)])
def test_fixed_replicate_fast_path_equals_the_transposed_conv(factor, shift):
    fixed = BilinearUpsample(3, factor, shift=shift, border="replicate").double()
    conv = BilinearUpsample(3, factor, learnable=True, shift=shift, border="replicate").double()
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    size = (4 * factor, 5 * factor - 1)
    assert fixed._interpolated(x, *size) is not None
    assert (fixed(x, size) - conv(x, size)).abs().max() <= 1e-12
