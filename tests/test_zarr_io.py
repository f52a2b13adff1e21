"""Huge-image formats: lazy compressed tiled TIFF and OME-Zarr input, zarr logits and OME-Zarr label pyramids."""

import tracemalloc

import numpy as np
import pytest
import tifffile
import torch
import zarr
from _predict_helpers import randomise_zero_parameters, save_abc_run, tiny_conv_features
from torch import nn

from fcnkit import predict
from fcnkit.data.io import to_model_input
from fcnkit.inference.predict import TiledJob
from fcnkit.inference.sources import open_image
from fcnkit.inference.zarr_io import LazyArray, ZarrSink, write_label_pyramid

pytestmark = pytest.mark.usefixtures("one_thread")
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def net():
    torch.manual_seed(0)
    return nn.Sequential(*tiny_conv_features(), nn.Conv2d(4, 3, 1)).eval()


def test_compressed_tiled_tiff_is_read_lazily_and_predicts_the_same(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (300, 500, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", img, tile=(64, 64), compression="zlib")
    src = open_image(tmp_path / "a.tif", 3, MEAN, STD)
    assert isinstance(src.array, LazyArray) and src.shape == (3, 300, 500)
    np.testing.assert_array_equal(
        src.read((10, 90), (200, 333)).numpy(), to_model_input(img[10:90, 200:333], 3, MEAN, STD).numpy()
    )
    whole = predict(net(), to_model_input(img, 3, MEAN, STD))
    tiled = predict(net(), src, tile=128)
    assert (tiled - whole).abs().max().item() <= 1e-5


def test_reading_one_tile_of_a_big_compressed_tiff_takes_little_memory(tmp_path):
    img = np.zeros((4096, 4096, 3), dtype=np.uint8)
    img[::7, ::5] = 200
    tifffile.imwrite(tmp_path / "big.tif", img, tile=(256, 256), compression="zlib")
    del img
    src = open_image(tmp_path / "big.tif", 3, MEAN, STD)
    tracemalloc.start()
    x = src.read((1000, 1256), (3000, 3256))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert x.shape == (3, 256, 256)
    assert peak < 8 << 20  # the image is 48 MiB decoded; a 256x256 tile touches at most 4 chunks


def test_ome_zarr_input_in_c_y_x_order(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (3, 120, 90), dtype=np.uint8)  # (c, y, x)
    root = zarr.open_group(str(tmp_path / "im.ome.zarr"), mode="w", zarr_format=2)
    root.create_array("0", shape=img.shape, chunks=(3, 64, 64), dtype="uint8")[:] = img
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n} for n in "cyx"], "datasets": [{"path": "0"}]}]
    src = open_image(tmp_path / "im.ome.zarr", 3, MEAN, STD)
    np.testing.assert_array_equal(
        src.read((5, 77), (3, 90)).numpy(), to_model_input(np.moveaxis(img, 0, -1)[5:77, 3:90], 3, MEAN, STD).numpy()
    )


def test_zarr_logits_and_label_pyramid_round_trip(tmp_path):
    x = torch.randn(3, 200, 260)
    model = net()
    whole = predict(model, x)
    job = TiledJob(model, x, tile=96)
    sink = job.run(lambda shape: ZarrSink(tmp_path / "logits.zarr", shape, chunk=64))
    back = zarr.open_array(str(tmp_path / "logits.zarr"), mode="r")[:]
    assert (torch.from_numpy(back) - whole).abs().max().item() <= 1e-5 and sink.result.chunks == (3, 64, 64)

    labels = np.random.default_rng(2).integers(0, 3, (1000, 700), dtype=np.uint8)
    n = write_label_pyramid(tmp_path / "m.ome.zarr", labels, palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0]], chunk=128)
    root = zarr.open_group(str(tmp_path / "m.ome.zarr"), mode="r")
    ms = root.attrs["multiscales"][0]
    assert n == 4 and [d["path"] for d in ms["datasets"]] == ["0", "1", "2", "3"]
    assert ms["datasets"][2]["coordinateTransformations"][0]["scale"] == [4.0, 4.0]
    np.testing.assert_array_equal(root["0"][:], labels)
    np.testing.assert_array_equal(root["1"][:], labels[::2, ::2])
    np.testing.assert_array_equal(root["3"][:], labels[::8, ::8])
    assert root.attrs["image-label"]["colors"][1]["rgba"] == [255, 0, 0, 255]


def test_cli_predict_writes_an_ome_zarr_mask_from_a_compressed_tiff(tmp_path, capsys):
    from fcnkit.cli import main as cli
    from fcnkit.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("fcn8s", num_classes=3).eval()
    # FCN's score layers start at zero: make the mask depend on the image
    randomise_zero_parameters(model, 1.0, weights_only=True)
    run = save_abc_run(tmp_path, model, MEAN, STD)
    img = np.random.default_rng(0).integers(0, 255, (470, 530, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "img.tif", img, tile=(64, 64), compression="zlib")
    args = ["predict", str(run), str(tmp_path / "img.tif"), "--quiet", "--zarr"]
    assert cli.main(args + ["--out", str(tmp_path / "whole")]) == 0
    assert cli.main(args + ["--out", str(tmp_path / "tiled"), "--tile", "448"]) == 0
    assert "img_mask.ome.zarr" in capsys.readouterr().out
    a, b = (zarr.open_group(str(tmp_path / d / "img_mask.ome.zarr"), mode="r") for d in ("whole", "tiled"))
    np.testing.assert_array_equal(a["0"][:], b["0"][:])
    assert len(np.unique(a["0"][:])) > 1
    assert a["0"].shape == (470, 530) and a.attrs["multiscales"][0]["datasets"][0]["path"] == "0"
