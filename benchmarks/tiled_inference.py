"""Tiled vs whole-image inference: time, peak memory, and the largest difference in the logits.

    python benchmarks/tiled_inference.py                       # 1k, 4k, 8k (+16k on CUDA)
    python benchmarks/tiled_inference.py --sizes 512 1024 --tile 512 --model allconv

For each image size a random RGB uint8 TIFF is written to a scratch folder; then, each in a fresh
process (so that peak resident memory, ``ru_maxrss``, belongs to that run alone):

  whole  read the image, normalise it, one forward pass, logits saved to .npy    (if it fits)
  tiled  fcnkit.predict(tile=N|auto, blend="crop") from the memory-mapped TIFF, logits streamed to .npy

and it prints time, throughput ratio (whole time / tiled time), peak memory (RSS; on CUDA also
the peak allocated GPU memory) and max |tiled - whole|. Then, at one size, the seams of
``blend="average"`` and ``"gaussian"`` against whole-image logits. CUDA is used when available.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def build(args):
    import torch

    from fcnkit.models.registry import build_model

    torch.manual_seed(0)
    return build_model(args.model, num_classes=args.num_classes, **json.loads(args.model_kwargs)).eval()


def device_of(args) -> str:
    import torch

    return args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")


def worker(args) -> None:
    """One measurement in this process; prints one JSON line."""
    import torch

    from fcnkit import predict
    from fcnkit.data.io import read_image, to_model_input
    from fcnkit.inference.sources import open_image

    dev = device_of(args)
    model = build(args).to(dev)
    with torch.inference_mode():  # warm up threads / kernels outside the timing
        model(torch.zeros(1, 3, 64, 64, device=dev))
    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if args.worker == "whole":
        x = to_model_input(read_image(args.image, mmap=True), 3, MEAN, STD).to(dev)
        with torch.inference_mode():
            y = model(x[None])[0].float().cpu()
        np.save(args.out, y.numpy())  # both runs end with the logits on disk
        seconds = time.perf_counter() - t0
    else:
        src = open_image(args.image, 3, MEAN, STD)
        tile = args.tile if args.tile == "auto" else int(args.tile)
        predict(
            model,
            src,
            tile=tile,
            batch_size=args.batch_size,
            blend=args.blend,
            overlap=args.overlap,
            device=dev,
            out=args.out,
            memory_budget=args.memory_budget,
        )
        if dev == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    result = {"seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if args.worker == "tiled":
        from fcnkit.inference.predict import TiledJob

        plan = TiledJob(
            model,
            src,
            tile,
            batch_size=args.batch_size,
            blend=args.blend,
            overlap=args.overlap,
            device=dev,
            memory_budget=args.memory_budget,
        ).plan
        result.update(tile=max(s.size for s in plan.row_spans), tiles=len(plan))
    if dev == "cuda":
        result["gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


def run_worker(args, mode: str, image: Path, out: Path, blend: str = "crop", tile=None) -> dict | None:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        mode,
        "--image",
        str(image),
        "--out",
        str(out),
        "--model",
        args.model,
        "--model-kwargs",
        args.model_kwargs,
        "--num-classes",
        str(args.num_classes),
        "--tile",
        str(tile or args.tile),
        "--batch-size",
        str(args.batch_size),
        "--device",
        args.device,
        "--blend",
        blend,
        "--overlap",
        str(args.overlap),
    ]
    if args.memory_budget:
        cmd += ["--memory-budget", args.memory_budget]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        print(f"  {mode} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def max_diff(a: Path, b: Path) -> tuple[float, float]:
    """(max, mean) |a - b| of two .npy logits, read in bands so 8k images stay small in memory."""
    x, y = np.load(a, mmap_mode="r"), np.load(b, mmap_mode="r")
    if x.shape != y.shape:
        return float("nan"), float("nan")
    worst, total = 0.0, 0.0
    for r in range(0, x.shape[1], 512):
        d = np.abs(np.asarray(x[:, r : r + 512], dtype=np.float64) - np.asarray(y[:, r : r + 512], dtype=np.float64))
        worst, total = max(worst, float(d.max())), total + float(d.sum())
    return worst, total / x.size


def whole_fits(args, size: int) -> tuple[bool, float]:
    from fcnkit.inference.predict import activation_elements_per_pixel

    est_gb = activation_elements_per_pixel(build(args), 3) * 4 * 1.25 * size * size / 2**30
    return est_gb <= args.whole_limit_gb, est_gb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sizes", type=int, nargs="+", default=None, help="image sides (default 1024 4096 8192, +16384 on CUDA)"
    )
    p.add_argument("--model", default="allconv")
    p.add_argument("--model-kwargs", default="{}", help="JSON keyword arguments for build_model")
    p.add_argument("--num-classes", type=int, default=4)
    p.add_argument("--tile", default="auto", help="tile size, or 'auto' (largest fitting --memory-budget)")
    p.add_argument(
        "--memory-budget", default=None, help="activation budget for --tile auto (default: fcnkit's, 512M on CPU)"
    )
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--blend", default="crop")
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--blend-size", type=int, default=1024, help="image side for the average/gaussian seam comparison")
    p.add_argument("--blend-tile", default="256", help="tile for the seam comparison (small: many seams)")
    p.add_argument("--device", default="auto")
    p.add_argument("--whole-limit-gb", type=float, default=12.0, help="skip whole-image runs estimated above this")
    p.add_argument("--worker", choices=("whole", "tiled"), help=argparse.SUPPRESS)
    p.add_argument("--image", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    import tifffile
    import torch

    dev = device_of(args)
    sizes = args.sizes or ([1024, 4096, 8192] + ([16384] if dev == "cuda" else []))
    name = (
        torch.cuda.get_device_name()
        if dev == "cuda"
        else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    )
    print(
        f"device: {name}; model {args.model} {args.model_kwargs} K={args.num_classes}; tile {args.tile}, "
        f"batch {args.batch_size}; load average {os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M')}"
    )
    from fcnkit.geometry import receptive_field

    g = receptive_field(build(args))
    print(f"geometry: rf {g.size[0]}, stride {g.stride[0]}, align {g.align[0]}, halo {g.halo()[0]}")
    head = (
        f"{'size':>6} {'tile':>5} {'tiles':>5} {'whole s':>8} {'tiled s':>8} {'thru ratio':>10} {'whole MB':>9} "
        f"{'tiled MB':>9} {'mem ratio':>9} {'max diff':>9}"
    )
    print(head)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="fcnkit-bench-") as tmp:
        tmp = Path(tmp)
        for size in sizes:
            image = tmp / f"img{size}.tif"
            rows = [rng.integers(0, 255, (min(1024, size - r), size, 3), dtype=np.uint8) for r in range(0, size, 1024)]
            tifffile.imwrite(image, np.concatenate(rows) if len(rows) > 1 else rows[0])
            del rows
            fits, est = whole_fits(args, size)
            whole = run_worker(args, "whole", image, tmp / "whole.npy") if fits else None
            tiled = run_worker(args, "tiled", image, tmp / "tiled.npy")
            mem = "gpu_mb" if dev == "cuda" else "rss_mb"
            w_s = f"{whole['seconds']:.2f}" if whole else f"skip({est:.0f}G)"
            t_s = f"{tiled['seconds']:.2f}" if tiled else "fail"
            ratio = f"{whole['seconds'] / tiled['seconds']:.2f}" if whole and tiled else "-"
            w_m = f"{whole[mem]:.0f}" if whole else "-"
            t_m = f"{tiled[mem]:.0f}" if tiled else "-"
            m_r = f"{tiled[mem] / whole[mem]:.2f}" if whole and tiled else "-"
            diff = f"{max_diff(tmp / 'whole.npy', tmp / 'tiled.npy')[0]:.1e}" if whole and tiled else "-"
            tl = f"{tiled['tile']:>5} {tiled['tiles']:>5}" if tiled else f"{'-':>5} {'-':>5}"
            print(
                f"{size:>6} {tl} {w_s:>8} {t_s:>8} {ratio:>10} {w_m:>9} {t_m:>9} {m_r:>9} {diff:>9}"
                + (f"   (tiled RSS {tiled['rss_mb']:.0f} MB)" if dev == "cuda" and tiled else "")
            )
            for f in ("whole.npy", "tiled.npy"):
                (tmp / f).unlink(missing_ok=True)
            image.unlink()
        if args.blend_size:
            size = args.blend_size
            image = tmp / "blend.tif"
            tifffile.imwrite(image, rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
            if run_worker(args, "whole", image, tmp / "whole.npy"):
                scale = float(np.load(tmp / "whole.npy", mmap_mode="r").std())
                print(
                    f"\nseams at {size}x{size}, tile {args.blend_tile}, overlap {args.overlap}: |tiled - whole| over "
                    f"all logits (whole-image logits have std {scale:.2e})"
                )
                for blend in ("crop", "average", "gaussian"):
                    r = run_worker(args, "tiled", image, tmp / f"{blend}.npy", blend=blend, tile=args.blend_tile)
                    if r:
                        worst, mean = max_diff(tmp / "whole.npy", tmp / f"{blend}.npy")
                        print(
                            f"  {blend:<9} max {worst:.2e}  mean {mean:.2e}  time {r['seconds']:.2f}s  ({r['tiles']} "
                            "tiles)"
                        )


if __name__ == "__main__":
    main()
