"""Every regime through the real train() loop (Lightning on CPU), and the per-step log it writes.

The dataset is a tiny in-test one (fcnkit.data.load_dataset is replaced); the model is a real,
narrow allconv, so the regime's model-dependent settings (rf, stride) are resolved for real.
"""

import numpy as np
import pytest

from fcnkit.app.train import train_and_log
from fcnkit.engine.config import TrainConfig
from fcnkit.engine.runlog import read_step_log
from fcnkit.training.flops import forward_flops

SIZE = 24


@pytest.fixture
def squares(squares_data):
    squares_data(train=8, val=2, size=SIZE, frame=2)


def _cfg(tmp_path, regime, **kw):
    return TrainConfig.from_dict(
        {
            "data": "squares",
            "batch_size": 2,
            "epochs": 1,
            "out": str(tmp_path / "run"),
            "threads": 1,
            "model_options": {"width": 2, "stages": 2},
            "log_every_n_steps": 1,
            "regime": regime,
            **kw,
        }
    )


def _check_totals(rows):
    for name in ("images", "items", "cells", "flops", "seconds"):
        steps = np.array([r[f"step_{name}"] for r in rows])
        assert np.allclose(np.cumsum(steps), [r[f"total_{name}"] for r in rows])


def test_sparse_logging_keeps_every_step_in_the_totals(tmp_path, squares):
    # rows only on the steps Lightning writes (every 2nd), the running sums still count all 4 steps
    rows = train_and_log(_cfg(tmp_path, "whole", log_every_n_steps=2))["train"]
    assert [int(r["step"]) for r in rows] == [1, 3]
    assert [r["total_images"] for r in rows] == [4, 8] and [r["step_images"] for r in rows] == [2, 2]


def test_whole_logs_images_cells_flops_and_time_per_step(tmp_path, squares):
    out = train_and_log(_cfg(tmp_path, "whole"))
    rows = out["train"]
    assert len(rows) == 4  # 8 images, 2 per step
    model_flops = forward_flops(_model(out), (1, SIZE, SIZE))
    for r in rows:
        assert r["step_images"] == r["step_items"] == 2
        assert r["step_cells"] == 2 * (SIZE - 2) * SIZE  # every labelled pixel
        assert r["step_flops"] == 2 * model_flops and r["step_seconds"] > 0
    _check_totals(rows)
    # validation rows carry the totals spent so far
    assert out["val"][-1]["total_images"] == 8 and "val_mean_iu" in out["val"][-1]
    assert out["config"]["regime"] == {"name": "whole"}


def test_loss_sampling_scales_the_batch_and_keeps_about_p_of_the_cells(tmp_path, squares):
    out = train_and_log(_cfg(tmp_path, "loss-sampling:p=0.5,seed=3"))
    rows = out["train"]
    assert [r["step_images"] for r in rows] == [4, 4]  # ceil(2 / 0.5) images per step
    labelled = 4 * (SIZE - 2) * SIZE
    kept = sum(r["step_cells"] for r in rows) / (2 * labelled)
    assert 0.3 < kept < 0.7  # stride-4 blocks of 16 pixels: 72 draws per step, p = 0.5
    assert all(r["step_cells"] % 1 == 0 and r["step_cells"] < labelled for r in rows)
    _check_totals(rows)


def test_class_balanced_sampling_trains(tmp_path, squares):
    rows = train_and_log(_cfg(tmp_path, "class-balanced"))["train"]
    # background (about 14x the square's pixels) is subsampled: far fewer cells than labelled
    assert all(r["step_cells"] < 0.3 * 2 * (SIZE - 2) * SIZE for r in rows)


def test_patchwise_crops_are_the_batch_items(tmp_path, squares):
    out = train_and_log(_cfg(tmp_path, {"name": "patchwise", "sampler": "class-balanced", "patches_per_image": 3}))
    rows = out["train"]
    # allconv with 2 stages: receptive field 18, so 18x18 crops, 3 per image, 2 images per step
    assert [(r["step_images"], r["step_items"]) for r in rows] == [(2, 6)] * 4
    assert rows[0]["step_flops"] == 6 * forward_flops(_model(out), (1, 18, 18))
    assert out["config"]["regime"]["patch_size"] == "rf"
    _check_totals(rows)
    assert read_step_log(out["run"])["train"] == rows


def _model(out):
    from fcnkit.checkpoint import load_checkpoint

    return load_checkpoint(out["run"] / "last")[0]
