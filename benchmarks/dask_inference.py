"""Dask throughput: 2 worker processes x 1 thread vs 1 worker x 1 thread, interleaved in one run.

    python benchmarks/dask_inference.py                         # fcn8s/resnet18, 2048², chunk 1024
    python benchmarks/dask_inference.py --size 4096 --repeats 3

Both clusters are started once (worker start-up and model loading are not timed); then the same
job (a random RGB PNG, ``fcnkit predict --cluster`` semantics, fresh output folder each time) runs
on cluster 1, cluster 2, cluster 1, cluster 2, ... The ratio is the median 1-worker time over the
median 2-worker time, with the spread of per-repeat ratios. The outputs are checked identical.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    import zarr
    from _models import randomise_zero_parameters
    from PIL import Image

    from fcnkit.app.cluster_predict import connect, predict_on_cluster
    from fcnkit.checkpoint import save_checkpoint
    from fcnkit.models.registry import build_model

    tmp = Path(tempfile.mkdtemp(prefix="fcnkit-dask-bench-"))
    torch.manual_seed(0)
    model = build_model("fcn8s", num_classes=3, backbone=args.backbone).eval()
    randomise_zero_parameters(model, 0.01)  # FCN's score layers start at zero: random weights instead
    config = {
        "task": "segmentation",
        "num_classes": 3,
        "in_channels": 3,
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
    }
    run = save_checkpoint(tmp / "run" / "best", model, config).parent
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)).save(tmp / "img.png")
    times, masks = {1: [], 2: []}, {}
    with contextlib.ExitStack() as stack:  # the clusters --cluster local:1 and local:2 start, both kept up
        clients = {n: stack.enter_context(connect(f"local:{n}")) for n in (1, 2)}
        for r in range(args.repeats):
            for n, client in clients.items():
                t0 = time.perf_counter()
                out = tmp / f"out{n}_{r}"
                res = predict_on_cluster(run, [tmp / "img.png"], out, chunk=args.chunk, client=client)[0]
                times[n].append(time.perf_counter() - t0)
                masks[n] = zarr.open_group(str(res["mask"]))["0"][:]
    ratios = [a / b for a, b in zip(times[1], times[2])]
    print(
        f"fcn8s/{args.backbone} {args.size}², chunk {args.chunk}: 1 worker median {statistics.median(times[1]):.1f} s, "
        f"2 workers {statistics.median(times[2]):.1f} s; throughput 2 vs 1 = "
        f"{statistics.median(times[1]) / statistics.median(times[2]):.2f}x (spread "
        f"{min(ratios):.2f}-{max(ratios):.2f}); "
        f"masks identical: {bool((masks[1] == masks[2]).all())}"
    )


if __name__ == "__main__":
    main()
