"""fcnkit.training.regimes: loss sampling, class balancing, option parsing; fcnkit.training.flops."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnkit.engine.config import TrainConfig
from fcnkit.errors import InputError
from fcnkit.models import build_model
from fcnkit.training.flops import _CACHE, batch_flops, forward_flops
from fcnkit.training.losses import class_weights_from_masks, pixelwise_loss
from fcnkit.training.regimes import (
    ClassBalanced,
    LossSampling,
    Patchwise,
    WholeImage,
    build_regime,
    count_kept_cells,
    score_stride,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(b, h, w, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.zeros(b, 1, h, w), "mask": torch.randint(0, k, (b, h, w), generator=g)}


# --- building from config ------------------------------------------------------------------
def test_build_from_name_inline_options_and_mapping():
    assert build_regime(None) == WholeImage()
    r = build_regime("loss-sampling:p=0.25,seed=3")
    assert (r.p, r.seed, r.cell) == (0.25, 3, "auto")
    assert build_regime({"name": "loss-sampling", "p": 0.25, "seed": 3}) == r
    # options() round-trips through the saved config
    assert build_regime(r.options()) == r
    p = build_regime({"name": "patchwise", "sampler": "grid", "patch_size": 20, "stride": 10})
    assert p.options() == {
        "name": "patchwise",
        "sampler": "grid",
        "patch_size": 20,
        "patches_per_image": 4,
        "stride": 10,
    }


@pytest.mark.parametrize(
    "spec,pattern",
    [
        ("wholes", r"unknown name 'wholes' \(did you mean 'whole'\?\)"),
        ("loss-sampling:p=0", r"p must be in \(0, 1\], got 0"),
        ("loss-sampling:p=1.5", r"p must be in \(0, 1\]"),
        ("loss-sampling:pp=0.5", r"unknown option 'pp' \(did you mean 'p'\?\)"),
        ("loss-sampling:p", "is not KEY=VALUE"),
        ({"name": "whole", "p": 1}, "takes no options"),
        ("patchwise:sampler=unifrom", r"did you mean 'uniform'"),
        ("patchwise:patch_size=big", "patch_size must be an integer or rf"),
        ("patchwise:patches_per_image=0", "patches_per_image must be a whole number >= 1"),
        ("class-balanced:by=weights", "use one of sampling, inverse, median"),
    ],
)
def test_bad_specs_name_the_option_and_fix(spec, pattern):
    with pytest.raises(InputError, match=pattern):
        build_regime(spec)


def test_config_resolves_regime_and_refuses_double_class_balancing():
    cfg = TrainConfig.from_dict({"data": "d", "regime": "loss-sampling:p=0.5"}).resolved()
    assert cfg.regime == {"name": "loss-sampling", "p": 0.5, "seed": 0, "cell": "auto"}
    with pytest.raises(InputError, match="set class_weights: none"):
        TrainConfig.from_dict({"data": "d", "regime": "class-balanced", "class_weights": "median"}).resolved()


# --- loss sampling -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "base,p,want", [(8, 1.0, 8), (8, 0.5, 16), (8, 0.25, 32), (8, 0.3, 27), (8, 0.1, 80), (1, 0.99, 2)]
)
def test_batch_scaled_by_one_over_p(base, p, want):
    assert LossSampling(p=p).batch_size(base) == want


def test_keeps_expected_fraction_of_cells_on_a_coarse_grid():
    r = LossSampling(p=0.3).bind(nn.Identity())
    batch = _batch(4, 100, 100)
    logits = torch.zeros(4, 3, 50, 50)  # coarse: smaller than the image, each cell drawn alone
    kept = r.weight_map(batch, logits, step=0)
    n = kept.numel()
    assert set(kept.unique().tolist()) <= {0.0, 1.0}
    # binomial(10000, 0.3): 5 sigma = 229 cells
    assert abs(kept.sum().item() - 0.3 * n) < 5 * math.sqrt(n * 0.3 * 0.7)


def test_dense_output_keeps_whole_stride_blocks():
    model = build_model("allconv", num_classes=3, in_channels=1, width=2)
    r = LossSampling(p=0.5).bind(model)
    assert r._cell == 8
    batch = _batch(2, 60, 44)  # not multiples of 8: the last blocks are cut
    kept = r.weight_map(batch, torch.zeros(2, 3, 60, 44), step=5)
    assert kept.shape == (2, 60, 44)
    blocks = F.pad(kept, (0, 4, 0, 4), value=-1).reshape(2, 8, 8, 6, 8)  # [b, by, 8, bx, 8]
    for b in range(2):
        for by in range(8):
            for bx in range(6):
                vals = blocks[b, by, :, bx, :]
                vals = vals[vals >= 0]
                assert vals.min() == vals.max(), "a block is kept or dropped whole"
    # an explicit cell overrides the model's stride
    assert LossSampling(p=0.5, cell=4).bind(model)._cell == 4


def test_draws_are_seeded_per_step_and_process():
    r = LossSampling(p=0.5, seed=1).bind(nn.Identity())
    batch, logits = _batch(2, 30, 30), torch.zeros(2, 3, 30, 30)
    a = r.weight_map(batch, logits, step=3, rank=0)
    assert torch.equal(a, r.weight_map(batch, logits, step=3, rank=0))
    assert not torch.equal(a, r.weight_map(batch, logits, step=4, rank=0))
    assert not torch.equal(a, r.weight_map(batch, logits, step=3, rank=1))
    assert not torch.equal(a, LossSampling(p=0.5, seed=2).bind(nn.Identity()).weight_map(batch, logits, step=3))


def test_p_one_is_bit_identical_to_whole_image_loss_and_gradient():
    torch.manual_seed(0)
    batch = _batch(2, 24, 24)
    batch["mask"][0, :3] = 255
    logits = torch.randn(2, 3, 24, 24, requires_grad=True)
    r = LossSampling(p=1.0).bind(build_model("allconv", num_classes=3, in_channels=1, width=2))
    sampled = pixelwise_loss(logits, batch["mask"], weight_map=r.weight_map(batch, logits, step=7))
    whole = pixelwise_loss(logits, batch["mask"], weight_map=WholeImage().weight_map(batch, logits))
    assert torch.equal(sampled, whole)
    assert torch.equal(torch.autograd.grad(sampled, logits)[0], torch.autograd.grad(whole, logits)[0])


def test_loss_is_normalised_by_kept_cells():
    torch.manual_seed(1)
    batch = _batch(1, 10, 10)
    logits = torch.randn(1, 3, 10, 10)
    keep = LossSampling(p=0.4).bind(nn.Identity()).weight_map(batch, logits, step=0)
    ce = F.cross_entropy(logits, batch["mask"], reduction="none")
    want = ce[keep > 0].mean()  # hand reference: the mean over kept cells only
    assert torch.allclose(pixelwise_loss(logits, batch["mask"], weight_map=keep), want)
    assert count_kept_cells(batch["mask"], keep) == int(keep.sum())


# --- class balancing -----------------------------------------------------------------------
def _skewed_mask():
    mask = torch.zeros(100, 100, dtype=torch.int64)  # class 0: 9000, class 1: 900, class 2: 100 pixels
    mask.view(-1)[9000:9900] = 1
    mask.view(-1)[9900:] = 2
    return mask


def test_class_balanced_sampling_keeps_each_class_equally_often():
    mask = _skewed_mask()
    r = ClassBalanced().bind(None, [{"mask": mask}], num_classes=3)
    assert r._table == pytest.approx((100 / 9000, 100 / 900, 1.0))  # q_c = min count / count_c
    batch, logits = {"image": torch.zeros(1, 1, 100, 100), "mask": mask[None]}, torch.zeros(1, 3, 100, 100)
    kept = torch.zeros(3)
    for step in range(40):
        w = r.weight_map(batch, logits, step=step)
        kept += torch.bincount(mask[w[0] > 0], minlength=3)
    # 100 expected per class and step: 4000 each; binomial sd of class 0 is ~63
    assert kept.tolist() == pytest.approx([4000, 4000, 4000], rel=0.08)


@pytest.mark.parametrize("mode", ["inverse", "median"])
def test_class_balancing_by_weighting_equals_class_weights(mode):
    mask = _skewed_mask()[None]
    mask[0, 0, :7] = 255
    weights = class_weights_from_masks([mask[0]], 3, mode)
    r = ClassBalanced(by=mode).bind(None, [{"mask": mask[0]}], num_classes=3)
    logits = torch.randn(1, 3, 100, 100, generator=torch.Generator().manual_seed(0))
    batch = {"image": torch.zeros(1, 1, 100, 100), "mask": mask}
    got = pixelwise_loss(logits, mask, weight_map=r.weight_map(batch, logits))
    assert torch.allclose(got, pixelwise_loss(logits, mask, class_weights=weights), rtol=1e-6)
    assert torch.allclose(got, F.cross_entropy(logits, mask, weight=weights, ignore_index=255), rtol=1e-6)


def test_count_kept_cells_counts_labelled_kept_weighted_cells():
    target = torch.tensor([[[0, 1, 255], [2, 2, 1]]])
    wm = torch.tensor([[[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]])
    assert count_kept_cells(target) == 5
    assert count_kept_cells(target, wm) == 4
    assert count_kept_cells(target, wm, torch.tensor([1.0, 1.0, 0.0])) == 2  # the two class-2 cells drop


# --- model geometry --------------------------------------------------------------------------
def test_score_stride_and_rf_patch_size_from_the_model():
    dense = build_model("allconv", num_classes=3, in_channels=1, width=2)
    assert score_stride(dense) == 8
    assert score_stride(build_model("fcn8s", num_classes=3, in_channels=1)) == 8
    assert score_stride(build_model("fcn32s", num_classes=3, in_channels=1)) == 32
    assert score_stride(nn.Conv2d(1, 3, 3), in_channels=1) == 1  # no attribute: the traced output stride
    assert score_stride(nn.Conv2d(1, 3, 3, stride=4), in_channels=1) == 4
    assert Patchwise().bind(dense)._patch == dense.receptive_field == 38
    # a model without the attribute: the geometry's receptive field (two 3x3 convs: 5)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 3, 3))
    assert Patchwise().bind(net, in_channels=1)._patch == 5
    assert Patchwise(patch_size=12).bind(dense)._patch == 12


# --- FLOPs ---------------------------------------------------------------------------------
def test_forward_flops_hand_counted_cached_and_side_effect_free():
    conv = nn.Conv2d(3, 4, 3)  # 10x10 -> 8x8: 2 * (8*8*4) outputs * (3*3*3) MACs each
    assert forward_flops(conv, (3, 10, 10)) == 2 * 8 * 8 * 4 * 27
    assert batch_flops(conv, torch.zeros(5, 3, 10, 10)) == 5 * 2 * 8 * 8 * 4 * 27
    assert (3, 10, 10) in _CACHE[conv]
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1, bias=False)).train()
    net[0].train(False)  # mixed modes come back as they were
    before = net[1].running_mean.clone()
    assert forward_flops(net, (1, 6, 6)) == 2 * 16 * 2 * 9 + 2 * 16 * 2 * 2
    assert torch.equal(net[1].running_mean, before) and net[1].num_batches_tracked == 0
    assert [m.training for m in net] == [False, True, True]


def test_regime_core_modules_import_no_lightning():
    # design contract: regimes, samplers, equivalence and FLOP counting are core (torch/numpy only)
    import subprocess
    import sys

    code = (
        "import sys, fcnkit.training.regimes, fcnkit.training.samplers, fcnkit.training.equivalence, "
        "fcnkit.training.flops; print([m for m in ('lightning', 'torchmetrics', 'matplotlib', 'yaml') if m in "
        "sys.modules])"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )
