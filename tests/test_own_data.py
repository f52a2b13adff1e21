"""Issue 11, own data: a VOC export with its own classes, split fractions, a run evaluated from anywhere."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from fcnkit.data import load_dataset
from fcnkit.data.checks import inspect_dataset
from fcnkit.data.io import voc_palette
from fcnkit.data.layouts import MIN_SCORED_IMAGES, fraction_split
from fcnkit.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")


def write_voc(root, n_train=6, n_val=5, size=16, classes=None, labelmap=None):
    """A 2-class VOC export: palette PNG masks (0 background, 1 nucleus) with 255 borders."""
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    stems = [f"tile_{i:02d}" for i in range(n_train + n_val)]
    rng = np.random.default_rng(0)
    for stem in stems:
        m = np.zeros((size, size), np.uint8)
        y, x = rng.integers(1, size - 7, 2)
        m[y : y + 6, x : x + 6] = 1
        m[y - 1, x : x + 6] = 255  # VOC's void border
        image = (rng.random((size, size, 3)) * 60 + (m == 1)[..., None] * 150).astype(np.uint8)
        Image.fromarray(image).save(root / "JPEGImages" / f"{stem}.jpg", quality=98)
        p = Image.fromarray(m, mode="P")
        p.putpalette([v for rgb in voc_palette(256) for v in rgb])
        p.save(root / "SegmentationClass" / f"{stem}.png")
    lists = root / "ImageSets/Segmentation"
    (lists / "train.txt").write_text("\n".join(stems[:n_train]) + "\n")
    (lists / "val.txt").write_text("\n".join(stems[n_train:]) + "\n")
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    if labelmap:
        (root / "labelmap.txt").write_text(labelmap)
    return root


def test_voc_export_has_its_own_classes(tmp_path):
    info = load_dataset(write_voc(tmp_path / "a")).info  # labels present: 0, 1 (255 ignored)
    assert info.num_classes == 2 and info.class_names == ["class_0", "class_1"]
    assert "labels in the training masks" in info.class_source
    info = load_dataset(write_voc(tmp_path / "b", classes=["background", "nucleus"])).info
    assert info.class_names == ["background", "nucleus"] and info.class_source == "classes.txt"
    cvat = "# label:color_rgb:parts:actions\nbackground:0,0,0::\nnucleus:128,0,0::\n"
    info = load_dataset(write_voc(tmp_path / "c", labelmap=cvat)).info
    assert info.class_names == ["background", "nucleus"] and info.class_source == "labelmap.txt"
    assert load_dataset(tmp_path / "a", num_classes=3).info.num_classes == 3
    report = inspect_dataset(tmp_path / "b")
    assert report.ok and report.num_classes == 2


def test_fraction_split_is_seeded_and_sized(tmp_path):
    stems = [f"s{i}" for i in range(25)]
    a, b = fraction_split(stems, 0.2, 0.1, seed=3), fraction_split(list(reversed(stems)), 0.2, 0.1, seed=3)
    assert a == b  # order of listing does not matter, the seed does
    assert fraction_split(stems, 0.2, 0.1, seed=4) != a
    counts = {s: list(a.values()).count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 18, "val": 5, "test": 2}
    with pytest.raises(InputError, match="no training image"):
        fraction_split(stems[:3], 0.5, 0.5)
    # on a folder dataset: the hash split of 25 images gives a tiny val split; fractions fix it
    for i, stem in enumerate(stems):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(np.full((6, 8), i, np.uint8)).save(tmp_path / "images" / f"{stem}.png")
        Image.fromarray((np.arange(48).reshape(6, 8) % 2).astype(np.uint8)).save(tmp_path / "masks" / f"{stem}.png")
    val = load_dataset(tmp_path, "val", val_fraction=0.2, test_fraction=0.1, split_seed=3)
    assert sorted(p.stem for p in val.pairs) == sorted(s for s, v in a.items() if v == "val")
    assert len(load_dataset(tmp_path, "train", val_fraction=0.2, test_fraction=0.1, split_seed=3)) == 18
    hashed = inspect_dataset(tmp_path)
    assert hashed.splits["val"] < MIN_SCORED_IMAGES and any("too few to score" in w for w in hashed.warnings)
    with pytest.raises(InputError, match="must be a number in"):
        load_dataset(tmp_path, val_fraction=1.5)
    voc = write_voc(tmp_path / "voc")
    with pytest.raises(InputError, match="defines its splits"):
        load_dataset(voc, val_fraction=0.2)


@pytest.mark.slow
def test_voc_run_trains_two_classes_and_evaluates_from_anywhere(tmp_path, monkeypatch, capsys):
    from fcnkit.app.evaluate import evaluate
    from fcnkit.app.train import train
    from fcnkit.checkpoint import read_config

    project = tmp_path / "project"
    write_voc(project / "data", n_train=6, n_val=3, classes=["background", "nucleus"])
    monkeypatch.chdir(project)
    run = train(
        {
            "data": "data",
            "out": "runs/r",
            "max_steps": 2,
            "batch_size": 3,
            "seed": 0,
            "model_options": {"width": 4},
            "device": "cpu",
        },
        report=False,
    )
    out = capsys.readouterr()
    assert "2 classes (background, nucleus) from classes.txt" in out.out
    assert "only 3 images, too few to score" in out.err
    config = read_config(project / run)
    assert config["classes"] == ["background", "nucleus"] and config["num_classes"] == 2
    assert config["train"]["data"] == str(project / "data") and config["train"]["data_relative"] == "../../data"
    monkeypatch.chdir(tmp_path)  # another working directory
    scores = evaluate(project / "runs/r", device="cpu")
    assert scores["images"] == 3 and len(scores["iu"]) == 2
    moved = tmp_path / "moved"
    shutil.move(str(project), moved)  # the whole project moves: the relative form finds the data
    assert not os.path.exists(config["train"]["data"])
    assert evaluate(moved / "runs/r", device="cpu")["images"] == 3
