"""Issue 11, predict: intensity recorded at training and checked at predict (16-bit into an 8-bit
model), --intensity match / --force, --scale/--resize, globs and recursive folders, default --out,
one progress bar across files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from _predict_helpers import save_grey_run
from PIL import Image

from fcnkit.app.predict import predict_files
from fcnkit.app.predict_inputs import expand_inputs, input_stats, intensity_check
from fcnkit.errors import InputError, MissingFileError

pytestmark = pytest.mark.usefixtures("one_thread")

TRAINED = {"dtype": "uint8", "p1": 0.05, "p99": 0.8, "size": [24, 32], "images": 5}


@pytest.fixture
def run(tmp_path):
    """A real run folder (RUN/best) with an untrained 1-channel allconv model trained "on uint8"."""
    return save_grey_run(tmp_path, TRAINED)


def _write(tmp_path):
    rng = np.random.default_rng(0)
    eight = (rng.random((20, 28)) * 200 + 10).astype(np.uint8)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.fromarray(eight).save(tmp_path / "in" / "a.png")
    Image.fromarray(eight[::-1]).save(tmp_path / "in" / "sub" / "b.png")
    raw16 = eight.astype(np.uint16) * 16  # a 12-bit camera: 0..4095 in a uint16 TIFF
    tifffile.imwrite(tmp_path / "raw16.tif", raw16)
    return eight


def test_training_records_the_input_and_far_ranges_are_refused(run, tmp_path):
    eight = _write(tmp_path)
    stats = input_stats(type("D", (), {"raw": lambda self, i: (eight, None), "__len__": lambda self: 3})())
    assert stats["dtype"] == "uint8" and stats["size"] == [20, 28] and 0 < stats["p1"] < stats["p99"] <= 1
    raw16 = tmp_path / "raw16.tif"
    with pytest.raises(InputError, match=r"raw16.tif: uint16 values .* trained on uint8 .*--intensity match.*--force"):
        predict_files(run, [raw16], tmp_path / "out")
    assert not (tmp_path / "out" / "raw16_mask.png").exists()
    warnings = []
    r = predict_files(run, [raw16], tmp_path / "out", force=True, warn=warnings.append)[0]
    assert r["mask"].is_file() and "--force" in warnings[0]
    # match: the 12-bit image mapped onto the training range predicts like the 8-bit original
    matched = predict_files(run, [raw16], tmp_path / "m", intensity="match", warn=warnings.append)[0]
    plain = predict_files(run, [tmp_path / "in" / "a.png"], tmp_path / "p")[0]
    a, b = np.asarray(Image.open(matched["mask"])), np.asarray(Image.open(plain["mask"]))
    assert (a == b).mean() > 0.9 and "mapped onto the training range" in warnings[-1]
    # an image in the training range passes silently
    assert intensity_check("x", eight, TRAINED) == (None, None)


def test_globs_recursive_default_out_scale_and_one_bar(run, tmp_path, capsys, monkeypatch):
    _write(tmp_path)
    (tmp_path / "nested" / "deep").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "nested" / "deep" / "c.png")
    with pytest.raises(MissingFileError, match="--recursive searches sub-folders"):
        expand_inputs([tmp_path / "nested"])
    assert [p.name for p in expand_inputs([tmp_path / "nested"], recursive=True)] == ["c.png"]
    assert [p.name for p in expand_inputs([tmp_path / "in"])] == ["a.png"]
    assert [p.name for p in expand_inputs([tmp_path / "in"], recursive=True)] == ["a.png", "b.png"]
    assert [p.name for p in expand_inputs([str(tmp_path / "in" / "**" / "*.png")])] == ["a.png", "b.png"]
    with pytest.raises(MissingFileError, match="no image matches"):
        expand_inputs([str(tmp_path / "*.jpg")])
    import sys

    from fcnkit.cli.main import main

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the bar shows on a terminal only
    assert main(["predict", str(run), str(tmp_path / "in" / "**" / "*.png"), "--scale", "0.5"]) == 0
    captured = capsys.readouterr()
    for name in ("a", "b"):  # default --out: RUN/predictions; masks at the input's size despite --scale
        mask = np.asarray(Image.open(run / "predictions" / f"{name}_mask.png"))
        assert mask.shape == (20, 28)
    assert "predict: 100%" in captured.err and "2/2" in captured.err and captured.err.count("100%") == 1
    r = predict_files(run, [tmp_path / "in" / "a.png"], tmp_path / "r", resize="train")[0]
    assert np.asarray(Image.open(r["mask"])).shape == (20, 28)
    with pytest.raises(InputError, match="--scale and --resize"):
        predict_files(run, [tmp_path / "in" / "a.png"], tmp_path / "r", scale=2.0, resize=(8, 8))
