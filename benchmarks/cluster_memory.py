"""Peak memory per Dask worker of ``fcnkit predict --cluster`` on a huge compressed tiled TIFF.

    python benchmarks/cluster_memory.py                       # 16384x16384 RGB, 2 workers, chunk 1024
    python benchmarks/cluster_memory.py --size 8192 --workers 1

Writes a zlib-compressed, 512x512-tiled RGB TIFF (a smooth pattern with noise, so it compresses
like a real scan rather than like zeros), saves a small random-weight ``allconv`` run, and runs
:func:`fcnkit.app.cluster_predict.predict_on_cluster` on a LocalCluster of N worker processes x 1
thread, sampling the resident memory (RSS) of every worker process every 0.2 s. The claim checked:
memory per worker is bounded by the chunk plan, not by the image (each task reads its window lazily
through ``tifffile.aszarr`` and writes its core into its own zarr chunk).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_tiff(path: Path, size: int, tile: int = 512) -> None:
    import numpy as np
    import tifffile

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:tile, 0:tile].astype(np.float32)

    def tiles():
        for ty in range(0, size, tile):
            for tx in range(0, size, tile):
                base = 127 + 100 * np.sin((yy + ty) / 97.0) * np.cos((xx + tx) / 61.0)
                noise = rng.integers(0, 8, (tile, tile), dtype=np.uint8)
                grey = np.clip(base, 0, 247).astype(np.uint8) + noise
                yield np.stack([grey, grey[::-1], 255 - grey], axis=-1)

    tifffile.imwrite(
        path,
        tiles(),
        shape=(size, size, 3),
        dtype=np.uint8,
        tile=(tile, tile),
        compression="zlib",
        compressionargs={"level": 1},
        photometric="rgb",
    )


def save_run(folder: Path) -> Path:
    import torch
    from _models import randomise_zero_parameters

    from fcnkit.checkpoint import save_checkpoint
    from fcnkit.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("allconv", num_classes=3, width=8, stages=2).eval()
    randomise_zero_parameters(model, 0.1)  # score layers start at zero: random weights so the labels vary
    config = {
        "task": "segmentation",
        "num_classes": 3,
        "in_channels": 3,
        "classes": ["a", "b", "c"],
        "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]],
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
    }
    return save_checkpoint(folder / "run" / "best", model, config).parent


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=1024)
    args = ap.parse_args(argv)

    import psutil

    from fcnkit.app.cluster_predict import connect, predict_on_cluster

    with tempfile.TemporaryDirectory(prefix="fcnkit-cluster-mem-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        write_tiff(tmp / "big.tif", args.size)
        print(
            f"input: {args.size}x{args.size} RGB, {(tmp / 'big.tif').stat().st_size / 2**20:.0f} MiB on disk "
            f"({3 * args.size**2 / 2**30:.2f} GiB decoded), written in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        run = save_run(tmp)
        with connect(f"local:{args.workers}") as client:  # what --cluster local:N starts
            pids = list(client.run(lambda: __import__("os").getpid()).values())
            procs = [psutil.Process(pid) for pid in pids]
            peaks = dict.fromkeys(pids, 0)
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    for p in procs:
                        try:
                            peaks[p.pid] = max(peaks[p.pid], p.memory_info().rss)
                        except psutil.Error:
                            pass
                    time.sleep(0.2)

            idle = {p.pid: p.memory_info().rss for p in procs}
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.perf_counter()
            result = predict_on_cluster(run, [tmp / "big.tif"], tmp / "out", chunk=args.chunk, client=client)[0]
            seconds = time.perf_counter() - t0
            stop.set()
            sampler.join()
        report = {
            "size": args.size,
            "workers": args.workers,
            "chunk": args.chunk,
            "chunks": result["chunks"],
            "seconds": round(seconds, 1),
            "worker_rss_idle_gib": [round(idle[p] / 2**30, 2) for p in pids],
            "worker_rss_peak_gib": [round(peaks[p] / 2**30, 2) for p in pids],
        }
        print(json.dumps(report))


if __name__ == "__main__":
    main()
