"""Tiled inference equals whole-image inference; blending, lazy inputs, bounded memory."""

import tracemalloc
import warnings

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from torch import nn

from fcnkit import predict, receptive_field
from fcnkit.errors import InputError
from fcnkit.inference.predict import TiledJob, parse_memory
from fcnkit.inference.sources import ArraySource, open_image

pytestmark = pytest.mark.usefixtures("one_thread")


def conv(c_in, c_out, k, s=1, p=0, d=1):
    return nn.Conv2d(c_in, c_out, k, stride=s, padding=p, dilation=d)


def same_net(k=3):
    return nn.Sequential(
        conv(3, 6, 3, p=1),
        nn.ReLU(),
        conv(6, 6, 3, s=2, p=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        conv(6, 6, 3, p=2, d=2),
        nn.ReLU(),
        conv(6, k, 1),
    )


def valid_net(k=3):
    return nn.Sequential(conv(3, 6, 3), nn.ReLU(), nn.MaxPool2d(2), conv(6, 6, 3), nn.ReLU(), conv(6, k, 2))


def even_ceil_net(k=3):  # even kernel with padding, ceil-mode pooling: trailing cells depend on the end
    return nn.Sequential(conv(3, 6, 4, p=2), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True), conv(6, k, 3, p=1))


class DenseUp(nn.Module):
    """Stride-4 trunk, bilinear x4 back to the input grid, cropped to the input size."""

    def __init__(self, k=3):
        super().__init__()
        self.body = nn.Sequential(conv(3, 6, 3, s=2, p=1), nn.ReLU(), conv(6, 6, 3, s=2, p=1), nn.ReLU(), conv(6, k, 1))

    def forward(self, x):
        h, w = x.shape[-2:]
        return F.interpolate(self.body(x), scale_factor=4, mode="bilinear")[..., :h, :w]


class PadTo8(nn.Module):
    """Pads the input to a multiple of 8 (as FCN heads do), transposed-conv upsampling, crop back."""

    def __init__(self, k=3):
        super().__init__()
        self.body = nn.Sequential(
            conv(3, 6, 3, p=1),
            nn.MaxPool2d(2),
            conv(6, 6, 3, p=1),
            nn.MaxPool2d(2),
            conv(6, 6, 3, p=1),
            nn.MaxPool2d(2),
            conv(6, k, 1),
        )
        self.up = nn.ConvTranspose2d(k, k, 16, 8, bias=False)

    def forward(self, x):
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % 8, 0, (-h) % 8))
        return self.up(self.body(x))[..., 4 : 4 + h, 4 : 4 + w]


def random_net(seed: int) -> nn.Module:
    """A random stack of convs (kernel 1-5, stride 1-2, dilation 1-2, same or valid) and pools."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda xs: xs[int(torch.randint(len(xs), (1,), generator=g))]  # noqa: E731
    same, layers, c, down = seed % 2 == 0, [], 3, 1
    for _ in range(4):
        k, d = pick([1, 2, 3, 3, 5]), pick([1, 1, 2])
        s = pick([1, 2]) if down < 4 else 1
        down *= s
        layers += [conv(c, 5, k, s=s, p=d * (k - 1) // 2 if same else 0, d=d), nn.ReLU()]
        c = 5
        if pick([0, 0, 1]) and down < 4:
            layers.append(nn.MaxPool2d(2, ceil_mode=bool(pick([0, 1]))))
            down *= 2
    return nn.Sequential(*layers, conv(c, 3, 1))


def _randomise(model):
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _tile_for(model, at_least=32):
    """The smallest tile >= at_least whose core is at least 16 pixels (and 2 alignments)."""
    g = receptive_field(model)
    return max(at_least, 2 * max(g.halo()) + max(16, 2 * max(g.align)))


NETS = [same_net, valid_net, even_ceil_net, DenseUp, PadTo8] + [lambda s=s: random_net(s) for s in range(6)]


@pytest.mark.parametrize("make", NETS)
def test_tiled_equals_whole_at_awkward_sizes(make):
    model = _randomise(make())
    x = torch.randn(3, 97, 203, generator=torch.Generator().manual_seed(1))
    whole = model(x[None])[0].detach()
    tile = _tile_for(model)
    for t, b in ((tile, 1), (tile + 13, 3)):  # a tile that is not a multiple of anything, batched
        tiled = predict(model, x, tile=t, batch_size=b)
        assert tiled.shape == whole.shape
        assert (tiled - whole).abs().max().item() <= 1e-5


def test_tiled_equals_whole_in_float64_to_rounding():
    model = _randomise(PadTo8()).double()
    x = torch.randn(3, 97, 203, dtype=torch.float64)
    tiled = predict(model, x, tile=64)
    assert tiled.dtype == torch.float64
    assert (tiled - model(x[None])[0].detach()).abs().max().item() < 1e-12


def test_the_crop_halo_is_needed():
    model = _randomise(same_net())
    x = torch.randn(3, 97, 203)
    whole = model(x[None])[0].detach()
    assert (predict(model, x, tile=48, halo=0) - whole).abs().max().item() > 1e-3


@pytest.mark.parametrize("blend", ["crop", "average", "gaussian"])
def test_blend_modes_keep_shapes(blend):
    model = _randomise(DenseUp())
    x = torch.randn(3, 97, 203)
    whole = model(x[None])[0].detach()
    out = predict(model, x, tile=48, blend=blend, overlap=0.5)
    assert out.shape == whole.shape and torch.isfinite(out).all()
    # far from every tile border the blend is the whole-image value too
    assert (out[:, :8, :8] - whole[:, :8, :8]).abs().max().item() < 1e-5


def test_blockers_refuse_crop_and_warn_blend():
    model = nn.Sequential(conv(3, 3, 3, p=1), nn.InstanceNorm2d(3)).eval()
    x = torch.randn(3, 64, 64)
    with pytest.raises(InputError, match="cannot equal whole-image.*blend="):
        predict(model, x, tile=32)
    with pytest.warns(UserWarning, match="normalises over the whole image"):
        assert predict(model, x, tile=32, blend="average").shape == (3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert predict(model, x).shape == (3, 64, 64)  # whole image: fine


def test_bad_arguments_name_the_fix():
    model, x = _randomise(same_net()), torch.randn(3, 97, 203)
    with pytest.raises(InputError, match="use tile >= 14"):  # halo 6 on both sides + alignment 2
        predict(model, x, tile=12)
    with pytest.raises(InputError, match="blend"):
        predict(model, x, tile=64, blend="max")
    with pytest.raises(InputError, match="tile"):
        predict(model, x, tile="big")
    with pytest.raises(InputError, match="C, H, W"):
        predict(model, torch.randn(97, 203))
    assert parse_memory("512M") == 512 << 20 and parse_memory("2GiB") == 2 << 30
    with pytest.raises(InputError, match="512M"):
        parse_memory("lots")


def test_auto_tile_fits_the_budget_and_stays_exact():
    model, x = _randomise(DenseUp()), torch.randn(3, 160, 200)
    job = TiledJob(model, x, tile="auto", memory_budget="1M", batch_size=1)
    assert len(job.plan) > 1
    assert (predict(model, x, tile="auto", memory_budget="1M") - model(x[None])[0].detach()).abs().max() < 1e-5
    assert len(TiledJob(model, x, tile="auto", memory_budget="1G").plan) == 1  # fits whole
    with pytest.raises(InputError, match="memory-budget"):
        TiledJob(model, x, tile="auto", memory_budget="1K")


def test_model_mode_is_restored_and_progress_reported():
    model, seen = same_net().train(), []
    predict(model, torch.randn(3, 97, 203), tile=40, progress=lambda d, t: seen.append((d, t)))
    assert model.training and seen[-1][0] == seen[-1][1] > 1


def test_lazy_tiff_input(tmp_path):
    from fcnkit.data.io import read_image, to_model_input

    raw = np.random.default_rng(0).integers(0, 65535, (97, 203), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", raw)
    src = open_image(tmp_path / "a.tif", 3, [0.5] * 3, [0.2] * 3)
    assert isinstance(src.array, np.memmap) and src.shape == (3, 97, 203)
    model = _randomise(same_net())
    x = to_model_input(read_image(tmp_path / "a.tif"), 3, [0.5] * 3, [0.2] * 3)
    assert (predict(model, src, tile=48) - model(x[None])[0].detach()).abs().max() < 1e-5


class _Spy:
    """Source wrapper recording the largest tile read."""

    def __init__(self, src):
        self.src, self.shape, self.largest = src, src.shape, 0

    def read(self, rows, cols):
        self.largest = max(self.largest, (rows[1] - rows[0]) * (cols[1] - cols[0]))
        return self.src.read(rows, cols)


def test_memory_bounded_path_on_a_larger_image(tmp_path):
    model = _randomise(same_net(k=4))
    raw = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    src = _Spy(ArraySource(raw, 3, [0.5] * 3, [0.25] * 3))
    blocks = []

    class Sink:
        def write(self, rows, cols, block):
            blocks.append(block.shape)

        def close(self):
            pass

    TiledJob(model, src, tile=256).run(lambda shape: Sink())
    assert src.largest <= 256 * 256
    assert max(b[1] * b[2] for b in blocks) <= 128 * 128 and sum(b[1] * b[2] for b in blocks) == 512 * 512

    tracemalloc.start()
    out = predict(model, src, tile=256, out=tmp_path / "logits.npy")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20  # numpy side: tile-sized buffers, never the 16 MB of logits nor the 12 MB float input
    on_disk = np.load(tmp_path / "logits.npy", mmap_mode="r")
    assert on_disk.shape == (4, 512, 512)
    x = ArraySource(raw, 3, [0.5] * 3, [0.25] * 3).read((0, 1024), (0, 1024))
    with torch.no_grad():
        whole = model(x[None])[0]
    assert np.abs(np.asarray(on_disk) - whole.numpy()).max() < 1e-5
    assert (out - whole).abs().max() < 1e-5
    assert not list(tmp_path.glob(".logits*"))  # no temporary left behind
