"""Issue 13, item 3: a GeoTIFF input keeps its georeference in the output (tifffile only, no rasterio).

The mask of a GeoTIFF is a tiled TIFF with the input's GeoTIFF tags (also below PNG_MAX_PIXELS and
after --scale), the OME-Zarr output carries them as the "fcnkit:georeference" attribute, and a
non-geo input still gets a PNG mask.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from _predict_helpers import save_grey_run
from PIL import Image

from fcnkit.app.predict import predict_files
from fcnkit.inference.geotiff import GEO_TAGS, ZARR_KEY, geo_tags, georeference, rescale_geo_tags

pytestmark = pytest.mark.usefixtures("one_thread")

SCALE = (0.5, 0.5, 0.0)
TIEPOINT = (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0)
# header (version 1, revision 1.0, 4 keys), then (key, location, count, value):
# GTModelType = projected, GTRasterType = PixelIsArea, GTCitation -> GeoAsciiParams, ProjectedCSType = EPSG:32633
GEOKEYS = (1, 1, 0, 4, 1024, 0, 1, 1, 1025, 0, 1, 1, 1026, 34737, 22, 0, 3072, 0, 1, 32633)
CITATION = "WGS 84 / UTM zone 33N|"
GEO = [
    (33550, "d", 3, SCALE, True),
    (33922, "d", 6, TIEPOINT, True),
    (34735, "H", len(GEOKEYS), GEOKEYS, True),
    (34737, "s", 0, CITATION, True),
    (42113, "s", 0, "0", True),  # GDAL_NODATA: a label map has none, it is not copied
]


@pytest.fixture
def run(tmp_path):
    """A run folder with an untrained 1-channel allconv model "trained on uint8" like the inputs below."""
    return save_grey_run(tmp_path, {"dtype": "uint8", "p1": 0.05, "p99": 0.8, "size": [40, 52], "images": 5})


@pytest.fixture
def image(tmp_path):
    """The same 40x52 uint8 image as a GeoTIFF (``geo.tif``), a plain PNG and a plain TIFF."""
    pixels = (np.random.default_rng(0).random((40, 52)) * 200 + 10).astype(np.uint8)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "geo.tif", pixels, extratags=GEO)
    tifffile.imwrite(tmp_path / "in" / "plain.tif", pixels)
    Image.fromarray(pixels).save(tmp_path / "in" / "plain.png")
    return tmp_path / "in"


def _tags(path) -> dict:
    with tifffile.TiffFile(path) as tif:
        return {t.code: t.value for t in tif.pages.first.tags.values() if t.code in GEO_TAGS or t.code == 42113}


def test_geotiff_mask_keeps_the_georeference_and_zarr_carries_it(run, image, tmp_path):
    r = predict_files(run, [image / "geo.tif"], tmp_path / "out", zarr=True)[0]
    assert r["georeferenced"] is True and r["mask"].name == "geo_mask.tif"  # a TIFF although small
    src, out = _tags(image / "geo.tif"), _tags(r["mask"])
    assert 42113 in src and 42113 not in out  # no nodata on a label map
    del src[42113]
    assert out == src and out[33550] == SCALE and out[33922] == TIEPOINT and out[34735] == GEOKEYS
    assert out[34737] == CITATION
    with tifffile.TiffFile(r["mask"]) as tif:
        page = tif.pages.first
        assert page.shape == (40, 52) and page.is_tiled and page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        labels = page.asarray()
    # the same labels as the PNG path gives for the same pixels
    plain = predict_files(run, [image / "plain.png"], tmp_path / "png")[0]
    assert plain["georeferenced"] is False and plain["mask"].suffix == ".png"
    assert np.array_equal(labels, np.asarray(Image.open(plain["mask"])))
    attrs = zarr.open_group(str(r["zarr"]), mode="r").attrs[ZARR_KEY]
    assert attrs["geotransform"] == [500000.0, 0.5, 0.0, 4000000.0, 0.0, -0.5]
    assert attrs["geo_key_directory"] == list(GEOKEYS) and attrs["geo_ascii_params"] == CITATION


def test_cli_says_the_mask_is_georeferenced(run, image, tmp_path, capsys):
    from fcnkit.cli.main import main

    assert (
        main(["predict", str(run), str(image / "geo.tif"), str(image / "plain.png"), "--out", str(tmp_path / "o")]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert "geo_mask.tif (georeferenced)," in lines[0] and "plain_mask.png," in lines[1] and "georef" not in lines[1]


def test_resampled_prediction_keeps_the_input_size_and_tags_and_plain_inputs_stay_png(run, image, tmp_path):
    r = predict_files(run, [image / "geo.tif", image / "plain.tif"], tmp_path / "out", scale=0.5)
    geo, plain = r
    with tifffile.TiffFile(geo["mask"]) as tif:
        assert tif.pages.first.shape == (40, 52)  # the input's grid: the georeference is still valid
    assert _tags(geo["mask"])[33922] == TIEPOINT and _tags(geo["mask"])[33550] == SCALE
    assert plain["georeferenced"] is False and plain["mask"].name == "plain_mask.png"  # a TIFF without georeference
    assert geo_tags(image / "plain.tif") is None and geo_tags(image / "plain.png") is None
    assert geo_tags(image / "missing.tif") is None


def _close(a, b) -> bool:
    return np.allclose(a, b, rtol=0.0, atol=1e-9)  # absolute: coordinates are ~1e6, a default rtol hides 5 m


@pytest.mark.parametrize("raster_type", [1, 2])  # PixelIsArea, PixelIsPoint
def test_rescaled_tags_keep_the_extent_in_every_encoding(raster_type):
    keys = list(GEOKEYS)
    keys[11] = raster_type
    base = [(34735, 3, len(keys), tuple(keys), True)]
    by_tiepoint = base + [(33550, 12, 3, SCALE, True), (33922, 12, 6, (2.0, 4.0, 0.0, 500001.0, 3999998.0, 0.0), True)]
    matrix = (0.5, 0.0, 0.0, 500000.0, 0.0, -0.5, 0.0, 4000000.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    by_matrix = base + [(34264, 12, 16, matrix, True)]
    corner = georeference(by_tiepoint)["geotransform"]
    assert _close(corner, georeference(by_matrix)["geotransform"])  # two encodings, one place
    for tags in (by_tiepoint, by_matrix):
        half = georeference(rescale_geo_tags(tags, (40, 52), (20, 26)))["geotransform"]
        # pixels twice as large, the top-left corner (hence the whole extent) unchanged
        assert _close(half, [corner[0], 1.0, 0.0, corner[3], 0.0, -1.0])
    if raster_type == 1:
        assert _close(corner, [500000.0, 0.5, 0.0, 4000000.0, 0.0, -0.5])
    else:  # raster (0, 0) is the first pixel's centre: the corner is half a pixel up and left
        assert _close(corner, [499999.75, 0.5, 0.0, 4000000.25, 0.0, -0.5])


def test_cluster_ome_zarr_carries_the_georeference(run, image, tmp_path):
    import distributed  # a dependency (dask[distributed]): no skip

    from fcnkit.app.cluster_predict import predict_on_cluster

    # one in-process worker: this test is about the output's attributes, tests/test_dask_predict.py about Dask
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        geo, plain = predict_on_cluster(run, [image / "geo.tif", image / "plain.png"], tmp_path / "out", client=client)
    assert geo["georeferenced"] is True and plain["georeferenced"] is False
    attrs = zarr.open_group(str(geo["mask"]), mode="r").attrs
    assert attrs[ZARR_KEY]["geotransform"] == [500000.0, 0.5, 0.0, 4000000.0, 0.0, -0.5]
    assert "multiscales" in attrs and ZARR_KEY not in zarr.open_group(str(plain["mask"]), mode="r").attrs
