"""The viewer in a real browser: Debian's headless Chromium driven by Playwright.

One server (two tiny runs, one image with a mask) and one browser for the module; each test
opens a fresh page. Pixels are read back from the overlay canvas the page rendered and compared
with ``fcnkit.predict``'s labels, so the whole chain (tiled prediction, label tiles, colouring,
view transform) is checked end to end.
"""

from __future__ import annotations

import numpy as np
import pytest
from _serve_helpers import CLASSES, expected_labels, make_image, make_run
from PIL import Image
from playwright.sync_api import sync_playwright

import fcnkit
from fcnkit.app.serve import build_catalog, serve_in_thread
from fcnkit.data.io import voc_palette

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PALETTE = voc_palette(len(CLASSES))
MARKUP = '<img src=x onerror="window.pwned=1">'
PIXELS = [(3, 2), (30, 20), (59, 47), (11, 40), (45, 9)]  # (x, y), corners included


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("viewer")
    runs = [make_run(tmp / "run_a", seed=0), make_run(tmp / "run_b", seed=1, classes=CLASSES[:3] + [MARKUP])]
    image = make_image(tmp / "scene.png")
    labels = [expected_labels(r, image) for r in runs]
    assert len(np.unique(labels[0])) >= 2 and (labels[0] != labels[1]).any()  # the checks below can fail
    truth = labels[0].copy()
    truth[:, :20] = (truth[:, :20] + 1) % len(CLASSES)  # left third wrong on purpose
    truth[0, 0] = 255
    (tmp / "masks").mkdir()
    Image.fromarray(truth.astype(np.uint8)).save(tmp / "masks" / "scene.png")
    catalog = build_catalog(runs, [tmp / "scene.png"], masks_dir=tmp / "masks", cache_dir=tmp / "cache")
    server = serve_in_thread(catalog)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield {"url": server.url, "browser": browser, "labels": labels, "truth": truth, "tmp": tmp, "runs": runs}
        browser.close()
    server.close()


@pytest.fixture
def page(site):
    page = site["browser"].new_page(viewport={"width": 1000, "height": 640})
    uncaught = []
    page.on("pageerror", lambda exc: uncaught.append(str(exc)))
    page.goto(site["url"])
    page.wait_for_selector("body[data-state=ready]", timeout=20_000)
    yield page
    page.close()
    assert not uncaught, f"JavaScript errors in the page: {uncaught}"


def overlay_rgb(page, x: int, y: int) -> tuple[int, int, int]:
    """The colour the page drew over image pixel (x, y), read from the overlay canvas."""
    return tuple(
        page.evaluate(
            """([x, y]) => {
        const [sx, sy] = window.fcnkitViewer.imageToScreen(x, y);
        const d = document.getElementById("overlay-canvas").getContext("2d")
            .getImageData(Math.floor(sx), Math.floor(sy), 1, 1).data;
        return [d[0], d[1], d[2]];
    }""",
            [x, y],
        )
    )


def test_overlay_pixels_equal_fcnkit_predict(page, site):
    for x, y in PIXELS:
        assert overlay_rgb(page, x, y) == tuple(PALETTE[site["labels"][0][y, x]]), (x, y)
    assert page.locator("#legend input[type=checkbox]").count() == len(CLASSES)
    assert "background" in page.inner_text("#legend")


def test_swipe_shows_the_first_run_left_and_the_second_right(page, site):
    page.select_option("#compare", "swipe")
    page.wait_for_selector("body[data-state=ready]")
    for x, y in PIXELS:
        sx = page.evaluate("([x, y]) => window.fcnkitViewer.imageToScreen(x, y)[0]", [x, y])
        half = page.evaluate("document.getElementById('stage').clientWidth / 2")
        if abs(sx - half) > 3:  # off the swipe line itself
            run = 0 if sx < half else 1
            assert overlay_rgb(page, x, y) == tuple(PALETTE[site["labels"][run][y, x]]), (x, y, run)


def test_second_run_and_class_toggle(page, site):
    page.select_option("#compare", "b")
    page.wait_for_selector("body[data-state=ready]")
    for x, y in PIXELS:
        assert overlay_rgb(page, x, y) == tuple(PALETTE[site["labels"][1][y, x]]), (x, y)
    x, y = PIXELS[1]
    k = int(site["labels"][1][y, x])
    page.uncheck(f"#legend input[data-class='{k}']")
    page.wait_for_timeout(100)
    assert (
        page.evaluate(
            """([x, y]) => {
        const [sx, sy] = window.fcnkitViewer.imageToScreen(x, y);
        return document.getElementById("overlay-canvas").getContext("2d")
            .getImageData(Math.floor(sx), Math.floor(sy), 1, 1).data[3]; }""",
            [x, y],
        )
        == 0
    )  # hidden class


def test_error_map_and_iu(page, site):
    labels, truth = site["labels"][0], site["truth"]
    iu = page.inner_text("#scores .iu")
    import torch

    from fcnkit.metrics import confusion_matrix, scores

    expected = scores(confusion_matrix(torch.from_numpy(labels).long(), torch.from_numpy(truth).long(), 4))
    assert iu == f"mean IU {expected['mean_iu']:.3f}"
    page.check("#errors")
    page.wait_for_selector("body[data-state=ready]")
    page.wait_for_timeout(100)
    assert overlay_rgb(page, 5, 10) == (255, 0, 0)  # left part: wrong on purpose
    assert (
        page.evaluate("""() => { const [sx, sy] = window.fcnkitViewer.imageToScreen(40, 10);
        return document.getElementById("overlay-canvas").getContext("2d")
            .getImageData(Math.floor(sx), Math.floor(sy), 1, 1).data[3]; }""")
        == 0
    )  # right: correct


def test_hover_draws_the_receptive_field_of_the_cell(page, site):
    model, _ = fcnkit.load_checkpoint(site["runs"][0])
    geometry = fcnkit.receptive_field(model, in_channels=1)
    x, y = 30, 20
    sx, sy = page.evaluate("([x, y]) => window.fcnkitViewer.imageToScreen(x, y)", [x, y])
    box = page.locator("#stage").bounding_box()
    page.mouse.move(box["x"] + sx, box["y"] + sy)
    page.wait_for_selector("#rf-box:not([hidden])")
    rf = page.locator("#rf-box").bounding_box()
    scale = page.evaluate("window.fcnkitViewer.state.scale")
    assert rf["width"] / scale == pytest.approx(geometry.size[1], abs=0.05)
    assert rf["height"] / scale == pytest.approx(geometry.size[0], abs=0.05)
    # centred on the pixel (stride 1: the cell under the cursor is the pixel itself)
    assert (rf["x"] - box["x"] + rf["width"] / 2 - sx) / scale == pytest.approx(0, abs=0.05)
    assert page.inner_text("#probe-class") == CLASSES[site["labels"][0][y, x]]


def test_upload_shows_its_prediction(page, site):
    path = site["tmp"] / "upload.png"
    image = make_image(path, shape=(40, 52), seed=3)
    labels = expected_labels(site["runs"][0], image)
    page.set_input_files("#upload-image", str(path))
    page.click("#upload-form button")
    page.wait_for_function("() => window.fcnkitViewer.state.image.name === 'upload.png'")
    page.wait_for_selector("body[data-state=ready]")
    for x, y in [(0, 0), (51, 39), (20, 13)]:
        assert overlay_rgb(page, x, y) == tuple(PALETTE[labels[y, x]]), (x, y)


def test_names_are_shown_as_text_not_markup(page, site):
    page.select_option("#compare", "b")  # the second run's last class name is markup
    page.wait_for_selector("body[data-state=ready]")
    assert MARKUP in page.inner_text("#legend")
    path = site["tmp"] / f"{MARKUP}.png"  # so is an uploaded file's name
    make_image(path, shape=(32, 32), seed=4)
    page.set_input_files("#upload-image", str(path))
    page.click("#upload-form button")
    page.wait_for_function("() => window.fcnkitViewer.state.image.name.startsWith('<img')")
    page.wait_for_selector("body[data-state=ready]")
    page.wait_for_timeout(200)
    assert "<img src=x onerror=" in page.inner_text("#image-select")  # Chromium sends " as %22
    assert page.evaluate("window.pwned") is None


def test_bad_upload_shows_the_error(page, site):
    path = site["tmp"] / "notes.png"
    path.write_text("this is not an image")
    page.set_input_files("#upload-image", str(path))
    page.click("#upload-form button")
    page.wait_for_selector("#error:not([hidden])")
    assert "notes.png: not a readable image" in page.inner_text("#error")
