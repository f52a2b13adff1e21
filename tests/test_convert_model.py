"""The registered ``convolutionalized`` segmentation model: geometry-aligned upsampling, spec
round trip, and a dense output that the receptive-field tracer (tiling) can follow."""

import itertools

import pytest
import torch

from fcnkit import receptive_field
from fcnkit.convert.segmenter import aligned_upsample
from fcnkit.errors import InputError
from fcnkit.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def lerp_reference(scores, size, stride, offset):
    """Plain gather + lerp: pixel p at coarse coordinate t = (p - offset) / stride, clamped."""
    out = scores
    for dim, n_out, s, o in ((-2, size[0], stride[0], offset[0]), (-1, size[1], stride[1], offset[1])):
        n_in = out.shape[dim]
        t = ((torch.arange(n_out, dtype=torch.float64) - o) / s).clamp(0, n_in - 1)
        i0 = t.floor().long()
        i1 = (i0 + 1).clamp(max=n_in - 1)
        shape = [1] * out.dim()
        shape[dim] = n_out
        f = (t - i0).to(out.dtype).view(shape)
        out = out.index_select(dim, i0) * (1 - f) + out.index_select(dim, i1) * f
    return out


def test_aligned_upsample_hand_fixture():
    # cells 0 and 1 at pixels 0.5 and 2.5 (stride 2, offset 0.5): pixel p has t = (p - 0.5) / 2
    grid = torch.tensor([[[[0.0, 1.0]]]], dtype=torch.float64)
    out = aligned_upsample(grid, (1, 5), (2, 2), (0.5, 0.5))
    assert out[0, 0, 0].tolist() == [0.0, 0.25, 0.75, 1.0, 1.0]
    # integer offset: cells sit on pixels 3 and 7 (stride 4)
    out = aligned_upsample(grid, (1, 10), (4, 4), (3, 3))
    assert out[0, 0, 0].tolist() == [0, 0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1]


def test_aligned_upsample_equals_reference():
    for s, o, h, n in itertools.product([1, 3, 32], [0, 0.5, 7, 111.5, 96], [1, 4], [5, 70, 300]):
        x = torch.randn(1, 2, h, h + 1, dtype=torch.float64)
        a = aligned_upsample(x, (n, n + 2), (s, s), (o, o))
        assert (a - lerp_reference(x, (n, n + 2), (s, s), (o, o))).abs().max() <= 1e-12, (s, o, h, n)
    with pytest.raises(InputError, match="1/2"):
        aligned_upsample(x, (5, 5), (2, 2), (0.25, 0.25))


@pytest.fixture(scope="module")
def dense_resnet():
    torch.manual_seed(0)
    return build_model("convolutionalized", num_classes=4, arch="torchvision:resnet18").eval()


def test_dense_output_places_cells_at_their_window_centres(dense_resnet):
    model = dense_resnet
    g = model.geometry
    assert g["stride"] == (32, 32) and g["offset"] == (96, 96)  # window pool on ResNet's stride-32 map
    x = torch.randn(1, 3, 300, 262)
    with torch.no_grad():
        dense, coarse = model(x), model.forward_coarse(x)
    assert dense.shape == (1, 4, 300, 262) and coarse.shape == (1, 4, 4, 3)  # ceil(300/32) - 6, ceil(262/32) - 6
    for i, j in itertools.product(range(4), range(3)):
        assert torch.allclose(dense[0, :, 96 + 32 * i, 96 + 32 * j], coarse[0, :, i, j], atol=1e-5)
    assert torch.allclose(dense[0, :, 0, 0], coarse[0, :, 0, 0], atol=1e-5)  # constant before cell 0


def test_spec_rebuilds_and_geometry_is_traceable(dense_resnet):
    spec = dense_resnet.fcnkit_spec
    assert spec == {
        "name": "convolutionalized",
        "kwargs": {
            "arch": "torchvision:resnet18",
            "in_channels": 3,
            "input_size": 224,
            "num_classes": 4,
            "output": "dense",
            "pool": "window",
        },
    }
    with torch.device("meta"):
        again = build_model(spec["name"], **spec["kwargs"])
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in dense_resnet.state_dict().items()
    }
    g = receptive_field(dense_resnet)  # pad + transposed conv + crop: all followed by the tracer
    assert g.stride == (1, 1) and g.align == (32, 32) and not g.blockers


def test_coarse_output_and_errors():
    with torch.device("meta"):
        coarse = build_model("convolutionalized", num_classes=2, arch="torchvision:alexnet", output="coarse")
    assert coarse(torch.zeros(1, 3, 500, 500, device="meta")).shape == (1, 2, 9, 9)
    assert coarse.geometry == {"size": (355, 355), "stride": (32, 32), "offset": (111, 111)}
    with pytest.raises(InputError, match="at least 224x224"):
        coarse(torch.zeros(1, 3, 200, 500, device="meta"))
    with pytest.raises(InputError, match=r"no classifier 'vgg61' \(did you mean 'vgg"):
        build_model("convolutionalized", num_classes=2, arch="torchvision:vgg61")
    with pytest.raises(InputError, match="torchvision:NAME"):
        build_model("convolutionalized", num_classes=2, arch="vgg16")
    with pytest.raises(InputError, match="in_channels"):
        build_model("convolutionalized", num_classes=2, in_channels=1)
