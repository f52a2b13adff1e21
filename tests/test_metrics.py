"""fcnkit.metrics: hand-computed confusion matrix, and a numpy reference (FCN's score.py) on random data."""

import math

import numpy as np
import pytest
import torch

from fcnkit.metrics import confusion_matrix, scores


def _labels_for(cm):
    """pred/target vectors that produce exactly the confusion matrix ``cm`` (rows = ground truth)."""
    target, pred = [], []
    for i, row in enumerate(cm):
        for j, n in enumerate(row):
            target += [i] * n
            pred += [j] * n
    return torch.tensor(pred), torch.tensor(target)


# 4 classes: class 2 is predicted but never in the ground truth, class 3 appears nowhere.
HAND_CM = [[3, 1, 0, 0], [0, 2, 2, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_confusion_matrix_counts_rows_ground_truth_and_skips_ignore():
    pred, target = _labels_for(HAND_CM)
    # add ignored cells with arbitrary predictions: they must not count
    pred = torch.cat([pred, torch.tensor([0, 1, 3])])
    target = torch.cat([target, torch.tensor([255, 255, 255])])
    perm = torch.randperm(len(pred), generator=torch.Generator().manual_seed(0))
    cm = confusion_matrix(pred[perm].reshape(1, 1, -1), target[perm].reshape(1, 1, -1), 4)
    assert cm.dtype == torch.int64
    assert cm.tolist() == HAND_CM


def test_scores_hand_computed_with_nan_mean():
    s = scores(torch.tensor(HAND_CM))
    # pixel acc = (3 + 2) / 8
    assert s["pixel_accuracy"] == pytest.approx(5 / 8)
    # per-class acc = 3/4, 2/4, 0/0, 0/0 -> mean over the two defined ones
    assert s["mean_accuracy"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    # IU: 3/(4+3-3), 2/(4+3-2), 0/(0+2-0) = 0 (predicted only: counts as 0), class 3 undefined
    assert s["iu"][:3] == pytest.approx([3 / 4, 2 / 5, 0.0])
    assert math.isnan(s["iu"][3])
    assert s["mean_iu"] == pytest.approx((3 / 4 + 2 / 5 + 0) / 3)
    # f.w. IU = (4 * 3/4 + 4 * 2/5 + 0 * 0) / 8
    assert s["fw_iu"] == pytest.approx((4 * 3 / 4 + 4 * 2 / 5) / 8)


def test_scores_of_empty_matrix_are_nan():
    s = scores(torch.zeros(3, 3, dtype=torch.int64))
    assert all(math.isnan(s[k]) for k in ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu"))


def test_confusion_matrix_refuses_logits_and_bad_predictions():
    with pytest.raises(TypeError, match="argmax"):
        confusion_matrix(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="0..2"):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)


# --- reference: the FCN authors' score.py (fast_hist + nanmean), in plain numpy loops ---


def _reference(pred, target, n):
    hist = np.zeros((n, n), dtype=np.int64)
    for p, t in zip(pred.ravel(), target.ravel()):
        if 0 <= t < n:
            hist[t, p] += 1
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist).sum() / hist.sum()
        per_class_acc = np.diag(hist) / hist.sum(1)
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
    freq = hist.sum(1) / hist.sum()
    return hist, {
        "pixel_accuracy": acc,
        "mean_accuracy": np.nanmean(per_class_acc),
        "mean_iu": np.nanmean(iu),
        "fw_iu": (freq[freq > 0] * iu[freq > 0]).sum(),
        "iu": iu,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_numpy_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = 6
    target = rng.integers(0, n - 1, size=(3, 17, 13))  # class 5 never in ground truth
    target[rng.random(target.shape) < 0.1] = 255
    pred = rng.integers(0, n - 2, size=target.shape)  # classes 4, 5 never predicted
    # make predictions correlated with the truth so scores are not all tiny
    agree = (rng.random(target.shape) < 0.6) & (target < n - 2)
    pred[agree] = target[agree]
    hist, ref = _reference(pred, target, n)
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), n)
    np.testing.assert_array_equal(cm.numpy(), hist)
    s = scores(cm)
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu"):
        assert s[key] == pytest.approx(float(ref[key]), rel=1e-12), key
    np.testing.assert_allclose(s["iu"], ref["iu"], rtol=1e-12)
    assert math.isnan(s["iu"][5]) and not math.isnan(s["iu"][4])  # 4: in truth, never predicted -> 0


def test_confusion_matrices_add_up_over_batches():
    rng = np.random.default_rng(3)
    target = torch.from_numpy(rng.integers(0, 4, size=(4, 9, 9)))
    pred = torch.from_numpy(rng.integers(0, 4, size=(4, 9, 9)))
    whole = confusion_matrix(pred, target, 4)
    parts = sum(confusion_matrix(pred[i], target[i], 4) for i in range(4))
    assert torch.equal(whole, parts)


def _fast_hist(a, b, n):
    """torchfcn's / FCN score.py's bincount scorer (label_trues a, label_preds b)."""
    k = (a >= 0) & (a < n)
    return np.bincount(n * a[k].astype(int) + b[k], minlength=n**2).reshape(n, n)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_confusion_matrix_equals_bincount_scorer_on_maps_with_255s(dtype):
    rng = np.random.default_rng(7)
    n = 21
    target = rng.integers(0, n, size=(2, 301, 257))
    target[rng.random(target.shape) < 0.2] = 255
    pred = rng.integers(0, n, size=target.shape)
    expected = _fast_hist(target.ravel(), pred.ravel(), n)
    cm = confusion_matrix(torch.from_numpy(pred).to(dtype), torch.from_numpy(target).to(dtype), n)
    assert cm.dtype == torch.int64
    np.testing.assert_array_equal(cm.numpy(), expected)


def test_confusion_matrix_ignores_predictions_at_ignored_cells_and_custom_ignore_index():
    target = torch.tensor([0, 1, 255, 2, -1, 7])
    pred = torch.tensor([0, 1, 99, 2, -5, 1])  # out-of-range predictions only where nothing is counted
    assert confusion_matrix(pred, target, 3).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    # an ignore label inside 0..K-1 is dropped too
    assert confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]), 3, ignore_index=2).tolist() == [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 0],
    ]
    with pytest.raises(ValueError, match="0..2"):
        confusion_matrix(torch.tensor([0, -1]), torch.tensor([0, 1]), 3)
