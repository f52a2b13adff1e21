"""Staged exact tiling (fcnkit/inference/staged.py): equal to whole-image inference in fp64 on every
registry model at awkward sizes; the fallback to single-level tiling is said once; geometry cached."""

import warnings

import pytest
import torch
from _predict_helpers import randomise_zero_parameters
from torch import nn

from fcnkit import predict
from fcnkit.errors import InputError
from fcnkit.geometry.stages import cached_geometry
from fcnkit.inference.sources import as_source
from fcnkit.inference.staged import staged_job
from fcnkit.inference.writers import TensorSink
from fcnkit.models.registry import build_model, list_models

pytestmark = pytest.mark.usefixtures("one_thread")

SLOW = pytest.mark.slow  # VGG-16 sized nets in fp64: ~20 s each on a busy core
CASES = [
    ("allconv", {}),
    ("allconv", {"output": "coarse", "padding": "valid"}),
    ("allconv", {"output": "coarse"}),
    ("resallconv", {}),
    pytest.param("convolutionalized", {}, marks=SLOW),
    ("fcn32s", {}),
    ("fcn16s", {}),
    ("fcn8s", {}),
    ("fcn8s", {"backbone": "resnet18"}),
    pytest.param("fcn8s", {"backbone": "vgg16"}, marks=SLOW),
]
NAMES = [c.values[0] if hasattr(c, "values") else c[0] for c in CASES]
IDS = [f"{n}-{i}" for i, n in enumerate(NAMES)]
ONE_STAGE = {
    "allconv": "its full-resolution skip taps live to the end: no cut is worth storing",
    "resallconv": "allconv's heads: the same score skips from full resolution",
}


def build(name, **kw):
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, **kw).eval().double()
    randomise(model)
    return model


def randomise(model):
    """Non-trivial BatchNorm statistics, and random weights where FCN initialises to zero (the score
    layers): otherwise every logit is 0 and equalities hold trivially."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return randomise_zero_parameters(model, 0.1)


def test_every_registry_model_is_covered():
    assert set(NAMES) == set(list_models()) - {"allconv_cls", "resallconv_cls"}  # classifiers: no score map


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_staged_equals_whole_fp64(name, kw):
    model = build(name, **kw)
    sizes = [(257, 301)] if name == "convolutionalized" else [(97, 203), (331, 419)]  # 331, 419: primes
    sizes = sizes[:1] if kw.get("backbone") == "vgg16" else sizes
    for size in sizes:
        x = torch.randn(3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            whole = model(x[None])[0]
        assert whole.std() > 1e-3  # non-trivial logits
        job = staged_job(model, as_source(x), (64, 64), None)
        if name in ONE_STAGE and not kw:
            assert job is None  # single-level tiling (exact) is what predict runs
        else:
            assert job is not None and len(job.stages) >= 3
            assert sum(len(p) > 1 for p in job.plans) >= 1  # really tiled
            staged = job.run(lambda shape: TensorSink(shape, torch.float64)).result
            assert staged.shape == whole.shape
            assert (staged - whole).abs().max().item() <= 1e-10
        if name == "convolutionalized" or kw:
            continue  # predict(tile=...) below: once per family is enough
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # staged or single-level, silently
            tiled = predict(model, x, tile=2 * max(cached_geometry(model, 3).halo()) + 32)
        assert (tiled - whole).abs().max().item() <= 1e-10


class SizeDependent(nn.Module):
    """An extra operation on some tile sizes only: the forward cannot be replayed stage by stage."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1))
        self.b = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(4, 2, 1))

    def forward(self, x):
        y = self.a(x)
        if x.shape[-1] % 3 == 0:
            y = y * 1.0
        return self.b(y)


def test_fallback_to_single_level_is_said_once():
    model = SizeDependent().double().eval()
    x = torch.randn(3, 150, 250, dtype=torch.float64)
    with torch.no_grad():
        whole = model(x[None])[0]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        a = predict(model, x, tile=64)
        b = predict(model, x, tile=64)
    said = [w for w in seen if "staged tiling is not possible" in str(w.message)]
    assert len(said) == 1 and "SizeDependent" in str(said[0].message)
    assert (a - whole).abs().max().item() <= 1e-10 and torch.equal(a, b)


def test_staged_false_and_geometry_cached():
    model = build("fcn8s", backbone="resnet18")
    assert cached_geometry(model, 3) is cached_geometry(model, 3)
    x = torch.randn(3, 200, 260, dtype=torch.float64)
    a = predict(model, x, tile=544)
    b = predict(model, x, tile=544, staged=False)
    assert (a - b).abs().max().item() <= 1e-10
    with torch.no_grad():
        whole = model(x[None])[0]
    small = predict(model, x, tile=128)  # single-level tiling refuses 128 (a 256 halo leaves no core)
    assert (small - whole).abs().max().item() <= 1e-10
    with pytest.raises(InputError, match="leaves no core"):
        predict(model, x, tile=128, staged=False)


def test_a_third_party_trunk_is_staged_exactly():
    import torchvision

    torch.manual_seed(0)
    trunk = nn.Sequential(*list(torchvision.models.resnet18(weights=None).children())[:-2]).eval().double()
    x = torch.randn(3, 97, 203, dtype=torch.float64)
    with torch.no_grad():
        whole = trunk(x[None])[0]
    job = staged_job(trunk, as_source(x), (64, 64), None)
    assert job is not None and len(job.stages) >= 3
    staged = job.run(lambda shape: TensorSink(shape, torch.float64)).result
    assert staged.shape == whole.shape and (staged - whole).abs().max().item() <= 1e-10


def test_memory_mapped_stores_give_the_same_logits(monkeypatch):
    import fcnkit.inference.staged as staged

    monkeypatch.setattr(staged, "MMAP_BYTES", 0)  # every stage output on disk, pages dropped per tile
    model = build("fcn8s")
    x = torch.randn(3, 161, 230, dtype=torch.float64)
    with torch.no_grad():
        whole = model(x[None])[0]
    job = staged_job(model, as_source(x), (64, 64), None)
    out = job.run(lambda shape: TensorSink(shape, torch.float64)).result
    assert (out - whole).abs().max().item() <= 1e-10 and job._tmp is None  # the scratch folder is gone
