"""Residual allconv (resallconv / resallconv_cls): shapes and geometry of every skip variant at odd
sizes, the zero-padding and concatenation bookkeeping, tiling, replace_downsampling, and the
classifier used densely."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnkit import predict, receptive_field, replace_downsampling
from fcnkit.errors import InputError
from fcnkit.geometry import check_feature_info
from fcnkit.models.registry import build_model, count_parameters
from fcnkit.models.residual import SKIP_DOWNSAMPLE_KINDS, ResidualBlock

pytestmark = pytest.mark.usefixtures("one_thread")

MAIN = ["strided-only", "maxpool", "avgpool", "strided"]
ODD = [(37, 53), (1, 1), (9, 30)]


def _net(name="resallconv", **kw):
    torch.manual_seed(0)
    kw.setdefault("width", 4)
    kw.setdefault("depth", 2)
    model = build_model(name, num_classes=3, in_channels=1, **kw)
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("skip", SKIP_DOWNSAMPLE_KINDS)
@pytest.mark.parametrize("main", MAIN)
def test_shapes_at_odd_sizes(skip, main):
    dense = _net(skip_downsample=skip, downsample=main)
    coarse = _net(skip_downsample=skip, downsample=main, output="coarse")
    cls = _net("resallconv_cls", skip_downsample=skip, downsample=main)
    with torch.no_grad():
        for sk in dense.skip_scores:  # make the FCN score skips count too
            nn.init.normal_(sk.weight)
        for h, w in ODD:
            x = torch.randn(2, 1, h, w)
            assert dense(x).shape == (2, 3, h, w)
            if min(h, w) >= 8:  # every halving: n -> ceil(n / 2), on both paths of every block
                assert coarse(x).shape == (2, 3, math.ceil(h / 8), math.ceil(w / 8))
            if min(h, w) >= 4:
                assert cls(x).shape == (2, 3)
                assert cls.forward_dense(x).shape == (2, 3, math.ceil(h / 4), math.ceil(w / 4))


@pytest.mark.parametrize("skip", SKIP_DOWNSAMPLE_KINDS)
@pytest.mark.parametrize("main", ["strided-only", "maxpool"])
def test_geometry_analytic_probe_and_taps_agree(skip, main):
    """The traced geometry (a block's window: the union of its paths') is what gradients measure;
    the feature taps are the trace's."""
    model = _net(skip_downsample=skip, downsample=main, output="coarse", depth=1, stages=2)
    a, p = receptive_field(model, in_channels=1), receptive_field(model, in_channels=1, method="probe")
    assert not a.blockers
    assert (p.size, p.stride, p.offset, p.align) == (a.size, a.stride, a.offset, a.align)
    assert (model.receptive_field, model.stride, model.offset) == (a.size[0], a.stride[0], a.offset[0])
    check_feature_info(model, in_channels=1)
    assert model.feature_info.strides == [1, 2, 4]
    # strided-only: a stride-2 3x3 conv, cells on 2i; 2x2 pools put them on 2i + 1/2 (4 of them: 1.5)
    assert a.offset[0] == {"strided-only": 0, "maxpool": 1.5}[main]


@pytest.mark.parametrize("skip", SKIP_DOWNSAMPLE_KINDS)
def test_tiled_equals_whole(skip):
    model = _net(skip_downsample=skip, downsample="maxpool", depth=1)
    g = receptive_field(model, in_channels=1)
    tile = 2 * max(g.halo()) + 16
    x = torch.randn(1, 131, 157, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(x[None])[0]
    tiled = predict(model, x, tile=tile, batch_size=2)
    assert tile < 131 and (tiled - whole).abs().max().item() <= 1e-5


def test_concat_channel_bookkeeping():
    """pool-concat: the block's first C channels ARE the pooled input, F(x) only gives C' - C."""
    block = ResidualBlock(4, 8, downsample="strided-only", skip_downsample="pool-concat").eval()
    assert block.concat and block.pad_channels == 0
    assert block.main[-2].out_channels == 4 and block.main[0][0].out_channels == 8
    x = torch.rand(2, 4, 9, 11)  # non-negative: a ReLU output, as inside the net
    with torch.no_grad():
        y = block(x)
    assert y.shape == (2, 8, 5, 6)
    torch.testing.assert_close(y[:, :4], F.max_pool2d(x, 2, 2, ceil_mode=True), rtol=0, atol=0)
    # where channels do not grow (stage 4+: width * 8 cap) there is nothing to concatenate: identity + sum
    same = ResidualBlock(8, 8, downsample="maxpool", skip_downsample="pool-concat")
    assert not same.concat and same.main[-2].out_channels == 8
    # in the net: each stage's first block concatenates, the others add an identity
    net = _net(skip_downsample="pool-concat", stages=4, depth=2)
    firsts = [getattr(net.features, f"stage{i}")[0] for i in range(1, 5)]
    assert [b.concat for b in firsts] == [True, True, True, False]
    assert [b.main[-2].out_channels for b in firsts] == [4, 8, 16, 32]
    assert not any(getattr(net.features, f"stage{i}")[1].concat for i in range(1, 5))
    assert net.feature_info.channels == [4, 8, 16, 32, 32]


def test_pool_zero_pads_and_conv1x1_projects():
    block = ResidualBlock(4, 8, downsample="maxpool", skip_downsample="pool").eval()
    assert block.pad_channels == 4 and list(block.skip) and not any(p.numel() for p in block.skip.parameters())
    with torch.no_grad():
        nn.init.zeros_(block.main[-1].weight)  # F(x) = 0: the output is the skip alone
        nn.init.zeros_(block.main[-1].bias)
        x = torch.rand(1, 4, 7, 7)
        y = block(x)
    torch.testing.assert_close(y[:, :4], F.max_pool2d(x, 2, 2, ceil_mode=True), rtol=0, atol=0)
    assert y[:, 4:].abs().max() == 0  # the grown channels are zeros
    proj = ResidualBlock(4, 8, downsample="strided-only", skip_downsample="conv1x1")
    conv = proj.skip[0]
    assert (conv.kernel_size, conv.stride, conv.in_channels, conv.out_channels) == ((1, 1), (2, 2), 4, 8)
    assert not list(ResidualBlock(8, 8, downsample=None, skip_downsample="conv1x1").skip)  # identity inside a stage
    # parameters: conv1x1 = pool + its projections (conv + BatchNorm), pool-concat the fewest
    n = {k: count_parameters("resallconv", skip_downsample=k, width=4, stages=3) for k in SKIP_DOWNSAMPLE_KINDS}
    projections = sum(c * 2 * c + 2 * (2 * c) for c in (4, 8, 16))
    assert n["conv1x1"] - n["pool"] == projections and n["pool-concat"] < n["pool"]


@pytest.mark.parametrize("kind", ["strided", "maxpool"])
def test_replace_downsampling_keeps_grids(kind):
    net = _net(skip_downsample="pool", downsample="maxpool" if kind == "strided" else "strided-only", output="coarse")
    new = replace_downsampling(net, kind, input_size=32)
    if kind == "strided":  # the skip's pools too: every pool is a downsampling layer
        assert not any(isinstance(m, nn.MaxPool2d) for m in new.modules())
    for h, w in [(32, 32), (37, 45), (61, 50)]:
        x = torch.zeros(1, 1, h, w)
        with torch.no_grad():
            assert new(x).shape == net(x).shape


def test_errors():
    with pytest.raises(InputError, match="skip_downsample="):
        build_model("resallconv", num_classes=2, skip_downsample="concat")
    with pytest.raises(InputError, match="padding"):
        build_model("resallconv", num_classes=2, padding="valid")


def test_classifier_used_densely(tmp_path):
    """Convolutionalization: the residual classifier's tensors load into the residual segmenter."""
    from fcnkit.checkpoint import save_checkpoint
    from fcnkit.experiments.patch_to_dense import dense_from_classifier

    classifier = _net("resallconv_cls", skip_downsample="pool-concat", stages=2, depth=1).double()
    config = {
        "task": "classification",
        "num_classes": 3,
        "in_channels": 1,
        "classes": ["a", "b", "c"],
        "normalization": {"mean": [0.1], "std": [0.3]},
    }
    path = save_checkpoint(tmp_path / "cls", classifier.float(), config)
    coarse, _ = dense_from_classifier(path, output="coarse")
    assert coarse.fcnkit_spec["name"] == "resallconv"
    x = torch.randn(2, 1, 29, 35, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(coarse.double()(x), classifier.double().forward_dense(x), rtol=0, atol=1e-12)
