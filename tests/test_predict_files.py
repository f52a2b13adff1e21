"""``fcnkit predict RUN_DIR INPUT... --out DIR``: every image mode, masks/overlays/probabilities,
atomic outputs, clear errors. The checkpoint loader is replaced by a hand-made model so these
tests do not depend on the model registry (tests/test_predict_registry.py covers real checkpoints)."""

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from torch import nn

import fcnkit.checkpoint
from fcnkit.app import predict as files
from fcnkit.app.predict import predict_files
from fcnkit.cli import main as cli
from fcnkit.data.io import read_image, to_model_input
from fcnkit.errors import InputError, MissingFileError

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
PALETTE = [[0, 0, 0], [200, 0, 0], [0, 200, 0]]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(stride=1):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=stride, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 3, 1),
    ).eval()


@pytest.fixture
def run(monkeypatch, tmp_path):
    """A fake run folder whose checkpoint is ``tiny()``; returns (run_dir, model holder)."""
    holder = {"model": tiny()}
    config = {
        "task": "segmentation",
        "in_channels": 3,
        "num_classes": 3,
        "palette": PALETTE,
        "normalization": {"mean": MEAN, "std": STD},
    }
    monkeypatch.setattr(
        fcnkit.checkpoint, "load_checkpoint", lambda path, map_location="cpu": (holder["model"], dict(config))
    )
    monkeypatch.setattr(fcnkit.checkpoint, "resolve_checkpoint", lambda path: path)
    (tmp_path / "run").mkdir()
    return tmp_path / "run", holder


def _images(d):
    rng = np.random.default_rng(0)
    d.mkdir(exist_ok=True)
    out = {}
    Image.fromarray(rng.integers(0, 255, (37, 53), dtype=np.uint8), "L").save(d / "grey.png")
    Image.fromarray(rng.integers(0, 255, (41, 29, 3), dtype=np.uint8), "RGB").save(d / "rgb.png")
    Image.fromarray(rng.integers(0, 255, (30, 31, 4), dtype=np.uint8), "RGBA").save(d / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (33, 35, 3), dtype=np.uint8), "RGB").save(d / "photo.jpg")
    import tifffile

    tifffile.imwrite(d / "deep.tif", rng.integers(0, 65535, (45, 50), dtype=np.uint16))
    for p in sorted(d.iterdir()):
        out[p.stem] = p
    return out


def _expected_labels(model, path):
    x = to_model_input(read_image(path), 3, MEAN, STD)
    with torch.no_grad():
        return model(x[None])[0].argmax(0).numpy()


def test_every_image_mode_gets_mask_overlay_probabilities(run, tmp_path):
    run_dir, holder = run
    imgs = _images(tmp_path / "in")
    results = predict_files(run_dir, [tmp_path / "in"], tmp_path / "out", probabilities=True)
    assert {r["input"].stem for r in results} == set(imgs)
    for r in results:
        h, w = r["size"]
        with Image.open(r["mask"]) as m:
            assert m.mode == "P" and m.size == (w, h)
            labels = np.asarray(m)
            assert m.getpalette()[3:6] == PALETTE[1]
        np.testing.assert_array_equal(labels, _expected_labels(holder["model"], r["input"]))
        with Image.open(r["overlay"]) as o:
            assert o.mode == "RGB" and o.size == (w, h)
        prob = np.load(r["probabilities"])
        assert prob.shape == (3, h, w) and np.allclose(prob.sum(0), 1, atol=1e-5)
        np.testing.assert_array_equal(prob.argmax(0), labels)
    assert not [
        p for p in (tmp_path / "out").iterdir() if p.name.startswith(".") and p.name != ".fcnkit"
    ]  # no temporaries (.fcnkit: the output marker)


def test_tiled_masks_equal_whole_image_masks(run, tmp_path):
    run_dir, _ = run
    imgs = _images(tmp_path / "in")
    whole = predict_files(run_dir, [imgs["deep"]], tmp_path / "a")
    tiled = predict_files(run_dir, [imgs["deep"]], tmp_path / "b", tile=16, batch_size=3)
    assert tiled[0]["tiles"] > 1
    a, b = (np.asarray(Image.open(r[0]["mask"])) for r in (whole, tiled))
    np.testing.assert_array_equal(a, b)


def test_coarse_output_is_mapped_to_the_input_size(run, tmp_path):
    run_dir, holder = run
    holder["model"] = tiny(stride=2)
    imgs = _images(tmp_path / "in")
    r = predict_files(run_dir, [imgs["rgb"]], tmp_path / "out", probabilities=True)[0]
    with Image.open(r["mask"]) as m:
        assert m.size == (29, 41)
        labels = np.asarray(m)
    coarse = _expected_labels(holder["model"], imgs["rgb"])
    assert coarse.shape == (21, 15) and np.load(r["probabilities"]).shape == (3, 21, 15)
    # stride 2, offset 0: pixel (y, x) shows cell (round(y / 2), round(x / 2))
    np.testing.assert_array_equal(labels[::2, ::2], coarse)


def test_huge_images_get_a_tiled_tiff_mask_and_a_reduced_overlay(run, tmp_path, monkeypatch):
    run_dir, holder = run
    monkeypatch.setattr(files, "PNG_MAX_PIXELS", 500)
    monkeypatch.setattr(files, "SCRATCH_PIXELS", 500)
    imgs = _images(tmp_path / "in")
    r = predict_files(run_dir, [imgs["grey"]], tmp_path / "out", tile=24)[0]
    assert r["mask"].suffix == ".tif" and r["overlay_factor"] == 2
    with tifffile.TiffFile(r["mask"]) as t:
        page = t.pages[0]
        assert page.is_tiled and page.photometric == tifffile.PHOTOMETRIC.PALETTE
        np.testing.assert_array_equal(page.asarray(), _expected_labels(holder["model"], imgs["grey"]))
    with Image.open(r["overlay"]) as o:
        assert o.size == (27, 19)
    assert not [
        p for p in (tmp_path / "out").iterdir() if p.name.startswith(".") and p.name != ".fcnkit"
    ]  # scratch files removed


def test_a_failing_image_leaves_no_outputs(run, tmp_path):
    run_dir, _ = run
    imgs = _images(tmp_path / "in")
    data = imgs["rgb"].read_bytes()
    (tmp_path / "in" / "broken.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="broken.png.*corrupt or truncated"):
        predict_files(run_dir, [tmp_path / "in" / "broken.png"], tmp_path / "out")
    assert not list((tmp_path / "out").glob("*"))


def test_a_failure_during_writing_removes_every_output_of_that_image(run, tmp_path, monkeypatch):
    run_dir, _ = run
    imgs = _images(tmp_path / "in")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(files, "write_overlay", boom)
    with pytest.raises(OSError):
        predict_files(run_dir, [imgs["rgb"]], tmp_path / "out", probabilities=True)
    assert not (tmp_path / "out").exists()  # neither the mask nor the probabilities (nor the folder it created)


def test_bad_inputs_name_the_file(run, tmp_path):
    run_dir, _ = run
    with pytest.raises(MissingFileError, match="nope.png: input image not found"):
        predict_files(run_dir, [tmp_path / "nope.png"], tmp_path / "out")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b" / "x.png")
    with pytest.raises(InputError, match="collide"):
        predict_files(run_dir, [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"], tmp_path / "out")


def test_run_dir_without_checkpoint(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    with pytest.raises(MissingFileError, match="no checkpoint here"):
        predict_files(tmp_path, [tmp_path / "x.png"], tmp_path / "out")


def test_cli_predict(run, tmp_path, capsys):
    run_dir, _ = run
    imgs = _images(tmp_path / "in")
    assert (
        cli.main(
            [
                "predict",
                str(run_dir),
                str(imgs["rgba"]),
                "--out",
                str(tmp_path / "out"),
                "--tile",
                "16",
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "rgba.png: 31x30" in out and "rgba_mask.png" in out
    assert cli.main(["predict", str(run_dir), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.png" in err[0]
