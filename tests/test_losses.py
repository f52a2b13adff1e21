"""fcnkit.training.losses: the one pixelwise loss against F.cross_entropy, weight maps, class weights."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcnkit.errors import InputError
from fcnkit.training.losses import class_weights_from_masks, pixelwise_loss


def _batch(seed=0, k=4, shape=(2, 5, 7), ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape[0], k, *shape[1:], generator=g, dtype=torch.float64)
    target = torch.randint(0, k, shape, generator=g)
    target[torch.rand(shape, generator=g) < ignore_frac] = 255
    return logits, target


def test_equals_cross_entropy_with_ignore_index():
    logits, target = _batch()
    ref = F.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(pixelwise_loss(logits, target), ref, rtol=1e-12, atol=0)


def test_equals_cross_entropy_with_class_weights():
    logits, target = _batch(seed=1)
    w = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)
    ref = F.cross_entropy(logits, target, weight=w, ignore_index=255)
    torch.testing.assert_close(pixelwise_loss(logits, target, class_weights=w), ref, rtol=1e-12, atol=0)


def test_weight_map_is_a_weighted_mean_of_cell_losses():
    logits, target = _batch(seed=2)
    g = torch.Generator().manual_seed(5)
    wmap = torch.rand(target.shape, generator=g, dtype=torch.float64)
    cw = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    # explicit formula: -log softmax at the target, weighted, over the non-ignored cells
    valid = target != 255
    t = torch.where(valid, target, 0)
    ce = -torch.log_softmax(logits, 1).gather(1, t[:, None])[:, 0]
    w = wmap * cw[t] * valid
    expected = (w * ce).sum() / w.sum()
    torch.testing.assert_close(
        pixelwise_loss(logits, target, weight_map=wmap, class_weights=cw), expected, rtol=1e-12, atol=0
    )


def test_binary_weight_map_equals_ignoring_the_dropped_cells():
    # loss sampling keeps a subset of cells: a 0/1 map must equal marking the rest 255
    logits, target = _batch(seed=3)
    keep = torch.rand(target.shape, generator=torch.Generator().manual_seed(9)) < 0.5
    dropped = torch.where(keep, target, torch.full_like(target, 255))
    torch.testing.assert_close(
        pixelwise_loss(logits, target, weight_map=keep.double()),
        F.cross_entropy(logits, dropped, ignore_index=255),
        rtol=1e-12,
        atol=0,
    )


def test_all_ignored_batch_gives_zero_not_nan_and_keeps_gradient():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = pixelwise_loss(logits, torch.full((1, 4, 4), 255))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"\[B, K, H, W\]"):
        pixelwise_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))


# Hand-computed example, K = 3:
#   mask A [[0, 0], [0, 1]]    counts [3, 1, 0], 4 labelled pixels
#   mask B [[0, 2], [2, 255]]  counts [1, 0, 2], 3 labelled pixels (255 not counted)
MASKS = [np.array([[0, 0], [0, 1]]), np.array([[0, 2], [2, 255]])]


def test_class_weights_inverse_hand_computed():
    # totals [4, 1, 2], 7 pixels: w_c = 7 / (3 * count_c)
    w = class_weights_from_masks(MASKS, 3, mode="inverse")
    np.testing.assert_allclose(w.numpy(), [7 / 12, 7 / 3, 7 / 6], rtol=1e-6)
    # weighted pixel count equals the unweighted one
    assert float((w * torch.tensor([4.0, 1.0, 2.0])).sum()) == pytest.approx(7.0)


def test_class_weights_median_frequency_hand_computed():
    # f_c = pixels of c / pixels of the images containing c: [4/7, 1/4, 2/3]; median 4/7
    w = class_weights_from_masks(MASKS, 3, mode="median")
    np.testing.assert_allclose(w.numpy(), [1.0, (4 / 7) / (1 / 4), (4 / 7) / (2 / 3)], rtol=1e-6)
    # per-image counts [N, K] give the same answer as the masks
    w2 = class_weights_from_masks(np.array([[3, 1, 0], [1, 0, 2]]), 3, mode="median")
    torch.testing.assert_close(w, w2)


def test_class_weights_from_pooled_counts_absent_class_and_none():
    # [K] counts: f_c = count_c / total; class 3 absent -> weight 0
    w = class_weights_from_masks(np.array([4, 1, 2, 0]), 4, mode="median")
    f = np.array([4, 1, 2]) / 7
    np.testing.assert_allclose(w.numpy(), list(np.median(f) / f) + [0.0], rtol=1e-6)
    assert torch.equal(class_weights_from_masks(MASKS, 3, mode="none"), torch.ones(3))


def test_class_weights_bad_input():
    with pytest.raises(InputError, match="inverse, median"):
        class_weights_from_masks(MASKS, 3, mode="mean")
    with pytest.raises(InputError, match="label 2 but there are 2 classes"):
        class_weights_from_masks(MASKS, 2, mode="inverse")


def test_core_training_modules_do_not_import_lightning():
    # design contract: losses/regimes/metrics are core (torch/numpy only)
    import subprocess
    import sys

    code = (
        "import sys, fcnkit.metrics, fcnkit.training.losses, fcnkit.training.regimes, fcnkit.engine.config; "
        "bad = [m for m in ('lightning', 'torchmetrics', 'matplotlib', 'yaml') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
