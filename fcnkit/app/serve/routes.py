"""The viewer's HTTP API (Starlette) and its static page.

    GET  /                          the page (static/index.html, vanilla JS + canvas)
    GET  /api/runs                  runs (classes, palette, geometry), images, limits
    GET  /api/predict?image=ID      predict a served image with every run -> JSON (below)
    POST /api/predict               multipart form: file ``image`` (+ optional index-PNG ``mask``)
                                    -> {"image": {...}, "predictions": [{"run", "mask_url",
                                        "seconds", "cached", "tiles", "scores_url"}]}
    GET  /api/scores?image=&run=    the image's scores against its mask (mean IU, per-class IU, ...)
    GET  /api/progress?image=&run=  tiles done of a prediction under way (never waits)
    GET  /api/probe?image=&x=&y=[&run=]   label, probabilities, receptive-field box of the cell at (x, y)
    GET  /api/tile/{layer}/{z}/{ty}/{tx}?image=[&run=]   layer = image (PNG) | labels | truth (raw uint8)
    GET  /api/mask?image=&run=      the predicted mask as a palette PNG (TIFF above 32 Mpx)

Errors are JSON ``{"error": message}``: 400 bad input, 404 unknown id or file, 413 too large.
Model work runs in a worker thread, so the server keeps answering while a big image is predicted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fcnkit.app.serve.catalog import Catalog, NotFound, TooLarge
from fcnkit.app.serve.predictions import Predictor
from fcnkit.app.serve.tiles import TILE, display_range, image_tile, label_tile, levels
from fcnkit.errors import FcnkitError, InputError

__all__ = ["make_app", "STATIC_DIR"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
_CACHE = {"Cache-Control": "private, max-age=3600"}  # ids are content keys: a tile never changes


def _error(exc: Exception) -> JSONResponse:
    status = 413 if isinstance(exc, TooLarge) else 404 if isinstance(exc, NotFound) else 400
    return JSONResponse({"error": str(exc)}, status_code=status)


def _int(request: Request, name: str) -> int:
    text = request.query_params.get(name, "")
    try:
        return int(text)
    except (TypeError, ValueError):
        raise InputError(f"query parameter {name}={text!r} must be an integer") from None


class Viewer:
    """The handlers, bound to one catalog and predictor."""

    def __init__(self, catalog: Catalog, predictor: Predictor):
        self.catalog, self.predictor = catalog, predictor
        self._stretch: dict[str, Any] = {}
        self._truth: dict[str, Any] = {}

    def _run(self, request: Request):
        return self.catalog.run(request.query_params.get("run", next(iter(self.catalog.runs))))

    def _image(self, request: Request):
        return self.catalog.image(request.query_params.get("image", ""))

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def runs(self, request: Request) -> Response:
        info = self.catalog.describe()
        for image in info["images"]:
            image["levels"] = levels((image["height"], image["width"]))
        return JSONResponse({**info, "tile_size": TILE})

    async def progress(self, request: Request) -> Response:
        return JSONResponse(self.predictor.progress(self._run(request), self._image(request)))

    def _predict_all(self, image) -> dict:
        out = []
        for run in self.catalog.runs.values():
            p = self.predictor.get(run, image)
            scores = f"/api/scores?image={image.id}&run={run.id}" if image.mask_path is not None else None
            out.append(
                {
                    "run": run.id,
                    "mask_url": f"/api/mask?image={image.id}&run={run.id}",
                    "seconds": p.seconds,
                    "cached": p.cached,
                    "tiles": p.tiles,
                    "scores_url": scores,
                }
            )
        return {"image": {**image.describe(), "levels": levels(image.size)}, "predictions": out}

    async def predict_given(self, request: Request) -> Response:
        image = self._image(request)
        return JSONResponse(await run_in_threadpool(self._predict_all, image))

    async def predict_upload(self, request: Request) -> Response:
        limit = self.catalog.limits.max_upload_bytes
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            raise InputError("upload without a Content-Length; send the image as a multipart form (field 'image')")
        if int(length) > 2 * limit + (1 << 16):  # image + mask + form overhead: refuse before reading
            raise TooLarge(
                f"upload of {length} bytes is over the limit of {limit} bytes per file; "
                "restart fcnkit serve with a larger --max-upload-mb"
            )
        try:
            form = await request.form(max_files=2, max_fields=4)
        except HTTPException as exc:
            raise InputError(f"malformed upload ({exc.detail}); send a multipart form, file in field 'image'") from None
        upload, mask = form.get("image"), form.get("mask")
        if upload is None or isinstance(upload, str):
            raise InputError("no file in form field 'image'; send the image as multipart/form-data, field 'image'")
        data = await upload.read()
        mask_file = mask if mask is not None and not isinstance(mask, str) else None
        mask_data = await mask_file.read() if mask_file is not None else None
        mask_name = (mask_file.filename or "") if mask_file is not None else ""
        image = await run_in_threadpool(
            self.catalog.add_upload, data, upload.filename or "", mask_data or None, mask_name
        )
        return JSONResponse(await run_in_threadpool(self._predict_all, image))

    async def scores(self, request: Request) -> Response:
        run, image = self._run(request), self._image(request)
        return JSONResponse(await run_in_threadpool(self.predictor.scores, run, image))

    async def probe(self, request: Request) -> Response:
        run, image = self._run(request), self._image(request)
        y, x = _int(request, "y"), _int(request, "x")
        return JSONResponse(await run_in_threadpool(self.predictor.probe, run, image, y, x))

    def _tile(self, layer: str, request: Request, z: int, ty: int, tx: int) -> Response:
        image = self._image(request)
        if layer == "image":
            array = self.catalog.pixels(image)
            if image.id not in self._stretch:
                self._stretch[image.id] = display_range(array)
            return Response(
                image_tile(array, self._stretch[image.id], z, ty, tx), media_type="image/png", headers=_CACHE
            )
        if layer == "labels":
            labels = self.predictor.get(self._run(request), image).labels
        elif layer == "truth":
            if image.mask_path is None:
                raise NotFound(f"image {image.name} has no mask; give one with --masks DIR or upload it with the image")
            if image.id not in self._truth:
                self._truth[image.id] = self.predictor.truth(image)
            labels = self._truth[image.id]
        else:
            raise NotFound(f"tile layer {layer!r} does not exist; use image, labels or truth")
        data, w, h = label_tile(labels, z, ty, tx)
        return Response(
            data,
            media_type="application/octet-stream",
            headers={**_CACHE, "X-Tile-Width": str(w), "X-Tile-Height": str(h)},
        )

    async def tile(self, request: Request) -> Response:
        p = request.path_params
        return await run_in_threadpool(self._tile, p["layer"], request, p["z"], p["ty"], p["tx"])

    def _mask_file(self, run, image) -> Path:
        from fcnkit.inference.writers import PNG_MAX_PIXELS, write_labels
        from fcnkit.utils.atomic import atomic_path

        big = image.size[0] * image.size[1] > PNG_MAX_PIXELS
        path = self.predictor.folder(run, image) / f"mask.{'tif' if big else 'png'}"
        if not path.is_file():
            labels = self.predictor.get(run, image).labels
            with atomic_path(path) as tmp:
                write_labels(tmp, labels, run.palette, tiff=big)
        return path

    async def mask(self, request: Request) -> Response:
        run, image = self._run(request), self._image(request)
        path = await run_in_threadpool(self._mask_file, run, image)
        return FileResponse(path, filename=f"{Path(image.name).stem}_mask{path.suffix}")


def make_app(catalog: Catalog, predictor: Predictor | None = None, allowed_hosts=None) -> Starlette:
    """The Starlette app of a viewer. ``allowed_hosts``: the Host headers answered (a loopback
    server answers only loopback names, which stops DNS-rebinding pages from reading it)."""
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    viewer = Viewer(catalog, predictor or Predictor(catalog))
    routes = [
        Route("/", viewer.index),
        Route("/api/runs", viewer.runs),
        Route("/api/predict", viewer.predict_given, methods=["GET"]),
        Route("/api/predict", viewer.predict_upload, methods=["POST"]),
        Route("/api/probe", viewer.probe),
        Route("/api/scores", viewer.scores),
        Route("/api/progress", viewer.progress),
        Route("/api/tile/{layer:str}/{z:int}/{ty:int}/{tx:int}", viewer.tile),
        Route("/api/mask", viewer.mask),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]

    async def fcnkit_error(request: Request, exc: Exception) -> Response:
        return _error(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)  # registered for HTTPException only
        return JSONResponse({"error": str(getattr(exc, "detail", exc))}, status_code=status)

    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts or ["*"]))]
    app = Starlette(
        routes=routes, middleware=middleware, exception_handlers={FcnkitError: fcnkit_error, HTTPException: http_error}
    )
    app.state.viewer = viewer
    return app
