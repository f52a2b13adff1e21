"""convolutionalize: the FCN equals the classifier (native size: logits; larger inputs: every cell
is the classifier on its native-size window, for unpadded nets), and unsupported graphs fail clearly."""

import pytest
import torch
import torchvision
from _predict_helpers import tiny_conv_features
from torch import nn

from fcnkit import convolutionalize, receptive_field
from fcnkit.convert import ConvolutionalizedNet
from fcnkit.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")


def random_torchvision(name: str, dtype=torch.float64, **kw) -> nn.Module:
    """A torchvision classifier with random weights (no download), in eval mode.

    Built on the meta device and filled from one random block of prime length (10007), so no
    weight pattern lines up with any layer shape (a wrong flatten order would still show), at
    a fraction of the cost of drawing VGG's 138 M random numbers. Scales keep activations O(1):
    He-uniform for weights, non-trivial BatchNorm statistics, and small weights on the last BN
    of each residual branch so 50 ResNet blocks do not blow the logits up to 1e11.
    """
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None, **kw)
    model = model.to(dtype).to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    block = torch.rand(10007, generator=gen, dtype=dtype) * 2 - 1
    residual_last = {
        f"{n}.{'bn3' if hasattr(m, 'bn3') else 'bn2'}"
        for n, m in model.named_modules()
        if type(m).__name__ in ("BasicBlock", "Bottleneck")
    }

    def fill(t, lo, hi):  # one broadcast copy, no temporaries the size of t
        vals = (block.roll(int(torch.randint(10007, (1,), generator=gen))) + 1) / 2 * (hi - lo) + lo
        flat, reps = t.view(-1), t.numel() // 10007
        flat[: reps * 10007].view(reps, 10007).copy_(vals.expand(reps, 10007))
        flat[reps * 10007 :].copy_(vals[: t.numel() - reps * 10007])

    with torch.no_grad():
        for n, t in list(model.named_parameters()) + list(model.named_buffers()):
            owner = n.rpartition(".")[0]
            if n.endswith("num_batches_tracked"):
                t.zero_()
            elif n.endswith("running_var"):
                fill(t, 0.5, 1.5)
            elif n.endswith("running_mean") or n.endswith("bias"):
                fill(t, -0.1, 0.1)
            elif t.dim() == 1:  # BatchNorm weight
                fill(t, 0.05, 0.15) if owner in residual_last else fill(t, 0.5, 1.5)
            else:
                a = (6.0 / t[0].numel()) ** 0.5
                fill(t, -a, a)
    return model.eval()


def assert_native_equivalence(model: nn.Module, tol: float, input_size=224, batch=1):
    dtype = next(model.parameters()).dtype
    x = torch.randn(batch, 3, input_size, input_size, dtype=dtype, generator=torch.Generator().manual_seed(1))
    fcn = convolutionalize(model)
    with torch.no_grad():
        logits, scores = model(x), fcn(x)
    assert scores.shape == (batch, logits.shape[1], 1, 1)
    diff = (scores.flatten(1) - logits).abs().max().item()
    assert diff <= tol, diff
    assert logits.abs().max().item() > 1e-3  # not a vacuous comparison of zeros


# Numerically: one net per family in float64 (tolerance 1e-10): AlexNet, VGG with and without BN,
# ResNet basic block and bottleneck; VGG16 (the FCN paper's net) and the other ResNet depths in
# float32 (tolerance 1e-4). The remaining VGG variants share VGG11's head and conversion path (the
# trunk is not touched) and are checked structurally on the meta device, which costs nothing: a
# float32 pass of each would add ~1.5 s of CPU apiece (4-7 s on a busy 2-core machine).
@pytest.mark.parametrize("name", ["alexnet", "vgg11", "vgg11_bn", "resnet18", "resnet50"])
def test_native_size_equals_logits_fp64(name):
    assert_native_equivalence(random_torchvision(name, torch.float64), tol=1e-10)


@pytest.mark.parametrize("name", ["vgg16", "resnet34", "resnet101", "resnet152"])
def test_native_size_equals_logits_fp32(name):
    assert_native_equivalence(random_torchvision(name, torch.float32, num_classes=10), tol=1e-4)


@pytest.mark.parametrize(
    "name",
    [
        "vgg11",
        "vgg13",
        "vgg16",
        "vgg19",
        "vgg11_bn",
        "vgg13_bn",
        "vgg16_bn",
        "vgg19_bn",
        "alexnet",
        "resnet18",
        "resnet50",
    ],
)
def test_every_listed_architecture_converts(name):
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
        fcn = convolutionalize(model)
        assert fcn(torch.zeros(1, 3, 224, 224)).shape == (1, 10, 1, 1)
        assert fcn(torch.zeros(1, 3, 500, 500)).shape[-2:] == ((9, 9) if not name.startswith("resnet") else (10, 10))
    assert not any(isinstance(m, nn.Linear) for m in fcn.modules())
    first = {"vgg": ("classifier.0", (7, 7), 512), "alexnet": ("classifier.1", (6, 6), 256)}.get(
        name[:3] if name != "alexnet" else name
    )
    path, kernel, channels = first or ("fc", (1, 1), 512 if name in ("resnet18", "resnet34") else 2048)
    conv = fcn.body.get_submodule(path)
    assert (conv.kernel_size, conv.in_channels) == (kernel, channels)


def test_converted_layers_and_input_untouched():
    model = random_torchvision("alexnet", torch.float32, num_classes=7)
    fcn = convolutionalize(model)
    body = fcn.body
    assert isinstance(model.classifier[1], nn.Linear)  # the input model is not modified
    fc6, fc7, fc8 = (
        body.get_submodule("classifier.1"),
        body.get_submodule("classifier.4"),
        body.get_submodule("classifier.6"),
    )
    assert (fc6.kernel_size, fc6.in_channels, fc6.out_channels) == ((6, 6), 256, 4096)
    assert (fc7.kernel_size, fc8.kernel_size, fc8.out_channels) == ((1, 1), (1, 1), 7)
    # the kernel is the Linear weight in flatten order (C, H, W): input index c*36 + y*6 + x
    w = model.classifier[1].weight
    assert torch.equal(fc6.weight[5, 17, 2, 3], w[5, 17 * 36 + 2 * 6 + 3])
    with torch.no_grad():
        fc6.weight.zero_()
    assert w.abs().sum() > 0  # weights are copies, not shared
    assert not hasattr(body, "avgpool")  # identity at the native size: dropped
    assert isinstance(fcn, ConvolutionalizedNet) and fcn.input_size == (224, 224)


def test_larger_input_grid_shapes():
    fcn = convolutionalize(random_torchvision("alexnet", torch.float32, num_classes=5))
    with torch.no_grad():
        assert fcn(torch.zeros(1, 3, 500, 500)).shape == (1, 5, 9, 9)
        assert fcn(torch.zeros(2, 3, 224, 320)).shape == (2, 5, 1, 4)


def test_resnet_pool_none_scores_each_feature_cell():
    model = random_torchvision("resnet18", torch.float64, num_classes=6)
    fcn = convolutionalize(model, pool="none")
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        scores, logits = fcn(x), model(x)
    assert scores.shape == (1, 6, 7, 7)
    # a linear head commutes with the global mean: the mean of the cells is the logits
    assert (scores.mean((2, 3)) - logits).abs().max() <= 1e-10


def test_keeps_train_mode():
    model = random_torchvision("resnet18", torch.float32, num_classes=3).train()
    model.bn1.eval()
    fcn = convolutionalize(model)
    assert (
        fcn.training
        and fcn.body.training
        and not fcn.body.bn1.training
        and fcn.body.get_submodule("layer1.0.bn1").training
    )


# --- unpadded user models: every cell equals the classifier on the native-size crop -------------


def valid_classifier() -> nn.Sequential:
    """No padding anywhere; native input 30x30: 30 -conv3-> 28 -pool2-> 14 -conv3-> 12 -pool2-> 6 -conv3-> 4."""
    torch.manual_seed(2)
    return (
        nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(6, 8, 3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(8 * 4 * 4, 16),
            nn.ReLU(),
            nn.Linear(16, 5),
        )
        .double()
        .eval()
    )


VALID_LAYERS = [(3, 1, 0), (2, 2, 0), (3, 1, 0), (2, 2, 0), (3, 1, 0), (4, 1, 0), (1, 1, 0), (1, 1, 0)]


def geometry_from_layers(layers):
    """Receptive field (size, stride, offset = centre of cell 0) of a chain of (kernel, stride, padding)."""
    size, stride, offset = 1, 1, 0.0
    for k, s, p in layers:
        size += (k - 1) * stride
        offset += ((k - 1) / 2 - p) * stride
        stride *= s
    return size, stride, offset


def cell_geometry(fcn, layers):
    """(size, stride, offset) of the FCN's cells from fcnkit.geometry, checked against the
    hand-computed layer chain."""
    g = receptive_field(fcn)
    assert (g.size[0], g.stride[0], g.offset[0]) == geometry_from_layers(layers)
    assert g.size[0] == g.size[1] and not g.blockers
    return g.size[0], g.stride[0], g.offset[0]


def test_geometry_helper_by_hand():
    # hand-computed: RF 30 (= the native size: the kernel covers the whole map), stride 4, centre 14.5
    assert geometry_from_layers(VALID_LAYERS) == (30, 4, 14.5)


def test_each_cell_equals_classifier_on_its_crop_fp64():
    model = valid_classifier()
    fcn = convolutionalize(model, input_size=30)
    size, stride, offset = cell_geometry(fcn, VALID_LAYERS)
    x = torch.randn(2, 3, 30 + 5 * stride + 3, 30 + 3 * stride, dtype=torch.float64)
    with torch.no_grad():
        grid = fcn(x)
    assert grid.shape == (2, 5, 6, 4)
    start = offset - (size - 1) / 2  # top-left input pixel of cell (0, 0)'s window (geometry.window)
    assert start == 0
    rows, cols = grid.shape[-2:]
    crops = [
        x[:, :, int(start + i * stride) :][:, :, :30, int(start + j * stride) :][..., :30]
        for i in range(rows)
        for j in range(cols)
    ]
    with torch.no_grad():  # all crops in one batch: rows*cols classifier evaluations in one call
        reference = model(torch.cat(crops)).reshape(rows, cols, 2, 5).permute(2, 3, 0, 1)
    assert (grid - reference).abs().max() <= 1e-10


class ForwardStyleNet(nn.Module):
    """A user model in torchvision style: flatten in forward, BatchNorm1d and softmax in the head."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 5), nn.Conv2d(8, 8, 3)
        self.fc1, self.bn, self.fc2 = nn.Linear(8 * 3 * 3, 12), nn.BatchNorm1d(12), nn.Linear(12, 4)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        x = nn.functional.relu(self.bn(self.fc1(x)))
        return torch.log_softmax(self.fc2(x), dim=-1)


def test_forward_style_model_view_batchnorm1d_softmax():
    torch.manual_seed(3)
    model = ForwardStyleNet().double().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    fcn = convolutionalize(model, input_size=12)  # 12 -conv5-> 8 -conv3-> 6 -pool2-> 3
    x = torch.randn(3, 3, 12 + 2 * 2, 12 + 4 * 2, dtype=torch.float64)
    crops = [x[:, :, 2 * i : 2 * i + 12, 2 * j : 2 * j + 12] for i in range(3) for j in range(5)]
    with torch.no_grad():
        grid = fcn(x)
        reference = model(torch.cat(crops)).reshape(3, 5, 3, 4).permute(2, 3, 0, 1)
    assert grid.shape == (3, 4, 3, 5)
    assert (grid - reference).abs().max() <= 1e-10
    assert isinstance(fcn.body.bn, nn.BatchNorm2d)


class MeanPoolNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 6, 3), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_mean_global_pool_becomes_window_average():
    torch.manual_seed(4)
    model = MeanPoolNet().double()
    fcn = convolutionalize(model, input_size=(8, 10))
    x = torch.randn(1, 3, 11, 12, dtype=torch.float64)
    with torch.no_grad():
        grid = fcn(x)
        assert grid.shape == (1, 2, 4, 3)
        assert (grid[:, :, 3, 2] - model(x[:, :, 3:11, 2:12])).abs().max() <= 1e-10


@pytest.mark.parametrize("pool", [nn.AdaptiveAvgPool2d(3), nn.AdaptiveMaxPool2d(1)])
def test_adaptive_pools_become_fixed_pools(pool):
    """6x6 -> 3x3 (ratio 2) becomes AvgPool2d(2, 2); a global max pool a 6x6 stride-1 max window."""
    torch.manual_seed(6)
    channels = 4 * (9 if isinstance(pool, nn.AdaptiveAvgPool2d) else 1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), pool, nn.Flatten(), nn.Linear(channels, 2)).double().eval()
    fcn = convolutionalize(model, input_size=8)
    stride = 2 if isinstance(pool, nn.AdaptiveAvgPool2d) else 1
    x = torch.randn(1, 3, 8 + 3 * stride, 8 + 2 * stride, dtype=torch.float64)
    crops = [x[:, :, stride * i : stride * i + 8, stride * j : stride * j + 8] for i in range(4) for j in range(3)]
    with torch.no_grad():
        grid = fcn(x)
        reference = model(torch.cat(crops)).reshape(4, 3, 1, 2).permute(2, 3, 0, 1)
    assert grid.shape == (1, 2, 4, 3)
    assert (grid - reference).abs().max() <= 1e-10


# --- padded nets: cells are translation-equivariant, but differ from crop classification -------


def padded_classifier() -> nn.Sequential:
    torch.manual_seed(5)
    return (
        nn.Sequential(
            *tiny_conv_features(),
            nn.Flatten(),
            nn.Linear(4 * 4 * 4, 3),
        )
        .double()
        .eval()
    )


def test_padded_net_interior_cells_do_not_see_the_border():
    """Native 16x16, stride 4, receptive field 16 + 2*(1 + 2) px = 22 wide (padding widens it past the
    native window). Cells whose whole receptive field lies inside the image are the same on a
    canvas shifted by a multiple of the stride; cells that reach the zero padding differ; and no
    cell equals the classifier on its 16x16 crop, which zero-pads where the FCN sees real pixels."""
    model = padded_classifier()
    fcn = convolutionalize(model, input_size=16)
    x = torch.randn(1, 3, 48, 48, dtype=torch.float64)
    with torch.no_grad():
        full = fcn(x)  # 12x12 map -> 9x9 cells, cell i covers x[4i : 4i+16] (+3 px context)
        shifted = fcn(x[:, :, 8:, 8:])  # the same image, cut 2 strides from the top-left
        crop = model(x[:, :, 16:32, 16:32])
    assert full.shape[-2:] == (9, 9) and shifted.shape[-2:] == (7, 7)
    # interior cells (window + context inside both canvases): identical
    assert (full[..., 3:8, 3:8] - shifted[..., 1:6, 1:6]).abs().max() <= 1e-10
    # the first cell of the cut canvas reaches its zero padding: different
    assert (full[..., 2, 2] - shifted[..., 0, 0]).abs().max() > 1e-6
    assert (full[..., 4, 4] - crop).abs().max() > 1e-6


# --- errors --------------------------------------------------------------------------------------


def test_error_unsupported_layer_names_module_path():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.LayerNorm(5))
    with pytest.raises(InputError, match=r"'3' \(LayerNorm\).*only Linear"):
        convolutionalize(model, input_size=8)


def test_error_cases():
    with pytest.raises(InputError, match="input_size"):
        convolutionalize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(InputError, match="already fully convolutional"):
        convolutionalize(nn.Sequential(nn.Conv2d(3, 4, 3)), input_size=8)
    with pytest.raises(InputError, match=r"BatchNorm1d '2'"):
        convolutionalize(
            nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.BatchNorm1d(2 * 36), nn.Linear(72, 2)), input_size=8
        )
    with pytest.raises(InputError, match="pool="):
        convolutionalize(random_torchvision("resnet18", torch.float32, num_classes=2), pool="max")
    with pytest.raises(InputError, match=r"'avgpool'.*8x8 .*6x6"):  # AlexNet at 300: 8x8 -> 6x6 is no fixed pool
        convolutionalize(random_torchvision("alexnet", torch.float32, num_classes=2), input_size=300)


def test_error_input_smaller_than_native():
    fcn = convolutionalize(valid_classifier(), input_size=30)
    with pytest.raises(InputError, match="at least 30x30"):
        fcn(torch.zeros(1, 3, 29, 40, dtype=torch.float64))
