"""``fcnkit serve RUN_DIR [RUN_DIR2] [IMAGES...]``: parse, call, print."""

from __future__ import annotations

from fcnkit.cli.args import add_run_dir, tile_size


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="a local web viewer: predictions, probabilities, receptive fields, run comparison",
        description="Serve a web page to look at a run's predictions on the given (or uploaded) images: the mask "
        "over the image with deep zoom, the class probabilities and the receptive field under the "
        "cursor, two runs side by side, and the error map and IU where masks are given.",
    )
    add_run_dir(p)
    p.add_argument(
        "inputs",
        metavar="RUN_DIR2|IMAGE",
        nargs="*",
        default=[],
        help="optionally a second run to compare, then image files or folders of images",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0 = any free port)")
    p.add_argument("--masks", default=None, metavar="DIR", help="folder of ground-truth masks named like the images")
    p.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="keep predictions and uploads in DIR across restarts (default: a temporary folder, removed at exit)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default auto: cuda if available)")
    p.add_argument(
        "--tile",
        type=tile_size,
        default="auto",
        metavar="N|auto",
        help="tile size of the exact tiled predictor (default auto)",
    )
    p.add_argument("--memory-budget", default=None, metavar="BYTES", help="activation memory for --tile auto, e.g. 1G")
    p.add_argument("--max-upload-mb", type=float, default=64, help="largest accepted upload in MiB (default 64)")
    p.add_argument("--max-pixels", type=int, default=1 << 26, help="largest accepted upload in pixels (default 8192^2)")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from fcnkit.app.serve import Limits, build_catalog, serve, split_inputs

    runs, images = split_inputs([args.run_dir, *args.inputs])
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * (1 << 20)), max_pixels=args.max_pixels)
    catalog = build_catalog(runs, images, args.masks, args.cache, args.device, limits)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"fcnkit: warning: listening on {args.host}: anyone who can reach it can see these images", file=sys.stderr
        )
    names = ", ".join(r.name for r in catalog.runs.values())

    def ready(url: str) -> None:
        print(f"fcnkit serve: {url} ({names}; {len(images)} images); Ctrl-C to stop", flush=True)

    keep = args.cache is not None  # a temporary cache folder is ours to delete at exit
    serve(catalog, args.host, args.port, args.tile, args.memory_budget, keep_cache=keep, on_ready=ready)
    return 0
