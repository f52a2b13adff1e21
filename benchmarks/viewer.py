"""The web viewer in a real browser: how long a 4096^2 prediction takes to show, first and cached,
and the screenshots of docs/viewer.md.

    python benchmarks/viewer.py RUN_DIR                   # timings (3 interleaved repeats) + screenshots
    python benchmarks/viewer.py RUN_DIR --repeats 1 --no-screenshots
    python benchmarks/viewer.py RUN_DIR --compare RUN_DIR2      # + a swipe screenshot of two runs

RUN_DIR is a digit-canvas run (e.g. ``make demo``'s runs/demo, or a short training run). The
4096^2 test image is a mosaic of digit-canvas test canvases (64 x 84 each, with their masks), so
the page shows the error map and the image's IU too. Each repeat measures, in headless Chromium
(Debian's package, through Playwright), from navigation until every visible tile of the image and
the overlay is drawn (``body[data-state=ready]``):

  first    fresh server, empty cache: the tiled exact prediction of the whole image, then the tiles
  reload   the same page loaded again: prediction from the server's memory, tiles from the browser cache
  restart  a new server on the same cache folder, a new browser context: prediction read from disk

Repeats interleave the three (first, reload, restart, first, ...) and the median and spread are
printed, because this shared machine's speed varies between runs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


def mosaic(folder: Path, size: int = 4096, seed: int = 0) -> tuple[Path, Path]:
    """A size x size image of digit-canvas test canvases side by side, and its mask."""
    from fcnkit.data.canvas import DEFAULT_SIZE, make_canvases

    h, w = DEFAULT_SIZE
    rows, cols = -(-size // h), -(-size // w)
    images, masks = make_canvases("test", DEFAULT_SIZE, rows * cols, seed)[:2]
    image = images.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)[:size, :size]
    mask = masks.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)[:size, :size]
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(folder / f"mosaic_{size}.png")
    Image.fromarray(np.ascontiguousarray(mask)).save(folder / "masks" / f"mosaic_{size}.png")
    return folder / f"mosaic_{size}.png", folder / "masks"


def canvases(folder: Path, count: int = 4) -> Path:
    """A few digit-canvas test canvases (and masks) as PNG files."""
    from fcnkit.data.canvas import DEFAULT_SIZE, make_canvases

    images, masks = make_canvases("test", DEFAULT_SIZE, 300, 0)[:2]
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(images[i]).save(folder / f"canvas_{i:03d}.png")
        Image.fromarray(masks[i]).save(folder / "masks" / f"canvas_{i:03d}.png")
    return folder


def digit_pixel(mask_file: Path, near: tuple[int, int]) -> tuple[int, int]:
    """The digit pixel (mask > 0) nearest to ``near`` ``(y, x)``, so the probe shows a digit."""
    mask = np.asarray(Image.open(mask_file))
    ys, xs = np.nonzero((mask > 0) & (mask < 255))
    i = int(np.argmin((ys - near[0]) ** 2 + (xs - near[1]) ** 2))
    return int(ys[i]), int(xs[i])


def time_to_ready(context, url: str) -> tuple[float, object]:
    page = context.new_page()
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("body[data-state=ready]", timeout=600_000)
    return time.perf_counter() - start, page


def hover(page, x: int, y: int) -> None:
    sx, sy = page.evaluate("([x, y]) => window.fcnkitViewer.imageToScreen(x, y)", [x, y])
    box = page.locator("#stage").bounding_box()
    page.mouse.move(box["x"] + sx, box["y"] + sy)
    page.wait_for_selector("#rf-box:not([hidden])")
    page.wait_for_timeout(300)


def zoom(page, at: tuple[int, int], scale: float) -> None:
    """Set the view to ``scale`` screen pixels per image pixel, centred on image pixel ``at``."""
    page.evaluate(
        """([x, y, s]) => { const V = window.fcnkitViewer.state, st = document.getElementById("stage");
        V.scale = s; V.ox = st.clientWidth / 2 - (x + 0.5) * s; V.oy = st.clientHeight / 2 - (y + 0.5) * s;
        window.dispatchEvent(new Event("resize")); }""",
        [at[1], at[0], scale],
    )
    page.wait_for_selector("body[data-state=ready]", timeout=120_000)


def main(argv=None) -> int:
    from playwright.sync_api import sync_playwright

    from fcnkit.app.serve import build_catalog, serve_in_thread

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compare", type=Path, default=None, help="a second run, for the swipe screenshot")
    ap.add_argument("--screenshots", default=str(ROOT / "docs"), help="folder for the PNGs ('' = none)")
    ap.add_argument("--no-screenshots", dest="screenshots", action="store_const", const="")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="fcnkit-viewer-bench-"))
    big, big_masks = mosaic(work / "big", args.size)
    times: dict[str, list[float]] = {"first": [], "reload": [], "restart": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        viewport = {"width": 1280, "height": 800}
        for r in range(args.repeats):
            cache = work / f"cache{r}"
            server = serve_in_thread(build_catalog([args.run], [big], big_masks, cache, args.device))
            context = browser.new_context(viewport=viewport)
            t, page = time_to_ready(context, server.url)
            times["first"].append(t)
            page.close()
            t, page = time_to_ready(context, server.url)
            times["reload"].append(t)
            server.close()
            context.close()
            server = serve_in_thread(build_catalog([args.run], [big], big_masks, cache, args.device))
            context = browser.new_context(viewport=viewport)
            t, page = time_to_ready(context, server.url)
            times["restart"].append(t)
            if args.screenshots and r == args.repeats - 1:
                y, x = digit_pixel(big_masks / big.name, (2060, 2100))
                zoom(page, (y, x), 1.6)
                hover(page, x, y)
                page.screenshot(path=str(Path(args.screenshots) / "viewer_4096.png"))
            context.close()
            server.close()
            print(f"repeat {r}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        if args.screenshots:
            small = canvases(work / "small")
            images = sorted(small.glob("canvas_*.png"))
            catalog = build_catalog([args.run], images, small / "masks", work / "cache_small", args.device)
            server = serve_in_thread(catalog)
            page = browser.new_context(viewport={"width": 1280, "height": 640}).new_page()
            page.goto(server.url)
            page.wait_for_selector("body[data-state=ready]")
            y, x = digit_pixel(small / "masks" / images[0].name, (20, 20))
            hover(page, x, y)
            page.screenshot(path=str(Path(args.screenshots) / "viewer_digit_canvas.png"))
            page.check("#errors")
            page.wait_for_selector("body[data-state=ready]")
            page.screenshot(path=str(Path(args.screenshots) / "viewer_digit_canvas_errors.png"))
            server.close()
        if args.screenshots and args.compare is not None:
            catalog = build_catalog([args.run, args.compare], [big], big_masks, work / "cache_compare", args.device)
            server = serve_in_thread(catalog)
            page = browser.new_context(viewport=viewport).new_page()
            page.goto(server.url)
            page.wait_for_selector("body[data-state=ready]", timeout=600_000)
            page.select_option("#compare", "swipe")
            y, x = digit_pixel(big_masks / big.name, (1000, 1000))
            zoom(page, (y, x), 3.0)
            page.screenshot(path=str(Path(args.screenshots) / "viewer_swipe.png"))
            server.close()
        browser.close()
    shutil.rmtree(work, ignore_errors=True)  # the mosaic, its mask and the caches: this script's own files
    print(f"\n{args.size}x{args.size} image, run {args.run}, device {args.device}, {args.repeats} repeats:")
    for k, v in times.items():
        print(f"  {k:8s} median {statistics.median(v):6.2f} s   min {min(v):6.2f}   max {max(v):6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
