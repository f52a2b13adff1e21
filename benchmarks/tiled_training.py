"""Tiled vs whole-image training steps: gradient agreement, step time, peak memory.

    python benchmarks/tiled_training.py                    # all three parts (about 15 min on 2 busy cores)
    python benchmarks/tiled_training.py --parts grad time  # skip the 8192 x 8192 memory run

1. ``grad``: max relative difference of the tiled gradient from the whole-image one, per parameter
   tensor (max |diff| / max |whole|), in float64 and float32, on three nets (allconv stride 8 with
   skips; allconv valid + strided + learned upsampling + eval BatchNorm; FCN-8s on allconv, eval
   BatchNorm). In float32 also each one's distance from the float64 gradient (the rounding floor).
2. ``time``: one training step (forward, loss, backward) at ``--time-size`` (2048) RGB, whole vs
   tiled (``--tile``, default auto with ``--budget``), interleaved A B A B, median and spread.
3. ``rss``: peak resident memory of one tiled training step on a ``--rss-size`` (8192) RGB uint8
   TIFF read tile by tile (memory-mapped) with a memory-mapped mask, in a fresh process; the
   whole-image step measured the same way at 1024 and 2048 and extrapolated linearly in pixels.

Model: ``allconv`` registry defaults (width 16, 3 stages, stride 8, skips) with ``norm="none"``:
GroupNorm normalises over the whole image, so no tiling can give its whole-image gradient.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
K = 4
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _model(kind="allconv"):
    import torch

    from fcnkit import build_model

    torch.manual_seed(0)
    if kind == "allconv":
        return build_model("allconv", num_classes=K, norm="none")
    if kind == "valid-learned-bn":
        m = build_model("allconv", num_classes=K, width=8, padding="valid", downsample="strided", learn_upsampling=True)
    else:
        m = build_model("fcn8s", num_classes=K)
    for b in m.modules():
        if isinstance(b, torch.nn.BatchNorm2d):
            b.running_mean.uniform_(-0.5, 0.5)
            b.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _grads(model):
    return [p.grad.detach().clone() for p in model.parameters() if p.requires_grad]


def _rel(a, b):
    return max(
        float((x.double() - y.double()).abs().max() / y.double().abs().max().clamp_min(1e-300)) for x, y in zip(a, b)
    )


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def part_grad(args) -> list[dict]:
    import torch

    from fcnkit import tiled_backward
    from fcnkit.training.losses import pixelwise_loss

    rows = []
    for kind, size, tile in (("allconv", 320, 160), ("valid-learned-bn", 320, 160), ("fcn8s", 600, 448)):
        out = {"net": kind, "size": size, "tile": tile}
        per_dtype = {}
        for dtype in (torch.float64, torch.float32):
            model = _model(kind).to(dtype)
            g = torch.Generator().manual_seed(0)
            x = torch.randn(3, size, size, generator=g).to(dtype)
            mask = torch.randint(0, K, (size, size), generator=g)
            mask[: size // 6] = 255
            model.zero_grad(set_to_none=True)
            pixelwise_loss(model(x[None]), mask[None]).backward()
            whole = _grads(model)
            model.zero_grad(set_to_none=True)
            tiled_backward(model, x, mask, tile, reduction="mean")
            per_dtype[dtype] = (whole, _grads(model))
            out[f"{str(dtype)[6:]}_rel_diff"] = _rel(per_dtype[dtype][1], whole)
        truth = per_dtype[torch.float64][0]
        out["float32_whole_vs_float64"] = _rel([t.double() for t in per_dtype[torch.float32][0]], truth)
        out["float32_tiled_vs_float64"] = _rel([t.double() for t in per_dtype[torch.float32][1]], truth)
        rows.append(out)
        print(json.dumps(out), flush=True)
    return rows


def part_time(args) -> dict:
    import torch

    from fcnkit import tiled_backward
    from fcnkit.geometry import receptive_field
    from fcnkit.training.losses import pixelwise_loss
    from fcnkit.training.tiled_backward import even_tile, training_tile

    model, n = _model(), args.time_size
    g = torch.Generator().manual_seed(0)
    x, mask = torch.randn(3, n, n, generator=g), torch.randint(0, K, (n, n), generator=g)
    geometry = receptive_field(model, 3)
    from fcnkit.inference.predict import parse_memory

    tile = training_tile(model, geometry, 3, parse_memory(args.budget)) if args.tile == "auto" else int(args.tile)

    def whole():
        model.zero_grad(set_to_none=True)
        pixelwise_loss(model(x[None]), mask[None]).backward()

    def tiled():
        model.zero_grad(set_to_none=True)
        tiled_backward(model, x, mask, tile, reduction="mean")

    times = {"whole": [], "tiled": []}
    for _ in range(args.repeats):
        for name, fn in (("whole", whole), ("tiled", tiled)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    ratios = [t / w for t, w in zip(times["tiled"], times["whole"])]
    out = {
        "size": n,
        "tile": tile,
        "window": even_tile(n, tile, geometry.halo()[0], geometry.align[0]),
        "whole_s": times["whole"],
        "tiled_s": times["tiled"],
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }
    print(json.dumps(out), flush=True)
    return out


def worker(args) -> None:
    """One training step in this process (image from a TIFF, mask from a .npy); prints one JSON line."""
    import torch

    from fcnkit.data.io import read_image, to_model_input
    from fcnkit.inference.sources import open_image
    from fcnkit.training.losses import pixelwise_loss

    torch.set_num_threads(args.threads)
    model = _model()
    base = _peak_rss_mb()
    t0 = time.perf_counter()
    if args.worker == "whole":
        x = to_model_input(read_image(args.image, mmap=True), 3, MEAN, STD)
        mask = torch.from_numpy(np.load(args.mask).astype(np.int64))
        pixelwise_loss(model(x[None]), mask[None]).backward()
        tiles = 1
    else:
        from fcnkit.training.tiled_backward import tiled_gradients

        tile = args.tile if args.tile == "auto" else int(args.tile)
        result = tiled_gradients(
            model,
            open_image(args.image, 3, MEAN, STD),
            np.load(args.mask, mmap_mode="r"),
            tile,
            reduction="mean",
            memory_budget=args.budget,
        )
        tiles = result.tiles
    print(
        json.dumps(
            {
                "worker": args.worker,
                "seconds": time.perf_counter() - t0,
                "tiles": tiles,
                "torch_mb": base,
                "peak_mb": _peak_rss_mb(),
            }
        )
    )


def _spawn(kind, image, mask, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--image",
        str(image),
        "--mask",
        str(mask),
        "--tile",
        args.tile,
        "--budget",
        args.budget,
        "--threads",
        str(args.threads),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def part_rss(args) -> dict:
    import tifffile

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, kind in ((1024, "whole"), (2048, "whole"), (args.rss_size, "tiled")):
            rng = np.random.default_rng(n)
            image, mask = Path(tmp, f"{n}.tif"), Path(tmp, f"{n}.npy")
            tifffile.imwrite(image, rng.integers(0, 256, (n, n, 3), dtype=np.uint8))
            np.save(mask, rng.integers(0, K, (n, n), dtype=np.uint8))
            rows[f"{kind}_{n}"] = r = _spawn(kind, image, mask, args)
            print(json.dumps({kind: n, **r}), flush=True)
            image.unlink()
            mask.unlink()
    a, b = rows["whole_1024"]["peak_mb"], rows["whole_2048"]["peak_mb"]
    per_px = (b - a) / (2048**2 - 1024**2)
    rows["whole_estimate_mb"] = b + per_px * (args.rss_size**2 - 2048**2)
    print(json.dumps({"whole_estimate_mb": rows["whole_estimate_mb"], "per_px_bytes": per_px * 2**20}), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", default=["grad", "time", "rss"], choices=["grad", "time", "rss"])
    p.add_argument("--time-size", type=int, default=2048)
    p.add_argument("--rss-size", type=int, default=8192)
    p.add_argument("--tile", default="auto")
    p.add_argument("--budget", default="1G", help="memory budget of tile=auto (default 1G)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", choices=["whole", "tiled"], help=argparse.SUPPRESS)
    p.add_argument("--image", help=argparse.SUPPRESS)
    p.add_argument("--mask", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    import torch

    torch.set_num_threads(args.threads)
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.2f}, "
        f"{os.cpu_count()} cpus, torch {torch.__version__}",
        flush=True,
    )
    for part in args.parts:
        {"grad": part_grad, "time": part_time, "rss": part_rss}[part](args)
    print(f"# done {time.strftime('%H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
