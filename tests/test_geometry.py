"""Receptive-field geometry: hand-computed nets, published torchvision values, analytic == probe."""

import pytest
import torch
import torch.nn.functional as F
import torchvision as tv
from torch import nn

from fcnkit.errors import InputError
from fcnkit.geometry import Geometry, receptive_field
from fcnkit.geometry.axis import Axis, conv_taps, interpolate_taps, transposed_taps


def conv(k, s=1, p=0, d=1, c_in=3, c_out=3):
    return nn.Conv2d(c_in, c_out, k, stride=s, padding=p, dilation=d)


def summary(model, **kw):
    g = receptive_field(model.eval(), **kw)
    return g.size[0], g.stride[0], g.offset[0]


# -- hand-computed chains: rf_out = rf + (k_eff - 1) * jump, jump *= s, centre += ((k_eff-1)/2 - p) * jump
@pytest.mark.parametrize(
    "layers, expected",
    [
        ([conv(3, p=1), conv(3, p=1)], (5, 1, 0)),
        ([conv(5, s=2)], (5, 2, 2)),
        ([conv(5, s=2), conv(3, d=2)], (13, 2, 6)),  # 5 + (5-1)*2, centre 2 + 2*2
        ([conv(3, p=1), nn.MaxPool2d(2)], (4, 2, 0.5)),
        ([conv(7, s=2, p=3), nn.MaxPool2d(3, 2, 1), conv(3, p=1)], (19, 4, 0)),  # ResNet stem + one conv
        ([conv(3, p=2, d=2), conv(3, p=4, d=4), conv(3, p=8, d=8)], (29, 1, 0)),  # 1 + 4 + 8 + 16
        ([conv(3, s=2, p=1), conv(2, s=2), nn.AvgPool2d(3, 1)], (13, 4, 5)),  # 3, 5, 13; centre 0, 1, 5
    ],
)
def test_hand_computed_chains(layers, expected):
    assert summary(nn.Sequential(*layers)) == expected


class Residual(nn.Module):
    """conv3 -> conv3 (stride 2) plus a strided 1x1 shortcut: rf 3 + (3 - 1) * 1 = 5, stride 2."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.short = conv(3, p=1), conv(3, s=2, p=1), conv(1, s=2)

    def forward(self, x):
        return self.b(F.relu(self.a(x))) + self.short(x)


class AsymmetricConcat(nn.Module):
    """Branches seeing [n-1, n+1] and [n, n+3]: the concat sees [n-1, n+3] -> size 5, offset 1."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.fuse = conv(3, p=1), conv(4), conv(1, c_in=6)

    def forward(self, x):
        return self.fuse(torch.cat([self.a(x), self.b(F.pad(x, (0, 3, 0, 3)))], dim=1))


class UpAfterDown(nn.Module):
    """conv3/s2 then x2 up (transposed k4 s2 p1, or bilinear): cell 0 sees [-3, 1], cell 1 [-1, 3],
    so relative to the cell the envelope is [-3, 2]: size 6, offset -0.5, stride 1, alignment 2."""

    def __init__(self, mode):
        super().__init__()
        self.down, self.mode = conv(3, s=2, p=1), mode
        self.up = nn.ConvTranspose2d(3, 3, 4, 2, 1)

    def forward(self, x):
        y = self.down(x)
        return self.up(y) if self.mode == "transposed" else F.interpolate(y, scale_factor=2, mode="bilinear")


class CornersUp(nn.Module):
    """conv3/s2 then x2 with align_corners=True to (n - 1) * 2 + 1: output o reads coarse o / 2, so
    even o see [o - 1, o + 1] and odd o [o - 2, o + 2]: envelope size 5, offset 0 - a resize that
    does not depend on the image size (no blocker)."""

    def __init__(self):
        super().__init__()
        self.down = conv(3, s=2, p=1)

    def forward(self, x):
        y = self.down(x)
        size = [(n - 1) * 2 + 1 for n in y.shape[-2:]]
        return F.interpolate(y, size=size, mode="bilinear", align_corners=True)


def test_align_corners_upsampling_of_fixed_ratio():
    g = receptive_field(CornersUp())
    assert (g.size, g.stride, g.offset, g.align, g.blockers) == ((5, 5), (1, 1), (0, 0), (2, 2), ())


def test_residual_block():
    assert summary(Residual()) == (5, 2, 0)


def test_concat_takes_the_union_of_windows():
    assert summary(AsymmetricConcat()) == (5, 1, 1)


@pytest.mark.parametrize("mode", ["transposed", "bilinear"])
def test_upsampling_back_to_stride_one(mode):
    g = receptive_field(UpAfterDown(mode))
    assert (g.size, g.stride, g.offset, g.align) == ((6, 6), (1, 1), (-0.5, -0.5), (2, 2))


def test_axis_algebra_by_hand():
    # transposed conv k4 s2 p1: output 2m reads inputs m-1, m; output 2m+1 reads m, m+1
    assert transposed_taps(4, 2, 1).taps == ((-1, 0), (0, 1))
    assert interpolate_taps(__import__("fractions").Fraction(1, 2), "bilinear").taps == ((-1, 0), (0, 1))
    a = Axis().apply(conv_taps(3, 2, 1)).apply(transposed_taps(4, 2, 1))
    assert (a.period, a.start, a.end) == (2, (-3, -1), (1, 3))
    # an upsample followed by the matching downsample collapses back to period 1
    b = Axis().apply(transposed_taps(2, 2, 0)).apply(conv_taps(2, 2, 0))
    assert (b.period, b.jump, b.start, b.end) == (1, 1, (0,), (0,))


def test_non_square_kernels_and_strides():
    g = receptive_field(nn.Sequential(nn.Conv2d(3, 3, (3, 5), stride=(1, 2), padding=(1, 0))))
    assert g.size == (3, 5) and g.stride == (1, 2) and g.offset == (0, 2)


def test_published_torchvision_values():
    with torch.device("meta"):  # no weights needed (nor their initialisation time)
        vgg16, alexnet, r18 = tv.models.vgg16(), tv.models.alexnet(), tv.models.resnet18().eval()
    vgg = receptive_field(vgg16.features)
    alex = receptive_field(alexnet.features)
    assert (vgg.size, vgg.stride) == ((212, 212), (32, 32))
    assert (alex.size, alex.stride) == ((195, 195), (32, 32))
    body = nn.Sequential(*list(r18.children())[:-2])
    assert receptive_field(body).size == (435, 435)  # the commonly quoted ResNet-18 value
    assert not receptive_field(body).blockers


def test_table_lists_layers_with_jump_and_rf():
    with torch.device("meta"):
        g = receptive_field(tv.models.vgg16().features)
    convs = [r for r in g.layers if r.op == "conv2d"]
    pools = [r for r in g.layers if r.op == "max_pool2d"]
    assert len(convs) == 13 and len(pools) == 5
    assert [p.rf[0] for p in pools] == [6, 16, 44, 100, 212]
    assert [p.jump[0] for p in pools] == [2, 4, 8, 16, 32]
    assert convs[0].kernel == (3, 3) and convs[0].padding == (1, 1) and pools[0].stride == (2, 2)
    text = g.table()
    assert "receptive field  212" in text and "stride           32" in text


class FCNLike(nn.Module):
    """Stride-8 trunk padded to a multiple of 8, a stride-4 skip, transposed-conv upsampling and crops."""

    def __init__(self, k=2):
        super().__init__()
        self.c1, self.c2, self.c3 = conv(3, p=1, c_out=4), conv(3, p=1, c_in=4, c_out=4), conv(3, p=1, c_in=4, c_out=4)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.score, self.skip = conv(1, c_in=4, c_out=k), conv(1, c_in=4, c_out=k)
        self.up2 = nn.ConvTranspose2d(k, k, 4, 2, bias=False)
        self.up4 = nn.ConvTranspose2d(k, k, 8, 4, bias=False)

    def forward(self, x):
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % 8, 0, (-h) % 8))
        a = self.pool(self.c2(self.pool(F.relu(self.c1(x)))))
        s = self.score(self.pool(self.c3(a)))
        u = self.up2(s)[..., 1 : 1 + a.shape[-2], 1 : 1 + a.shape[-1]] + self.skip(a)
        return self.up4(u)[..., 2 : 2 + x.shape[-2], 2 : 2 + x.shape[-1]][..., :h, :w]


@pytest.mark.parametrize(
    "make",
    [
        Residual,
        AsymmetricConcat,
        lambda: UpAfterDown("transposed"),
        lambda: UpAfterDown("bilinear"),
        FCNLike,
        CornersUp,
        lambda: nn.Sequential(conv(5, s=2), conv(3, d=2), nn.MaxPool2d(3, 2, ceil_mode=True)),
    ],
)
def test_probe_agrees_with_analytic(make):
    model = make().eval()
    a, p = receptive_field(model), receptive_field(model, method="probe")
    assert (p.size, p.stride, p.offset, p.align) == (a.size, a.stride, a.offset, a.align)


def test_probe_agrees_on_alexnet():
    p = receptive_field(tv.models.alexnet(weights=None).features, method="probe")
    assert (p.size, p.stride, p.offset) == ((195, 195), (32, 32), (31, 31))


class Head(nn.Module):
    def __init__(self, tail):
        super().__init__()
        self.body, self.tail = conv(3, p=1), tail

    def forward(self, x):
        return self.tail(self.body(x))


@pytest.mark.parametrize(
    "tail, words",
    [
        (lambda y: y * y.mean((2, 3), keepdim=True), "global pooling"),
        (nn.InstanceNorm2d(3), "whole image"),
        (nn.GroupNorm(1, 3), "whole image"),
        (lambda y: F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True), "depends on the image size"),
        (lambda y: y * F.adaptive_avg_pool2d(y, 1), "global"),
    ],
)
def test_blockers_are_reported(tail, words):
    m = Head(tail if isinstance(tail, nn.Module) else _Lambda(tail)).eval()
    g = receptive_field(m)
    assert not g.exact_tiling and any(words in b for b in g.blockers), g.blockers


def test_geometry_that_changes_with_the_input_size_is_refused_in_one_line():
    # a resize to a fixed size: the stride is 2.25 at 225 px, 5.12 at 512, 6.4 at 640
    m = Head(_Lambda(lambda y: F.interpolate(F.avg_pool2d(y, 2), size=(100, 100)))).eval()
    with pytest.raises(InputError, match="changes with the input size") as info:
        receptive_field(m)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="not a whole number of pixels"):
        receptive_field(m, input_size=(225, 225))


def test_batchnorm_in_training_mode_is_a_blocker_in_eval_not():
    m = nn.Sequential(conv(3, p=1), nn.BatchNorm2d(3))
    assert any("BatchNorm" in b for b in receptive_field(m.train()).blockers)
    assert receptive_field(m.eval()).exact_tiling


class _Lambda(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


def test_classifier_without_spatial_output_is_a_clear_error():
    m = nn.Sequential(conv(3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    with pytest.raises(InputError, match="no spatial grid"):
        receptive_field(m)


def test_classifier_with_forward_dense_is_measured_on_its_score_map():
    class Clf(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(conv(3, s=2), conv(3))

        def forward_dense(self, x):
            return self.features(x)

        def forward(self, x):
            return self.forward_dense(x).mean((2, 3))

    assert summary(Clf()) == (7, 2, 3)
    assert receptive_field(Clf(), method="probe").size == (7, 7)


def test_channels_last_layers_are_refused_with_the_layer_name():
    m = _Lambda(lambda x: x.permute(0, 2, 3, 1))
    with pytest.raises(InputError, match="moves the spatial axes"):
        receptive_field(m)


def test_bad_arguments():
    with pytest.raises(InputError, match="did you mean 'probe'"):
        receptive_field(conv(3), method="prob")
    with pytest.raises(InputError, match="nn.Module"):
        receptive_field(lambda x: x)


def test_valid_net_needing_a_large_input_is_traced_at_a_larger_size():
    m = nn.Sequential(*[conv(9) for _ in range(40)])  # rf 321 > the first trace size 225
    assert summary(m) == (321, 1, 160)


def test_window_halo_and_dict():
    g = Geometry(size=(212, 212), stride=(32, 32), offset=(15.5, 15.5), align=(32, 32))
    assert g.window(0, 1) == ((-90, 121), (-58, 153))
    assert g.halo() == (128, 128)  # ceil(211 / 2) = 106 -> next multiple of 32
    assert g.to_dict() == {"size": [212, 212], "stride": [32, 32], "offset": [15.5, 15.5]}


def test_model_is_not_modified():
    m = Residual().eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    receptive_field(m)
    receptive_field(m, method="probe")
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert not m._forward_hooks and not m._forward_pre_hooks and not m.training
