"""The viewer's HTTP API without a browser (Starlette's test client): results equal the library's,
and the security rules hold (ids only, no path traversal, upload limits, 4xx for bad input)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from _serve_helpers import MEAN, STD, make_image, make_run
from PIL import Image
from starlette.testclient import TestClient

import fcnkit
from fcnkit.app.serve import Limits, build_catalog, make_app, split_inputs
from fcnkit.cli.main import main
from fcnkit.data.io import to_model_input
from fcnkit.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    run = make_run(tmp / "run", seed=0)
    image = make_image(tmp / "big.png", shape=(300, 520), seed=1)  # 2 zoom levels, several tiles
    catalog = build_catalog(
        [run], [tmp / "big.png"], cache_dir=tmp / "cache", limits=Limits(max_upload_bytes=20_000, max_pixels=100_000)
    )
    client = TestClient(make_app(catalog, tile=64), base_url="http://127.0.0.1")  # small tiles: many of them
    image_id = client.get("/api/runs").json()["images"][0]["id"]
    model, _ = fcnkit.load_checkpoint(run)
    logits = fcnkit.predict(model, to_model_input(image, 1, MEAN, STD))
    return {"client": client, "id": image_id, "logits": logits, "tmp": tmp, "image": image}


def _png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_tiled_prediction_equals_whole_image_predict(world):
    c, iid = world["client"], world["id"]
    assert c.get(f"/api/progress?image={iid}").json()["state"] == "queued"  # the first test to predict it
    r = c.get(f"/api/predict?image={iid}").json()
    assert c.get(f"/api/progress?image={iid}").json()["state"] == "done"
    assert r["predictions"][0]["tiles"] > 1 and r["image"]["levels"] == 3
    labels = world["logits"].argmax(0).numpy()
    tile = c.get(f"/api/tile/labels/0/1/1?image={iid}")  # rows 256..300, cols 256..512
    got = np.frombuffer(tile.content, np.uint8).reshape(int(tile.headers["x-tile-height"]), -1)
    np.testing.assert_array_equal(got, labels[256:300, 256:512])
    tile = c.get(f"/api/tile/labels/1/0/1?image={iid}")  # level 1: every 2nd pixel of cols 512..520
    got = np.frombuffer(tile.content, np.uint8).reshape(int(tile.headers["x-tile-height"]), -1)
    np.testing.assert_array_equal(got, labels[0:300:2, 512:520:2])
    mask = np.asarray(Image.open(io.BytesIO(c.get(f"/api/mask?image={iid}&run=0").content)))
    np.testing.assert_array_equal(mask, labels)


def test_probe_gives_probabilities_and_the_receptive_field(world):
    c, iid = world["client"], world["id"]
    model, _ = fcnkit.load_checkpoint(world["tmp"] / "run")
    g = fcnkit.receptive_field(model, in_channels=1)
    prob = torch.softmax(world["logits"], 0)
    for x, y in [(0, 0), (519, 299), (200, 150)]:
        p = c.get(f"/api/probe?image={iid}&x={x}&y={y}").json()
        np.testing.assert_allclose(p["probabilities"], prob[:, y, x].numpy(), atol=0.5 / 255 + 1e-6)
        assert p["label"] == int(world["logits"][:, y, x].argmax())
        rf = p["rf"]
        assert (rf["bottom"] - rf["top"] + 1, rf["right"] - rf["left"] + 1) == tuple(g.size)
        assert p["rf"]["centre"] == [y, x]  # stride 1, offset 0


@pytest.mark.parametrize(
    "url",
    [
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2fcatalog.py",
        "/api/tile/image/0/0/0?image=../../../../etc/passwd",
        "/api/probe?image=%2Fetc%2Fpasswd&x=0&y=0",
        "/api/mask?image=..&run=0",
        "/api/tile/labels/0/0/0?image=ok&run=../0",
    ],
)
def test_path_traversal_is_refused(world, url):
    r = world["client"].get(url)
    assert r.status_code == 404 and "root:" not in r.text and "import" not in r.text


def test_uploads_over_the_limits_are_refused(world):
    c = world["client"]
    rng = np.random.default_rng(0)
    r = c.post("/api/predict", files={"image": ("noise.png", _png(rng.integers(0, 255, (200, 200), np.uint8)))})
    assert r.status_code == 413 and "over the limit" in r.json()["error"]  # 40 kB > 20 kB
    r = c.post("/api/predict", files={"image": ("wide.png", _png(np.zeros((400, 400), np.uint8)))})
    assert r.status_code == 413 and "400x400 pixels is over" in r.json()["error"]  # small file, 160k pixels


@pytest.mark.parametrize(
    "files, data, message",
    [
        ({"image": ("a.png", b"\x89PNG\r\n\x1a\n garbage")}, None, "a.png: not a readable image"),
        ({"image": ("a.exe", b"MZ")}, None, "unsupported file type"),
        ({"image": ("a.png", b"")}, None, "empty"),
        (None, {"image": "text, not a file"}, "no file in form field 'image'"),
        ({"other": ("a.png", b"x")}, None, "no file in form field 'image'"),
        ({"image": ("tiny.png", _png(np.zeros((2, 2), np.uint8)))}, None, "smaller than"),
        (
            {
                "image": ("m.png", _png(np.zeros((40, 40), np.uint8))),
                "mask": ("m_mask.png", _png(np.zeros((8, 8), np.uint8))),
            },
            None,
            "mask of m.png is 8x8 but the image is 40x40",
        ),
    ],
)
def test_bad_uploads_get_a_4xx_and_the_server_keeps_serving(world, files, data, message):
    c = world["client"]
    r = c.post("/api/predict", files=files, data=data)
    assert 400 <= r.status_code < 500 and message in r.json()["error"]
    assert c.get("/api/runs").status_code == 200
    assert not list((world["tmp"] / "cache" / "uploads").glob("*m_mask*"))  # nothing half-kept


def test_good_upload_is_predicted_once_and_scored_against_its_mask(world):
    from fcnkit.metrics import confusion_matrix, scores

    c = world["client"]
    image = make_image(world["tmp"] / "u.png", shape=(40, 40), seed=5)
    truth = (image > 127).astype(np.uint8)
    truth[:4] = 255
    files = {"image": ("u.png", _png(image)), "mask": ("u_mask.png", _png(truth))}
    first = c.post("/api/predict", files=files).json()
    again = c.post("/api/predict", files=files).json()
    assert first["image"]["id"] == again["image"]["id"] and first["image"]["has_mask"]
    assert not first["predictions"][0]["cached"] and again["predictions"][0] == first["predictions"][0]
    model, _ = fcnkit.load_checkpoint(world["tmp"] / "run")
    labels = fcnkit.predict(model, to_model_input(image, 1, MEAN, STD)).argmax(0)
    expected = scores(confusion_matrix(labels, torch.from_numpy(truth).long(), 4))
    got = c.get(first["predictions"][0]["scores_url"]).json()
    assert got["mean_iu"] == pytest.approx(expected["mean_iu"]) and got["pixel_accuracy"] == expected["pixel_accuracy"]
    assert [v is None for v in got["iu"]] == [v != v for v in expected["iu"]]


def test_bad_queries_and_foreign_hosts(world):
    c, iid = world["client"], world["id"]
    assert c.get(f"/api/probe?image={iid}&x=abc&y=0").status_code == 400
    assert c.get(f"/api/probe?image={iid}&x=520&y=0").status_code == 404
    assert c.get(f"/api/tile/image/5/0/0?image={iid}").status_code == 404
    assert c.get(f"/api/tile/image/0/9/9?image={iid}").status_code == 404
    assert c.get(f"/api/tile/weights/0/0/0?image={iid}").status_code == 404
    assert c.get(f"/api/tile/truth/0/0/0?image={iid}").status_code == 404  # no mask given
    assert "has no mask" in c.get(f"/api/scores?image={iid}").json()["error"]
    assert c.get("/api/runs", headers={"host": "attacker.example:8765"}).status_code == 400  # DNS rebinding


def test_split_inputs_and_cli_errors(world, capsys):
    tmp = world["tmp"]
    runs, images = split_inputs([tmp / "run", tmp / "big.png"])
    assert runs == [tmp / "run"] and images == [tmp / "big.png"]
    with pytest.raises(InputError, match="not a run or checkpoint folder"):
        split_inputs([tmp / "big.png"])
    assert main(["serve", str(tmp / "big.png")]) == 2
    assert main(["serve", str(tmp / "run"), str(tmp / "missing.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not a run or checkpoint folder" in err[0] and "missing.png" in err[1]


def test_fcnkit_serve_listens_on_loopback_and_stops_on_ctrl_c(world, tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "fcnkit",
        "serve",
        str(world["tmp"] / "run"),
        str(world["tmp"] / "big.png"),
        "--port",
        "0",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("fcnkit serve: http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[2]
        with urllib.request.urlopen(url + "api/runs", timeout=30) as r:
            assert [i["name"] for i in json.load(r)["images"]] == ["big.png"]
        assert list(tmp_path.glob("fcnkit-serve-*"))  # its private cache folder...
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert not list(tmp_path.glob("fcnkit-serve-*"))  # ...is gone after Ctrl-C


def test_server_answers_while_it_predicts(world, tmp_path):
    import json
    import threading
    import urllib.request

    from fcnkit.app.serve import serve_in_thread

    make_image(tmp_path / "wide.png", shape=(384, 640), seed=7)
    catalog = build_catalog([world["tmp"] / "run"], [tmp_path / "wide.png"], cache_dir=tmp_path / "cache")
    server = serve_in_thread(catalog, tile=64)
    image_id = next(iter(catalog.images))

    def get(url):
        with urllib.request.urlopen(server.url + url, timeout=60) as r:
            return json.load(r)

    try:
        done = threading.Event()
        thread = threading.Thread(target=lambda: (get(f"api/predict?image={image_id}"), done.set()))
        thread.start()
        seen = []
        while not done.is_set():
            seen.append(get(f"api/progress?image={image_id}"))
        thread.join()
        running = [s for s in seen if s["state"] == "running"]
        assert running and running[-1]["total"] > 1 and get("api/runs")["runs"]
        assert get(f"api/progress?image={image_id}")["state"] == "done"
    finally:
        server.close()


def test_coarse_output_model_probe_names_the_cell_and_its_window(tmp_path):
    from fcnkit.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = fcnkit.build_model("allconv", num_classes=3, in_channels=1, width=4, stages=2, output="coarse").eval()
    save_checkpoint(
        tmp_path / "run",
        model,
        {"task": "segmentation", "num_classes": 3, "in_channels": 1, "normalization": {"mean": MEAN, "std": STD}},
    )
    image = make_image(tmp_path / "img.png", shape=(50, 70), seed=2)
    catalog = build_catalog([tmp_path / "run"], [tmp_path / "img.png"], cache_dir=tmp_path / "cache")
    c = TestClient(make_app(catalog), base_url="http://127.0.0.1")
    iid = next(iter(catalog.images))
    g = fcnkit.receptive_field(model, in_channels=1)
    assert g.stride == (4, 4)
    logits = fcnkit.predict(model, to_model_input(image, 1, MEAN, STD))
    for x, y in [(0, 0), (69, 49), (33, 21)]:
        p = c.get(f"/api/probe?image={iid}&x={x}&y={y}").json()
        i, j = p["cell"]
        nearest = [
            min(max(round((v - o) / s), 0), n - 1)  # the cell centred nearest, within the output
            for v, o, s, n in zip((y, x), g.offset, g.stride, logits.shape[1:])
        ]
        assert [i, j] == nearest
        (top, bottom), (left, right) = g.window(i, j)
        assert (p["rf"]["top"], p["rf"]["bottom"], p["rf"]["left"], p["rf"]["right"]) == (top, bottom, left, right)
        np.testing.assert_allclose(p["probabilities"], torch.softmax(logits[:, i, j], 0).numpy(), atol=0.5 / 255 + 1e-6)
        assert p["label"] == int(logits[:, i, j].argmax())


def test_16_bit_tiff_upload_with_a_tiff_mask(world):
    import tifffile

    c = world["client"]
    rng = np.random.default_rng(1)
    raw = (rng.random((40, 48)) * 60000).astype(np.uint16)
    buf, mask = io.BytesIO(), io.BytesIO()
    tifffile.imwrite(buf, raw)
    tifffile.imwrite(mask, (raw > 30000).astype(np.uint16))
    files = {"image": ("scan.tif", buf.getvalue()), "mask": ("scan_mask.tif", mask.getvalue())}
    r = c.post("/api/predict", files=files)
    assert r.status_code == 200, r.text
    iid = r.json()["image"]["id"]
    model, _ = fcnkit.load_checkpoint(world["tmp"] / "run")
    labels = fcnkit.predict(model, to_model_input(raw, 1, MEAN, STD)).argmax(0).numpy()
    tile = c.get(f"/api/tile/labels/0/0/0?image={iid}")
    np.testing.assert_array_equal(np.frombuffer(tile.content, np.uint8).reshape(40, 48), labels)
    png = Image.open(io.BytesIO(c.get(f"/api/tile/image/0/0/0?image={iid}").content))
    assert png.mode == "L" and png.size == (48, 40) and np.asarray(png).std() > 20  # stretched for display
    accuracy = float((labels == (raw > 30000)).mean())  # the TIFF mask is read as class indices
    assert c.get(r.json()["predictions"][0]["scores_url"]).json()["pixel_accuracy"] == pytest.approx(accuracy)
