"""Dense inference speed (FCN paper, Sec. 3.1): one pass of a convolutionalized classifier against
classifying every native-size window of the same output grid, one at a time and batched.

    python benchmarks/dense_inference.py                 # AlexNet + VGG16 on a 500x500 image
    python benchmarks/dense_inference.py --archs alexnet --repeats 1 --device cpu

Random weights (timing only). Prints ms for each method, the speed ratios, and the FLOP redundancy
ratio (FLOPs of all crops / FLOPs of the single pass, counted by torch.utils.flop_counter), and
the cost of shift-and-stitch (s^2 shifted passes, FCN Sec. 3.2) against one pass + bilinear
upsampling. For AlexNet/VGG16 (s = 32: 1024 passes) shift-and-stitch runs ``--stitch-passes`` of
its s^2 passes and extrapolates (the passes differ only by < s pixels of input size), unless
``--stitch-passes 0`` asks for all of them; a stride-8 fcnkit allconv net (64 passes) is measured
in full next to the same extrapolation, as a check of it.
Uses CUDA when available (``--device`` overrides).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from fcnkit import convolutionalize, receptive_field  # noqa: E402
from fcnkit.inference.shift_stitch import shift_and_stitch  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in ms, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def grid_geometry(fcn) -> tuple[tuple[int, int], tuple[float, float]]:
    """``(stride, offset)`` of the net's output grid, from its receptive-field geometry."""
    g = receptive_field(fcn)
    return tuple(int(s) for s in g.stride), tuple(float(o) for o in g.offset)


def bench_arch(name: str, size: int, device: torch.device, repeats: int, batch: int, stitch_passes: int) -> dict:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval().to(device)
    fcn = convolutionalize(model).eval()
    native = fcn.input_size
    x = torch.randn(1, 3, size, size, device=device)
    stride, offset = grid_geometry(fcn)
    with torch.no_grad():
        grid = fcn(x).shape[-2:]
        # crop (i, j) is the native window whose classification is output cell (i, j): cell (0, 0) is
        # the window at the top-left corner (the FCN at the native size is one cell), then stride steps
        crops = [
            x[:, :, i * stride[0] : i * stride[0] + native[0], j * stride[1] : j * stride[1] + native[1]]
            for i in range(grid[0])
            for j in range(grid[1])
        ]
        assert all(c.shape[-2:] == native for c in crops)
        stacked = torch.cat(crops)

        def one_at_a_time():
            for c in crops:
                model(c)

        def batched():
            for k in range(0, len(crops), batch):
                model(stacked[k : k + batch])

        def single():
            return fcn(x)

        result = {
            "arch": name,
            "image": size,
            "native": list(native),
            "grid": list(grid),
            "crops": len(crops),
            "stride": list(stride),
        }
        result["fcn_ms"] = timed(single, device, repeats)
        result["crops_one_ms"] = timed(one_at_a_time, device, max(1, repeats // 3), warmup=0)
        result["crops_batched_ms"] = timed(batched, device, max(1, repeats // 3), warmup=1)
        result["flops_fcn"] = flops(single)
        result["flops_crops"] = flops(lambda: model(crops[0])) * len(crops)

        # shift-and-stitch (s^2 passes) vs one pass + bilinear upsampling to the image size
        from fcnkit.convert.segmenter import aligned_upsample

        scores = fcn(x)
        # upsampling cost grows with the classes (1000 x 500 x 500 floats = 1 GB): time it for a
        # 21-class segmentation head (PASCAL VOC), the setting shift-and-stitch is compared in
        seg = scores[:, :21].contiguous()
        result["upsample_ms"] = timed(lambda: aligned_upsample(seg, (size, size), stride, offset), device, repeats)
        shifts = [(dy, dx) for dy in range(stride[0]) for dx in range(stride[1])]
        sample = shifts if stitch_passes <= 0 else shifts[:: max(1, len(shifts) // stitch_passes)][:stitch_passes]

        def some_shifts():
            for dy, dx in sample:
                fcn(x[:, :, dy:, dx:])

        per_pass = timed(some_shifts, device, 1) / len(sample)
        result["stitch_passes"] = len(shifts)
        result["stitch_passes_timed"] = len(sample)
        result["stitch_ms"] = per_pass * len(shifts)
        if stitch_passes <= 0:  # the real thing, to check the extrapolation
            result["stitch_full_ms"] = timed(lambda: shift_and_stitch(fcn, x, stride=stride), device, 1, warmup=0)
    return result  # model, crops etc. are freed on return (the closures above die with this frame)


def bench_stitch_small(size: int, device: torch.device, sample: int) -> dict:
    """Shift-and-stitch measured in full on a net where s^2 is small (fcnkit's allconv, stride 8,
    64 passes), next to the same extrapolation from ``sample`` passes that the big nets use."""
    from fcnkit.convert.segmenter import aligned_upsample
    from fcnkit.models import build_model

    torch.manual_seed(0)
    net = build_model("allconv", num_classes=21, output="coarse").eval().to(device)
    x = torch.randn(1, 3, size, size, device=device)
    s = 8
    stride, offset = grid_geometry(net)
    assert stride == (s, s)
    with torch.no_grad():
        scores = net(x)
        one = timed(lambda: net(x), device, 3)
        up = timed(lambda: aligned_upsample(scores, (size, size), stride, offset), device, 3)
        full = timed(lambda: shift_and_stitch(net, x, stride=s), device, 1)
        shifts = [(dy, dx) for dy in range(s) for dx in range(s)][:: (s * s) // sample][:sample]
        part = timed(lambda: [net(x[:, :, dy:, dx:]) for dy, dx in shifts], device, 1) / len(shifts) * s * s
    return {
        "net": "allconv (stride 8)",
        "one_pass_ms": one,
        "upsample_ms": up,
        "stitch_ms": full,
        "stitch_extrapolated_ms": part,
    }


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["alexnet", "vgg16"])
    parser.add_argument("--size", type=int, default=500, help="square image size (default 500, as in the FCN paper)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repeats of the single pass (crops: repeats // 3, at least 1)"
    )
    parser.add_argument("--batch", type=int, default=27, help="crops per batch for the batched baseline")
    parser.add_argument(
        "--stitch-passes", type=int, default=4, help="shift-and-stitch passes to time and extrapolate (0 = all)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    header = {
        "date": datetime.datetime.now().isoformat(timespec="minutes"),
        "device": describe_device(device),
        "torch": torch.__version__,
        "load_average": [round(v, 2) for v in load],
    }
    print(
        f"# dense inference, {header['date']}, {header['device']}, torch {header['torch']}, load "
        f"{header['load_average']}"
    )
    results = []
    for name in args.archs:
        r = bench_arch(name, args.size, device, args.repeats, args.batch, args.stitch_passes)
        results.append(r)
        how = "measured" if "stitch_full_ms" in r else f"extrapolated from {r['stitch_passes_timed']} passes"
        print(
            f"{name}: {r['image']}x{r['image']} -> {r['grid'][0]}x{r['grid'][1]} cells ({r['crops']} crops of "
            f"{r['native'][0]}x{r['native'][1]}, stride {r['stride'][0]})\n"
            f"  convolutionalized, one pass : {r['fcn_ms']:10.1f} ms\n"
            f"  crops one at a time         : {r['crops_one_ms']:10.1f} ms   ({r['crops_one_ms'] / r['fcn_ms']:.1f}x "
            "the single pass)\n"
            f"  crops batched ({args.batch:>3} / batch) : {r['crops_batched_ms']:10.1f} ms   "
            f"({r['crops_batched_ms'] / r['fcn_ms']:.1f}x the single pass)\n"
            f"  FLOP redundancy (crops / one pass): {r['flops_crops'] / r['flops_fcn']:.2f} "
            f"({r['flops_crops'] / 1e9:.1f} / {r['flops_fcn'] / 1e9:.1f} GFLOP)\n"
            f"  dense output: one pass + bilinear upsampling {r['fcn_ms'] + r['upsample_ms']:.1f} ms "
            f"(upsampling of 21 classes {r['upsample_ms']:.2f} ms) vs shift-and-stitch {r['stitch_passes']} passes "
            f"{r['stitch_ms'] / 1e3:.1f} s ({how}; "
            f"{r['stitch_ms'] / (r['fcn_ms'] + r['upsample_ms']):.0f}x)"
        )
    small = bench_stitch_small(args.size, device, max(1, args.stitch_passes))
    print(
        f"{small['net']}: one pass + upsampling {small['one_pass_ms'] + small['upsample_ms']:.1f} ms vs "
        f"shift-and-stitch 64 passes {small['stitch_ms']:.1f} ms measured "
        f"({small['stitch_ms'] / (small['one_pass_ms'] + small['upsample_ms']):.0f}x), "
        f"{small['stitch_extrapolated_ms']:.1f} ms extrapolated from {max(1, args.stitch_passes)} passes"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({**header, "results": results, "stitch_small": small}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
