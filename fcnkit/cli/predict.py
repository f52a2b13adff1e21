"""``fcnkit predict RUN_DIR INPUT... [--out DIR] [--tile N|auto] ...``: parse, call, print."""

from __future__ import annotations

from fcnkit.cli.args import add_run_dir, tile_size  # tile_size stays importable from here


def _halo(text: str):
    return text if text == "auto" else int(text)


def _size(text: str):
    if text == "train":
        return text
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        if h > 0 and w > 0:
            return h, w
    except ValueError:
        pass
    import argparse

    raise argparse.ArgumentTypeError(f"'{text}' is not a size; give HxW (e.g. 512x512) or 'train'")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment images with a trained model (masks, overlays, probabilities)",
        description="Segment images of any size with a checkpoint. Tiled inference (--tile) gives the "
        "same result as whole-image inference with --blend crop, in bounded memory.",
    )
    add_run_dir(p)
    p.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="+",
        help="image files (PNG, JPEG, TIFF, ...), folders of them, or quoted glob patterns ('tiles/**/*.tif')",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (NAME_mask.png, NAME_overlay.png, ...); default RUN_DIR/predictions",
    )
    p.add_argument("--recursive", action="store_true", help="also search the sub-folders of folder inputs")
    p.add_argument(
        "--intensity",
        choices=("check", "match", "off"),
        default="check",
        help="check (default): refuse images whose range is far from the training images'; "
        "match: map their range onto the training range; off: no check",
    )
    p.add_argument(
        "--force", action="store_true", help="predict images whose intensity is far from the training data's anyway"
    )
    p.add_argument(
        "--scale",
        type=float,
        default=None,
        metavar="F",
        help="resample each image by F before the model (labels come back at the input's size)",
    )
    p.add_argument(
        "--resize",
        type=_size,
        default=None,
        metavar="HxW|train",
        help="resample each image to HxW, or 'train' (the training images' median size), before the model",
    )
    p.add_argument(
        "--tile",
        type=tile_size,
        default=None,
        metavar="N|auto",
        help="tile size in pixels, or 'auto' (largest that fits --memory-budget); default: whole image",
    )
    p.add_argument(
        "--halo", type=_halo, default="auto", metavar="N|auto", help="tile margin (default: from the receptive field)"
    )
    p.add_argument(
        "--blend",
        choices=("crop", "average", "gaussian"),
        default="crop",
        help="crop = exact; average/gaussian blend overlapping tiles (--overlap)",
    )
    p.add_argument(
        "--overlap", type=float, default=0.25, help="tile overlap fraction for average/gaussian (default 0.25)"
    )
    p.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass (default 1)")
    p.add_argument(
        "--memory-budget",
        default=None,
        metavar="BYTES",
        help="for --tile auto: activation memory, e.g. 512M or 2G (default 512M on CPU, half the free GPU memory)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available, else cpu)")
    p.add_argument("--probabilities", action="store_true", help="also write NAME_prob.npy (float32 [K, H, W])")
    p.add_argument(
        "--zarr", action="store_true", help="also write NAME_mask.ome.zarr (OME-Zarr label pyramid, for viewers)"
    )
    p.add_argument(
        "--cluster",
        default=None,
        metavar="local[:N]|tcp://HOST:PORT",
        help="run the chunks on dask.distributed (a local cluster of N processes, or a running scheduler); "
        "writes NAME_mask.ome.zarr; a re-run resumes",
    )
    p.add_argument(
        "--chunk", type=int, default=1024, metavar="N", help="with --cluster: output chunk = tile core (default 1024)"
    )
    p.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default="torch",
        help="torch (the checkpoint) or onnx (its model.onnx from 'fcnkit export', or RUN_DIR = a .onnx file)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from fcnkit.app.predict import predict_files

    device = args.device or "auto"
    if args.cluster:
        from fcnkit.app.cluster_predict import predict_on_cluster

        for r in predict_on_cluster(
            args.run_dir, args.inputs, args.out, cluster=args.cluster, tile=args.tile, chunk=args.chunk, device=device
        ):
            print(f"{r['input']}: {r['chunks']} chunks ({r['skipped']} already done) -> {r['mask']}")
        return 0
    results = predict_files(
        args.run_dir,
        args.inputs,
        args.out,
        tile=args.tile,
        halo=args.halo,
        batch_size=args.batch_size,
        blend=args.blend,
        overlap=args.overlap,
        device=device,
        memory_budget=args.memory_budget,
        probabilities=args.probabilities,
        progress=not args.quiet,
        recursive=args.recursive,
        intensity=args.intensity,
        force=args.force,
        scale=args.scale,
        resize=args.resize,
        zarr=args.zarr,
        backend=args.backend,
    )
    for r in results:
        h, w = r["size"]
        extra = f", probabilities {r['probabilities']}" if "probabilities" in r else ""
        extra += f", {r['zarr']}" if "zarr" in r else ""
        shrunk = f" (1/{r['overlay_factor']} scale)" if r["overlay_factor"] > 1 else ""
        geo = " (georeferenced)" if r.get("georeferenced") else ""
        print(
            f"{r['input']}: {w}x{h}, {r['tiles']} tile{'s' if r['tiles'] != 1 else ''} -> {r['mask']}{geo}, "
            f"{r['overlay']}{shrunk}{extra}"
        )
    return 0
