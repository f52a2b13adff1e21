"""Issue 11, reports: a confusion matrix readable from 2 to 50 classes, a palette whose first 20
colours differ, the worst images by IU with a legend and an FP/FN map, test scores, no validation said plainly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fcnkit.app.report_figures import error_map, per_image_iu, plot_confusion
from fcnkit.data.io import voc_palette
from fcnkit.data.palette import MIN_DISTANCE, distinct_palette, min_distance

pytestmark = pytest.mark.usefixtures("one_thread")


def test_confusion_figure_sizes_for_2_and_50_classes(tmp_path):
    two = plot_confusion([[900, 100], [30, 70]], ["background", "nucleus"], tmp_path / "two.png")
    w2, h2 = Image.open(two).size
    assert w2 >= 700 and h2 >= 380  # was 210x190 px with 6-pt text
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 1000, (50, 50)) + np.eye(50, dtype=np.int64) * 5000
    fifty = plot_confusion(cm, [f"class_{i}" for i in range(50)], tmp_path / "fifty.png")
    w50, h50 = Image.open(fifty).size
    assert 1800 <= w50 <= 2800 and 1000 <= h50 <= 1500  # 0.25 inch or more per cell, bounded


def test_first_20_colours_are_distinguishable():
    assert min_distance(distinct_palette(20)) >= MIN_DISTANCE > 4 * min_distance(voc_palette(20))
    assert distinct_palette(2) == [[0, 0, 0], [255, 0, 0]] and len(distinct_palette(60)) == 60
    assert len({tuple(c) for c in distinct_palette(60)}) == 60


def test_per_image_iu_and_error_map():
    mask = np.array([[0, 0, 1], [1, 1, 255]])
    pred = np.array([[0, 1, 1], [0, 1, 1]])
    # class 0: inter 1, union 3; class 1: inter 2, union 4 (the ignored cell does not count)
    assert per_image_iu(pred, mask, 2) == pytest.approx((1 / 3 + 2 / 4) / 2)
    picture = error_map(np.full((2, 3), 100, np.uint8), pred, mask)
    assert tuple(picture[0, 1]) == (230, 25, 25) and tuple(picture[1, 0]) == (30, 90, 255)  # FP red, FN blue
    assert tuple(picture[1, 2]) == (100, 100, 100) and tuple(picture[0, 0]) == (100, 100, 100)


@pytest.mark.slow
def test_report_worst_images_test_scores_and_no_validation(tmp_path, squares_data):
    from fcnkit.app.train import train

    squares_data(train=8, val=6)  # the fixture serves its val set for "test" too
    run = train(
        {
            "data": "squares",
            "out": str(tmp_path / "run"),
            "batch_size": 4,
            "epochs": 1,
            "model_options": {"width": 4},
            "device": "cpu",
        }
    )
    text = (run / "report.md").read_text()
    assert "## Validation scores" in text and "## Test scores (6 images)" in text and "mean Dice" in text
    assert "## Worst validation images" in text and text.count("| 0.") + text.count("| 1.0") >= 6
    assert "false positives red" in text and "| square | `#ff0000` |" in text
    w, h = Image.open(run / "predictions.png").size
    assert w > h / 3  # four columns (image, truth, prediction, errors)
    short = train(
        {
            "data": "squares",
            "out": str(tmp_path / "short"),
            "batch_size": 4,
            "epochs": 1,
            "max_steps": 1,
            "model_options": {"width": 4},
            "device": "cpu",
        }
    )
    text = (short / "report.md").read_text()
    assert "This run never validated" in text and "## Validation scores" not in text
    assert "absent from both" not in text
    from fcnkit.cli.train import summary

    assert "no validation ran" in summary(short) and "--val-every-n-steps" in summary(short)


def test_experiments_flag_arms_at_chance_level():
    from fcnkit.experiments.chance import chance_note

    note = chance_note({"maxpool": 0.09, "strided": 0.30}, "mean_iu", "digit-canvas", "mean IU")
    assert "Arms maxpool scored at chance level" in note and "0.091" in note and "11 classes" in note
    every = chance_note({"a": 0.10, "b": 0.105}, "accuracy", "digits")
    assert every.startswith("**Warning: Every arm") and "no arm can be called better" in every
    assert chance_note({"a": 0.6, "b": 0.7}, "mean_iu", "nuclei") is None
    assert chance_note({"a": 0.1}, "pixel_accuracy", "digits") is None  # no constant-prediction bound used
    assert chance_note({"a": 0.1}, "mean_iu", "/some/folder") is None
