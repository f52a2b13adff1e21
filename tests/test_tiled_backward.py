"""tiled_backward: the gradient of the whole-image loss, tile by tile, equals the whole-image one.

float64 throughout, so "equal" means <= 1e-10 relative (measured: ~1e-14). Nets: allconv with
stride 8 and skips (same padding), allconv valid + strided + learned upsampling + eval-mode
BatchNorm, a valid coarse allconv, and FCN-8s on the allconv backbone (eval BatchNorm, align 32).
"""

import numpy as np
import pytest
import torch

from fcnkit import build_model, tiled_backward
from fcnkit.errors import InputError
from fcnkit.training.losses import pixelwise_loss
from fcnkit.training.regimes import LossSampling
from fcnkit.training.tiled_backward import tiled_gradients, training_tile

pytestmark = pytest.mark.usefixtures("one_thread")
K = 4


def _net(kind):
    torch.manual_seed(0)
    if kind == "same-skips":  # stride 8, FCN-style skips from every stage, fixed bilinear upsampling
        m = build_model("allconv", num_classes=K, width=4, norm="none")
    elif kind == "valid-learned-bn":
        m = build_model("allconv", num_classes=K, width=4, padding="valid", downsample="strided", learn_upsampling=True)
    elif kind == "coarse-valid":
        m = build_model("allconv", num_classes=K, width=4, norm="none", padding="valid", output="coarse")
    else:
        m = build_model("fcn8s", num_classes=K)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3 if kind != "fcn8s" else 0.1)  # non-zero skips, non-trivial BatchNorm
    for b in m.modules():
        if isinstance(b, torch.nn.BatchNorm2d):
            b.running_mean.uniform_(-0.5, 0.5)
            b.running_var.uniform_(0.5, 2.0)
    return m.double().eval()


def _case(model, size, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, *size, generator=g, dtype=torch.float64).to(next(model.parameters()).dtype)
    with torch.no_grad():
        out_shape = model(x[None]).shape[-2:]
    mask = torch.randint(0, K, tuple(out_shape), generator=g)
    mask[: out_shape[0] // 5] = 255  # an ignored band, and ignored cells scattered
    mask[torch.rand(tuple(out_shape), generator=g) < 0.1] = 255
    return x, mask


def _whole_grads(model, x, mask, **kw):
    model.zero_grad(set_to_none=True)
    loss = pixelwise_loss(model(x[None]), mask[None], **kw)
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.requires_grad]


def _max_rel(model, ref):
    got = [p.grad for p in model.parameters() if p.requires_grad]
    return max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-300)) for a, b in zip(got, ref))


@pytest.mark.parametrize(
    "kind, size, tiles",
    [
        ("same-skips", (150, 130), (72, 84, 100)),  # halo 32, align 8; 100 divides neither side
        ("valid-learned-bn", (150, 130), (72, 88, 100)),
        ("coarse-valid", (150, 130), (72, 84, 100)),
        ("fcn8s", (400, 450), (416,)),  # halo 192, align 32: 1 x 2 tiles (it is the costly one)
    ],
)
def test_tiled_gradient_equals_the_whole_image_gradient_fp64(kind, size, tiles):
    model, tol = _net(kind), 1e-10
    x, mask = _case(model, size)
    loss, ref = _whole_grads(model, x, mask)
    for tile in tiles:
        model.zero_grad(set_to_none=True)
        got = tiled_backward(model, x, mask, tile, reduction="mean")
        assert got == pytest.approx(loss, rel=tol)
        assert _max_rel(model, ref) <= tol, (kind, tile)
    assert tiled_gradients(model, x, mask, tiles[0]).tiles > 1  # really tiled


def test_sum_reduction_class_weights_and_accumulation_into_grad():
    model = _net("same-skips")
    x, mask = _case(model, (120, 100))
    cw = torch.tensor([1.0, 0.5, 2.0, 3.0], dtype=torch.float64)
    wm = torch.rand(mask.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    model.zero_grad(set_to_none=True)
    loss = (
        pixelwise_loss(model(x[None]), mask[None], weight_map=wm[None], class_weights=cw, ignore_index=255)
        * ((mask != 255) * cw[torch.where(mask != 255, mask, 0)] * wm).sum()
    )  # mean -> sum
    loss.backward()
    ref = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    for p in model.parameters():  # tiled_backward ADDS to .grad, as backward() does
        p.grad = torch.ones_like(p) if p.requires_grad else None
    got = tiled_backward(model, x, mask, 80, weights=wm, class_weights=cw, reduction="sum")
    assert got == pytest.approx(float(loss.detach()), rel=1e-12)
    assert _max_rel(model, [r + 1 for r in ref]) <= 1e-10


def test_a_batch_is_one_loss_with_one_denominator_and_a_numpy_mask_works():
    model = _net("same-skips")
    (x1, m1), (x2, m2) = _case(model, (96, 104), 1), _case(model, (96, 104), 2)
    x, mask = torch.stack([x1, x2]), torch.stack([m1, m2])
    model.zero_grad(set_to_none=True)
    pixelwise_loss(model(x), mask).backward()
    ref = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    tiled_backward(model, x, mask.numpy(), 80, reduction="mean")
    assert _max_rel(model, ref) <= 1e-10


def test_tiles_without_a_sampled_cell_are_skipped_and_the_gradient_is_the_masked_one():
    model = _net("same-skips")
    x, mask = _case(model, (200, 200))
    mask[:] = torch.where(mask == 255, 1, mask)  # everything labelled: only the sampling drops cells
    # loss sampling p = 0.25 on the stride-8 cells, then no cell at all in the right half
    batch = {"image": x[None], "mask": mask[None]}
    wm = LossSampling(p=0.25, seed=1).bind(model).weight_map(batch, torch.empty(1, K, 200, 200), step=0)[0].double()
    wm[:, 100:] = 0
    _, ref = _whole_grads(model, x, mask, weight_map=wm[None])
    model.zero_grad(set_to_none=True)
    result = tiled_gradients(model, x, mask, 72, weights=wm, reduction="mean")
    for p, g in zip([p for p in model.parameters() if p.requires_grad], result.grads):
        p.grad = g
    assert _max_rel(model, ref) <= 1e-10
    assert result.skipped > 0 and result.tiles + result.skipped == len(list(_plan(model, 72, (200, 200))))
    assert result.cells == int((wm > 0).sum())


def _plan(model, tile, size):
    from fcnkit.geometry import receptive_field
    from fcnkit.inference.tiling import plan_tiles

    g = receptive_field(model, 3)
    return plan_tiles(size, tile, g.halo(), g.align, "crop")


def test_train_mode_batchnorm_group_norm_and_dropout_are_refused_with_the_fix():
    x, mask = torch.randn(3, 96, 96), torch.zeros(96, 96, dtype=torch.int64)
    bn = build_model("allconv", num_classes=2).train()
    with pytest.raises(InputError, match=r"BatchNorm in training mode.*\.eval\(\).*norm='none'"):
        tiled_backward(bn, x, mask, 72)
    gn = build_model("allconv", num_classes=2, norm="group")
    with pytest.raises(InputError, match=r"cannot give the whole-image gradient.*norm='none'"):
        tiled_backward(gn, x, mask, 72)
    drop = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.Dropout2d(0.5))
    with pytest.raises(InputError, match="Dropout in training mode"):
        tiled_backward(drop, x, mask, 72)
    bn.eval()  # frozen BatchNorm is fine
    assert np.isfinite(tiled_backward(bn, x, mask, 72))


def test_bad_mask_shape_and_bad_arguments_say_the_fix():
    model = _net("coarse-valid").float()
    x = torch.randn(3, 120, 120)
    with pytest.raises(InputError, match="score cells where the mask has"):
        tiled_backward(model, x, torch.zeros(120, 120, dtype=torch.int64), 72)
    with pytest.raises(InputError, match="reduction"):
        tiled_backward(model, x, torch.zeros(12, 12, dtype=torch.int64), 72, reduction="avg")
    with pytest.raises(InputError, match="tile"):
        tiled_backward(model, x, torch.zeros(12, 12, dtype=torch.int64), "big")


def test_auto_tile_fits_the_budget_and_is_aligned():
    model = _net("same-skips").float()
    from fcnkit.geometry import receptive_field

    g = receptive_field(model, 3)
    small, large = training_tile(model, g, 3, 64 << 20), training_tile(model, g, 3, 256 << 20)
    assert small % 8 == 0 and large % 8 == 0 and 2 * small - 16 <= large <= 2 * small + 16  # side ~ sqrt(budget)
    with pytest.raises(InputError, match="fits no training tile"):
        training_tile(model, g, 3, 1 << 10)


def test_even_tile_keeps_the_tile_count_and_shrinks_the_overlap():
    from fcnkit.inference.tiling import plan_axis
    from fcnkit.training.tiled_backward import even_tile

    assert even_tile(2048, 1500, 32, 8) == 1056  # 2 tiles sharing one seam of 2 halos, not 1500 + 612
    for length in range(150, 2500, 37):
        for tile, halo, align in ((100, 32, 8), (512, 32, 8), (1500, 192, 32)):
            w = even_tile(length, tile, halo, align)
            assert w <= tile and w % align == 0 or w == tile
            assert len(plan_axis(length, w, halo, align)) == len(plan_axis(length, tile, halo, align))
