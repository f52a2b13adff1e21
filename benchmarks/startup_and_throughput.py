"""CLI start-up and ``fcnkit predict`` throughput, and the confusion matrix against numpy's scorer.

    python benchmarks/startup_and_throughput.py                  # 5 start-up repeats, 3 throughput repeats
    python benchmarks/startup_and_throughput.py --repeats 3 --images 20

Every timed call is a fresh process (``subprocess``), and the variants are interleaved
(A B C A B C ...), so the machine's drift hits all alike; medians and min-max are printed.

- start-up: ``python -c "import torch"`` vs ``fcnkit --help``, ``fcnkit rf RUN`` and
  ``fcnkit predict RUN one.png`` (an allconv run, registry defaults, 21 classes, 512x512 image).
- throughput on N 512x512 PNGs: **raw** = a process that loads the checkpoint and times
  ``model(x)`` + ``argmax`` on N preloaded tensors (no file I/O); **job** = ``predict_files`` timed
  inside its process (reads, normalises, predicts, writes mask + overlay PNGs); **cli** = the whole
  ``fcnkit predict`` process, start-up included.
- confusion matrix: ``fcnkit.metrics.confusion_matrix`` vs the FCN reference scorer's
  ``np.bincount`` version on 2.1 Mpx with 10% 255s, 21 classes (in this process, interleaved, one
  torch thread like numpy).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's fcnkit, also in-process (confusion matrix, set-up)
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

RAW = """
import sys, time, torch, numpy as np, fcnkit
from fcnkit.data.io import read_image, to_model_input
from pathlib import Path
model, config = fcnkit.load_checkpoint(sys.argv[1])
files = sorted(Path(sys.argv[2]).glob("*.png"))
xs = [torch.randn(1, 3, 512, 512) for _ in files]
with torch.inference_mode():
    model(xs[0])  # warm-up, as predict's first image
    t = time.perf_counter()
    for x in xs:
        labels = model(x)[0].{reduce}
print(time.perf_counter() - t)
"""
JOB = """
import sys, time
from fcnkit.app.predict import predict_files
t = time.perf_counter()
predict_files(sys.argv[1], [sys.argv[2]], sys.argv[3], device="cpu")
print(time.perf_counter() - t)
"""


def _wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def _inner(cmd: list[str]) -> float:
    out = subprocess.run(cmd, check=True, env=ENV, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def _summary(name: str, times: list[float], ref: list[float] | None = None) -> dict:
    med = statistics.median(times)
    row = {"name": name, "median_s": round(med, 3), "min_s": round(min(times), 3), "max_s": round(max(times), 3)}
    if ref:
        ratios = [a / b for a, b in zip(times, ref)]
        row.update(
            ratio=round(med / statistics.median(ref), 2),
            ratio_min=round(min(ratios), 2),
            ratio_max=round(max(ratios), 2),
        )
    return row


def _setup(tmp: Path, n: int) -> tuple[Path, Path, Path]:
    import numpy as np
    from PIL import Image

    import fcnkit

    model = fcnkit.build_model("allconv", num_classes=21)
    run = fcnkit.save_checkpoint(tmp / "run", model, {"task": "segmentation", "num_classes": 21, "in_channels": 3})
    rng = np.random.default_rng(0)
    (tmp / "many").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)).save(tmp / "many" / f"{i:03d}.png")
    one = tmp / "one.png"
    Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)).save(one)
    return run, tmp / "many", one


def startup(run: Path, one: Path, out: Path, repeats: int) -> list[dict]:
    py = sys.executable
    cmds = {
        "python -c 'import torch'": [py, "-c", "import torch"],
        "fcnkit --help": [py, "-m", "fcnkit", "--help"],
        "fcnkit rf RUN": [py, "-m", "fcnkit", "rf", str(run)],
        "fcnkit predict RUN one.png": [py, "-m", "fcnkit", "predict", str(run), str(one), "--out", str(out), "--quiet"],
    }
    times = {k: [] for k in cmds}
    for cmd in cmds.values():  # warm the file cache once
        _wall(cmd)
    for _ in range(repeats):
        for k, cmd in cmds.items():
            times[k].append(_wall(cmd))
    ref = times["python -c 'import torch'"]
    return [_summary(k, v, None if k.startswith("python") else ref) for k, v in times.items()]


def throughput(run: Path, folder: Path, out: Path, repeats: int, n: int) -> list[dict]:
    py = sys.executable
    variants = {
        "raw forward+argmax": lambda: _inner([py, "-c", RAW.replace("{reduce}", "argmax(0)"), str(run), str(folder)]),
        "raw forward+max(0).indices": lambda: _inner(
            [py, "-c", RAW.replace("{reduce}", "max(0).indices"), str(run), str(folder)]
        ),
        "predict_files (in process)": lambda: _inner([py, "-c", JOB, str(run), str(folder), str(out)]),
        "fcnkit predict (whole process)": lambda: _wall(
            [py, "-m", "fcnkit", "predict", str(run), str(folder), "--out", str(out), "--quiet"]
        ),
    }
    times = {k: [] for k in variants}
    for _ in range(repeats):
        for k, f in variants.items():
            times[k].append(f())
    rows = []
    ref = times["raw forward+argmax"]
    for k, v in times.items():
        row = _summary(k, v)
        row["images_per_s"] = round(n / statistics.median(v), 2)
        # throughput relative to raw forward+argmax: raw time / this time, per interleaved repeat
        ratios = [r / t for r, t in zip(ref, v)]
        row.update(
            thru_ratio=round(statistics.median(ref) / statistics.median(v), 2),
            thru_min=round(min(ratios), 2),
            thru_max=round(max(ratios), 2),
        )
        rows.append(row)
    return rows


def confusion(repeats: int) -> list[dict]:
    import numpy as np
    import torch

    from fcnkit.metrics import confusion_matrix

    torch.set_num_threads(1)  # numpy's scorer is single-threaded too (and a busy 2-core machine stalls thread pools)
    k, n = 21, 2_100_000
    rng = np.random.default_rng(0)
    target = rng.integers(0, k, n)
    target[rng.random(n) < 0.1] = 255
    pred = rng.integers(0, k, n)
    tt, pt = torch.from_numpy(target), torch.from_numpy(pred)

    def reference():  # FCN score.py / torchfcn fast_hist
        keep = (target >= 0) & (target < k)
        return np.bincount(k * target[keep].astype(int) + pred[keep], minlength=k * k).reshape(k, k)

    assert np.array_equal(reference(), confusion_matrix(pt, tt, k).numpy())
    times = {"numpy bincount scorer": [], "fcnkit confusion_matrix": []}
    for _ in range(repeats):
        for name, f in (
            ("numpy bincount scorer", reference),
            ("fcnkit confusion_matrix", lambda: confusion_matrix(pt, tt, k)),
        ):
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    ref = times["numpy bincount scorer"]
    return [_summary(k2, v, None if k2.startswith("numpy") else ref) for k2, v in times.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="start-up repeats (throughput: max(2, repeats - 2))")
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args()
    load = os.getloadavg()[0]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_start": round(load, 2),
        "confusion_matrix": confusion(15),
    }  # first: a fresh process
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run, folder, one = _setup(tmp, args.images)
        result["startup"] = startup(run, one, tmp / "out1", args.repeats)
        if not args.skip_throughput:
            result["throughput"] = throughput(run, folder, tmp / "outn", max(2, args.repeats - 2), args.images)
        result["load_end"] = round(os.getloadavg()[0], 2)
    for section in ("confusion_matrix", "startup", "throughput"):
        for row in result.get(section, []):
            print(section, json.dumps(row))
    print(json.dumps({k: result[k] for k in ("date", "cpus", "load_start", "load_end")}))


if __name__ == "__main__":
    main()
