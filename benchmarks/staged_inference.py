"""Staged vs single-level exact tiling vs whole-image inference: time ratios, interleaved in one run.

    python benchmarks/staged_inference.py                                   # fcn8s/resnet18 and /vgg16, 2048
    python benchmarks/staged_inference.py --backbones resnet18 --sizes 2048 4096 --tile 1024 --repeats 3

This shared machine's speed varies 2-3x between runs, so every ratio comes from ONE run in which
the methods alternate (whole, staged, single, whole, staged, single, ...): each row gives the median
time over the repeats divided by the median whole-image time of the same run, with the spread
(min-max of the per-repeat ratios), and the largest |difference| to the whole-image logits.
With MONAI installed (``pip install .[bench]``) its Gaussian-blended ``sliding_window_inference``
(roi 512, overlap 0.25) is timed alongside; with TorchIO installed (same extra) its ``GridSampler`` +
``GridAggregator`` (patch 512x512x1, overlap 128x128x0 = 0.25, ``overlap_mode="hann"``, its blended
mode; the 2-D image is a C,W,H,D volume of depth 1) too. Threads: ``--threads`` (default 1). Peak memory is
not measured here (one process for all methods); ``tiled_inference.py`` measures it per method in
fresh processes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _torchio_grid(model, x):
    """TorchIO's grid sampler + Hann-blended aggregator over a (C, H, W) image, as a depth-1 volume."""
    import torch
    import torchio as tio

    subject = tio.Subject(image=tio.ScalarImage(tensor=x[..., None]))
    sampler = tio.GridSampler(subject, patch_size=(512, 512, 1), patch_overlap=(128, 128, 0))
    aggregator = tio.GridAggregator(sampler, overlap_mode="hann")
    for patch in sampler:  # one patch per forward, like MONAI's sw_batch_size=1
        logits = model(patch["image"].data[None, ..., 0])
        aggregator.add_batch(logits[..., None], torch.as_tensor(patch[tio.LOCATION])[None])
    return aggregator.get_output_tensor()[..., 0]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["resnet18", "vgg16"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[2048])
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="WORD",
        help="time only the methods whose name starts with one of these words (whole is always timed), "
        "e.g. --only staged for the large sizes",
    )
    args = ap.parse_args(argv)

    import torch
    from _models import randomise_zero_parameters

    from fcnkit import predict
    from fcnkit.models.registry import build_model

    torch.set_num_threads(args.threads)
    print("| model | size | method | time / whole (median) | spread | max abs diff vs whole |")
    print("|---|---|---|---|---|---|")
    for backbone in args.backbones:
        torch.manual_seed(0)
        model = build_model("fcn8s", num_classes=3, backbone=backbone).eval()
        randomise_zero_parameters(model, 0.01)  # FCN's score layers start at zero (all logits 0)
        for size in args.sizes:
            x = torch.randn(3, size, size)
            methods = {
                "whole": lambda m=model, x=x: m(x[None])[0],
                f"staged, tile {args.tile}": lambda m=model, x=x: predict(m, x, tile=args.tile),
                f"single-level, tile {args.tile}": lambda m=model, x=x: predict(m, x, tile=args.tile, staged=False),
            }
            try:  # MONAI's blended sliding window, side by side (pip install .[bench])
                from monai.inferers import sliding_window_inference

                methods["MONAI gaussian, roi 512, overlap 0.25"] = lambda m=model, x=x: sliding_window_inference(
                    x[None], (512, 512), 1, m, overlap=0.25, mode="gaussian"
                )[0]
            except ImportError:
                pass
            try:  # TorchIO's grid sampler + Hann-blended aggregator, side by side (pip install .[bench])
                import torchio  # noqa: F401

                methods["TorchIO hann, patch 512, overlap 0.25"] = lambda m=model, x=x: _torchio_grid(m, x)
            except ImportError:
                pass
            if args.only:
                methods = {k: f for k, f in methods.items() if k == "whole" or k.split(",")[0].split()[0] in args.only}
            predict(model, x[:, :256, :256], tile=args.tile)  # trace + cache the geometry outside the timing
            times = {k: [] for k in methods}
            diffs = {}
            ref = None
            for _ in range(args.repeats):
                for name, fn in methods.items():
                    t0 = time.perf_counter()
                    with torch.inference_mode():
                        y = fn()
                    times[name].append(time.perf_counter() - t0)
                    if name == "whole":
                        ref = y
                    diffs[name] = max(diffs.get(name, 0.0), (y - ref).abs().max().item())
                    del y
            for name in methods:
                ratios = [t / w for t, w in zip(times[name], times["whole"])]
                med = statistics.median(times[name]) / statistics.median(times["whole"])
                print(
                    f"| fcn8s/{backbone} | {size}² | {name} | {med:.2f} | {min(ratios):.2f}-{max(ratios):.2f} | "
                    f"{diffs[name]:.1e} |",
                    flush=True,
                )
            print(f"|  |  | (whole: median {statistics.median(times['whole']):.1f} s) | | | |", flush=True)


if __name__ == "__main__":
    main()
