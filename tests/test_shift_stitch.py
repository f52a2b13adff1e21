"""shift_and_stitch equals running the net at every offset (two independent references: the net
on each receptive-field window, and the same net with filter rarefaction / dilation)."""

import pytest
import torch
from torch import nn

from fcnkit import convolutionalize
from fcnkit.errors import InputError
from fcnkit.inference.shift_stitch import shift_and_stitch

pytestmark = pytest.mark.usefixtures("one_thread")


RF, STRIDE = 14, 4  # by hand: conv3 -> 3, pool2 -> 4 (stride 2), conv3 -> 8, pool2 -> 10 (stride 4), conv2 -> 14


def coarse_net() -> nn.Sequential:
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 5, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(5, 3, 2),
        )
        .double()
        .eval()
    )


def rarefied(net: nn.Sequential) -> nn.Sequential:
    """FCN paper's filter rarefaction: pools at stride 1, later filters dilated by the skipped strides."""
    c1, c2, c3 = net[0], net[3], net[6]
    d2 = nn.Conv2d(4, 5, 3, dilation=2).double()
    d3 = nn.Conv2d(5, 3, 2, dilation=4).double()
    d2.load_state_dict(c2.state_dict())
    d3.load_state_dict(c3.state_dict())
    return nn.Sequential(
        c1, nn.ReLU(), nn.MaxPool2d(2, stride=1), d2, nn.ReLU(), nn.MaxPool2d(2, stride=1, dilation=2), d3
    ).eval()


def all_windows(x, rf_h, rf_w, rows, cols):
    """Every window x[:, :, u:u+rf_h, v:v+rf_w] as one batch [rows*cols*B, C, rf_h, rf_w] (one pass, not rows*cols)."""
    crops = [x[:, :, u : u + rf_h, v : v + rf_w] for u in range(rows) for v in range(cols)]
    return torch.cat(crops)


def unbatch(scores, b, rows, cols):
    """[rows*cols*B, K] -> [B, K, rows, cols] (inverse of the order of all_windows)."""
    return scores.reshape(rows, cols, b, -1).permute(2, 3, 0, 1)


class Counting(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


def test_equals_net_on_every_window_fp64():
    net = Counting(coarse_net())
    x = torch.randn(2, 3, 25, 23, dtype=torch.float64)
    dense = shift_and_stitch(net, x, stride=STRIDE)
    assert net.calls == STRIDE * STRIDE
    assert dense.shape == (2, 3, 25 - RF + 1, 23 - RF + 1)
    rows, cols = dense.shape[-2:]
    with torch.no_grad():
        windows = net.net(all_windows(x, RF, RF, rows, cols))
    assert windows.shape[-2:] == (1, 1)
    assert (dense - unbatch(windows, 2, rows, cols)).abs().max() <= 1e-12


def test_equals_filter_rarefaction_fp64():
    net = coarse_net()
    x = torch.randn(1, 3, 40, 37, dtype=torch.float64)
    with torch.no_grad():
        reference = rarefied(net)(x)
    dense = shift_and_stitch(net, x, stride=(4, 4))
    assert dense.shape == reference.shape == (1, 3, 27, 24)
    assert (dense - reference).abs().max() <= 1e-12


def test_coarse_grid_is_every_stride_th_cell_and_3d_input():
    net = coarse_net()
    x = torch.randn(3, 30, 30, dtype=torch.float64)
    dense = shift_and_stitch(net, x, stride=STRIDE)
    with torch.no_grad():
        coarse = net(x[None])[0]
    assert dense.dim() == 3
    assert torch.equal(dense[:, ::STRIDE, ::STRIDE], coarse)  # shift (0, 0) is the ordinary pass


def test_convolutionalized_classifier_anisotropic_stride():
    torch.manual_seed(1)
    clf = (
        nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.MaxPool2d((2, 3)), nn.Flatten(), nn.Linear(3 * 3 * 2, 4))
        .double()
        .eval()
    )
    # native 8x9 -> conv 6x7 -> pool 3x2: the 7th conv column is dropped by the pool, so the
    # receptive field is 8x8 (the native window's last column is never used) and the stride 2x3
    fcn = convolutionalize(clf, input_size=(8, 9))
    x = torch.randn(1, 2, 13, 17, dtype=torch.float64)
    dense = shift_and_stitch(fcn, x, stride=(2, 3))
    assert dense.shape == (1, 4, 13 - 8 + 1, 17 - 8 + 1)
    with torch.no_grad():  # the crops are 8x8: the classifier accepts them (7 -> pool 3 -> 2 columns as for 9)
        reference = unbatch(clf(all_windows(x, 8, 8, 6, 10)), 1, 6, 10)
    assert (dense - reference).abs().max() <= 1e-12


def test_errors():
    net = coarse_net()
    with pytest.raises(InputError, match="stride"):
        shift_and_stitch(net, torch.zeros(1, 3, 20, 20, dtype=torch.float64), stride=0)
    with pytest.raises(InputError, match=r"\[C, H, W\]"):
        shift_and_stitch(net, torch.zeros(20, 20), stride=4)


def test_default_stride_comes_from_geometry():
    net = coarse_net()
    x = torch.randn(1, 3, 22, 19, dtype=torch.float64)
    assert torch.equal(shift_and_stitch(net, x), shift_and_stitch(net, x, stride=STRIDE))
