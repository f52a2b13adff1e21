"""``fcnkit serve``: a local web viewer for predictions and receptive fields.

The server (Starlette + uvicorn) serves only the runs and images it was started with, plus
uploads it keeps in its own cache folder; the page (``static/``: one HTML file, one script, one
style sheet, no build step and no third-party front-end code) draws the image and the predicted
mask on canvases, tile by tile, and asks the server for the class probabilities and the
receptive field of the output cell under the cursor. See :mod:`fcnkit.app.serve.routes` for the
HTTP API.
"""

from __future__ import annotations

import ipaddress
import shutil
import sys
import threading
from pathlib import Path

from fcnkit.app.serve.catalog import Catalog, Limits, find_mask, load_run
from fcnkit.errors import InputError

__all__ = ["build_catalog", "make_app", "make_server", "serve", "serve_in_thread", "split_inputs", "Limits"]


def split_inputs(paths) -> tuple[list[Path], list[Path]]:
    """``RUN_DIR [RUN_DIR2] [IMAGES...]`` -> (runs, images): folders holding a checkpoint are runs,
    other folders expand to their images; at most two runs, and the first argument is one."""
    from fcnkit.app.predict import expand_inputs
    from fcnkit.checkpoint import CONFIG

    runs: list[Path] = []
    images: list[Path] = []
    for p in map(Path, paths):
        is_run = p.is_dir() and any((p / s / CONFIG).is_file() for s in (".", "best", "last"))
        (runs if is_run and not images else images).append(p)
    if not runs:
        raise InputError(
            f"{paths[0] if paths else 'RUN_DIR'}: not a run or checkpoint folder; "
            "give a run folder made by 'fcnkit train' first, then images"
        )
    if len(runs) > 2:
        raise InputError(f"{runs[2]}: at most two runs can be compared; give one or two run folders")
    return runs, expand_inputs(images) if images else []


def build_catalog(
    runs, images=(), masks_dir=None, cache_dir=None, device: str = "auto", limits: Limits | None = None
) -> Catalog:
    """Load the runs and check the images (and their masks); a bad one raises before serving."""
    from fcnkit.app.serve.catalog import default_cache_dir
    from fcnkit.utils.device import resolve_device

    if masks_dir is not None and not Path(masks_dir).is_dir():
        raise InputError(f"--masks {masks_dir}: not a folder; give the folder holding the masks (same file names)")
    resolved = str(resolve_device(device))
    loaded = {str(i): load_run(r, i, resolved) for i, r in enumerate(runs)}
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    catalog = Catalog(runs=loaded, cache_dir=cache, limits=limits or Limits())
    for path in images:
        catalog.add_file(path, find_mask(Path(path), Path(masks_dir) if masks_dir else None))
    return catalog


def make_app(catalog: Catalog, host: str = "127.0.0.1", tile="auto", memory_budget=None):
    """The Starlette app; a loopback ``host`` answers only requests addressed to a loopback name."""
    from fcnkit.app.serve.predictions import Predictor
    from fcnkit.app.serve.routes import LOOPBACK
    from fcnkit.app.serve.routes import make_app as _make_app

    allowed = LOOPBACK if _is_loopback(host) else None
    return _make_app(catalog, Predictor(catalog, tile=tile, memory_budget=memory_budget), allowed_hosts=allowed)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def make_server(
    catalog: Catalog, host: str = "127.0.0.1", port: int = 8765, tile="auto", memory_budget=None, on_ready=None
):
    """A ``uvicorn.Server`` for the viewer (``server.run()`` blocks; ``server.should_exit = True`` stops it).
    ``on_ready(url)`` is called once the socket listens (``port=0``: any free port)."""
    import uvicorn

    if not 0 <= port < 65536:
        raise InputError(f"--port {port}: not a TCP port; give 1024..65535 (or 0 for any free port)")
    app = make_app(catalog, host, tile, memory_budget)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    if on_ready is not None:
        _announce(server, on_ready)
    return server


def serve(
    catalog: Catalog,
    host: str = "127.0.0.1",
    port: int = 8765,
    tile="auto",
    memory_budget=None,
    keep_cache: bool = True,
    on_ready=None,
) -> None:
    """Run the viewer until interrupted. ``keep_cache=False`` deletes the cache folder at exit
    (give it only for a folder this server created)."""
    server = make_server(catalog, host, port, tile, memory_budget, on_ready)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn shuts down cleanly on Ctrl-C, then re-raises it: a normal stop
        pass
    finally:
        if not keep_cache:
            shutil.rmtree(catalog.cache_dir, ignore_errors=True)
    if not server.started:
        raise InputError(f"cannot listen on {host}:{port} (in use or not allowed); choose another --port")


class serve_in_thread:  # noqa: N801 - used like a function: ``viewer = serve_in_thread(catalog)``
    """The viewer in a background thread of this process (a notebook, a test, a benchmark).

    ``url`` is where it listens (``port=0``: a free port); ``close()`` stops it.
    """

    def __init__(
        self,
        catalog: Catalog,
        host: str = "127.0.0.1",
        port: int = 0,
        tile="auto",
        memory_budget=None,
        timeout: float = 60.0,
    ):
        ready = threading.Event()
        self.url: str | None = None

        def on_ready(url: str) -> None:
            self.url = url
            ready.set()

        self.server = make_server(catalog, host, port, tile, memory_budget, on_ready)
        self.thread = threading.Thread(target=self.server.run, name="fcnkit-serve", daemon=True)
        self.thread.start()
        while not ready.wait(0.05):
            timeout -= 0.05
            if timeout <= 0 or not self.thread.is_alive():
                self.close()
                raise InputError(f"the viewer did not start on {host}:{port}; choose another port")

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _announce(server, on_ready) -> None:
    """Call ``on_ready(url)`` once the socket listens (uvicorn has no hook: wrap its startup)."""
    startup = server.startup

    async def wrapped(sockets=None):
        await startup(sockets=sockets)
        if server.started:
            sock = server.servers[0].sockets[0].getsockname()
            host = f"[{sock[0]}]" if ":" in sock[0] else sock[0]
            on_ready(f"http://{host}:{sock[1]}/")
        else:
            print("fcnkit: the server did not start", file=sys.stderr)

    server.startup = wrapped
