"""Predictions for the viewer: computed once per (run, image) with the exact tiled predictor,
cached on disk, then read by tiles, probes and scores.

Per (run, image) the cache folder ``CACHE/pred/<run key>/<image key>/`` holds (written whole, via
a temporary folder and one rename):

    labels.npy   uint8 [H, W]      arg-max labels on the input's pixel grid
    prob.npy     uint8 [K, H', W'] class probabilities at the model's output resolution, times 255
                                   (skipped above PROB_MAX_BYTES; the probe then shows the label only)
    meta.json    output shape, seconds, tiles
    scores-<mask key>.json   the image's scores against its mask, once asked for

Probabilities are stored to 1/255: enough to read "0.83 vs 0.12" off the page, and a quarter of
float32 on disk (a 4096^2 image with 11 classes: 185 MB).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fcnkit.app.serve.catalog import Catalog, ServedImage, ServedRun

__all__ = ["Prediction", "Predictor", "PROB_MAX_BYTES", "cell_of"]

PROB_MAX_BYTES = 1 << 30


@dataclass
class Prediction:
    labels: np.ndarray
    prob: np.ndarray | None
    seconds: float
    tiles: int
    cached: bool


class _QuantisedProbSink:
    """Softmax of each logits block, times 255, into a memory-mapped uint8 ``.npy``."""

    def __init__(self, path: Path, shape):
        self.result = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=tuple(shape))

    def write(self, rows, cols, block: torch.Tensor) -> None:
        p = torch.softmax(block.float(), dim=0).mul_(255).round_().to(torch.uint8)
        self.result[:, rows[0] : rows[1], cols[0] : cols[1]] = p.numpy()

    def close(self) -> None:
        self.result.flush()


def cell_of(geometry, out_hw, y: int, x: int) -> tuple[int, int]:
    """The output cell whose centre is nearest to input pixel ``(y, x)`` (the cell that labels it)."""
    cell = []
    for p, n, stride, offset in zip((y, x), out_hw, geometry.stride, geometry.offset):
        cell.append(int(np.clip(np.rint((p - float(offset)) / float(stride)), 0, n - 1)))
    return cell[0], cell[1]


class Predictor:
    """Computes and caches predictions; one model run at a time (the CPU or GPU is the bottleneck)."""

    def __init__(self, catalog: Catalog, tile="auto", memory_budget=None):
        self.catalog, self.tile, self.memory_budget = catalog, tile, memory_budget
        self._memo: dict[tuple[str, str], Prediction] = {}
        self._tiles: dict[tuple[str, str], tuple[int, int]] = {}  # (done, total) of a running prediction
        self._lock = threading.Lock()

    def folder(self, run: ServedRun, image: ServedImage) -> Path:
        return self.catalog.cache_dir / "pred" / run.key / image.id

    def progress(self, run: ServedRun, image: ServedImage) -> dict:
        """``{"state": "done" | "running" | "queued", "done", "total"}`` (tiles), without waiting."""
        key = (run.id, image.id)
        if key in self._memo or (self.folder(run, image) / "meta.json").is_file():
            return {"state": "done", "done": 1, "total": 1}
        done, total = self._tiles.get(key, (0, 0))
        return {"state": "running" if key in self._tiles else "queued", "done": done, "total": total}

    def get(self, run: ServedRun, image: ServedImage) -> Prediction:
        key = (run.id, image.id)
        known = self._memo.get(key)
        if known is not None:  # no waiting for a prediction of another image under way
            return known
        with self._lock:
            if key in self._memo:
                return self._memo[key]
            folder = self.folder(run, image)
            if not (folder / "meta.json").is_file():
                self._compute(run, image, folder)
                cached = False
            else:
                cached = True
            meta = json.loads((folder / "meta.json").read_text())
            prob = np.load(folder / "prob.npy", mmap_mode="r") if (folder / "prob.npy").is_file() else None
            labels = np.load(folder / "labels.npy", mmap_mode="r")
            pred = Prediction(labels, prob, meta["seconds"], meta["tiles"], cached)
            self._memo[key] = pred
            return pred

    def _compute(self, run: ServedRun, image: ServedImage, folder: Path) -> None:
        from fcnkit.app.predict import to_input_grid  # the predict job's mapping of coarse labels to pixels
        from fcnkit.inference.predict import TiledJob
        from fcnkit.inference.sources import ArraySource
        from fcnkit.inference.writers import Fanout, LabelSink
        from fcnkit.utils.atomic import atomic_dir

        start = time.perf_counter()
        source = ArraySource(self.catalog.pixels(image), run.channels, run.mean, run.std, name=image.name)
        key = (run.id, image.id)

        def progress(done: int, total: int) -> None:
            self._tiles[key] = (done, total)

        job = TiledJob(
            run.model, source, tile=self.tile, device=run.device, memory_budget=self.memory_budget, progress=progress
        )
        self._tiles[key] = (0, len(job.plan))
        try:
            with atomic_dir(folder) as tmp:
                sinks = {}

                def make_sink(shape):
                    sinks["labels"] = LabelSink(shape[1:], shape[0])
                    if int(np.prod(shape)) <= PROB_MAX_BYTES:
                        sinks["prob"] = _QuantisedProbSink(tmp / "prob.npy", shape)
                    sinks["shape"] = shape
                    return Fanout(sinks["labels"], sinks.get("prob"))

                job.run(make_sink)
                labels = sinks["labels"].result
                if labels.shape != tuple(image.size):  # coarse output: each pixel takes its nearest cell
                    g = run.geometry
                    labels = to_input_grid(labels, image.size, g.stride, g.offset, None)
                np.save(tmp / "labels.npy", labels)
                del sinks["labels"], labels
                seconds = time.perf_counter() - start
                (tmp / "meta.json").write_text(
                    json.dumps({"shape": list(sinks["shape"]), "seconds": seconds, "tiles": len(job.plan)})
                )
        finally:
            self._tiles.pop(key, None)

    def scores(self, run: ServedRun, image: ServedImage) -> dict:
        """The image's four scores and per-class IU against its mask (``fcnkit.metrics``), computed once
        (seconds for 16 Mpx) and kept next to the prediction, keyed by the mask file."""
        from fcnkit.app.serve.catalog import file_key
        from fcnkit.utils.atomic import atomic_write_text

        labels = self.get(run, image).labels
        path = self.folder(run, image) / f"scores-{file_key(_mask_path(image))}.json"
        if path.is_file():
            return json.loads(path.read_text())
        result = self._scores(run, image, labels)
        atomic_write_text(path, json.dumps(result))
        return result

    def _scores(self, run: ServedRun, image: ServedImage, labels: np.ndarray) -> dict:
        from fcnkit.data.io import read_mask
        from fcnkit.metrics import confusion_matrix, scores

        k = len(run.classes)
        truth = read_mask(_mask_path(image))
        cm = torch.zeros((k, k), dtype=torch.int64)
        for y in range(0, truth.shape[0], 1024):  # bands: confusion matrices add, int64 copies stay small
            band = torch.from_numpy(np.array(labels[y : y + 1024], dtype=np.int64))
            cm += confusion_matrix(band, torch.from_numpy(truth[y : y + 1024]), k)
        s = scores(cm)
        clean = {name: (None if v != v else v) for name, v in s.items() if name != "iu"}  # NaN -> null
        clean["iu"] = [None if v != v else v for v in s["iu"]]
        return clean

    def truth(self, image: ServedImage) -> np.ndarray:
        from fcnkit.data.io import read_mask

        return read_mask(_mask_path(image)).clip(0, 255).astype(np.uint8)

    def probe(self, run: ServedRun, image: ServedImage, y: int, x: int) -> dict:
        """What the page shows under the cursor: label, probabilities, and the output cell's receptive field."""
        from fcnkit.app.serve.catalog import NotFound

        h, w = image.size
        if not (0 <= y < h and 0 <= x < w):
            raise NotFound(f"pixel (x={x}, y={y}) is outside the {w}x{h} image; probe inside it")
        pred = self.get(run, image)
        g = run.geometry
        out_hw = pred.prob.shape[1:] if pred.prob is not None else pred.labels.shape
        i, j = cell_of(g, out_hw, y, x)
        (top, bottom), (left, right) = g.window(i, j)
        label = int(pred.labels[y, x])
        probs = None if pred.prob is None else [int(v) / 255 for v in pred.prob[:, i, j]]
        return {
            "x": x,
            "y": y,
            "label": label,
            "class": run.classes[label] if label < len(run.classes) else str(label),
            "probabilities": probs,
            "cell": [i, j],
            "rf": {
                "top": top,
                "left": left,
                "bottom": bottom,
                "right": right,
                "size": list(g.size),
                "stride": list(g.stride),
                "align": list(g.align),
                "centre": [float(g.offset[0]) + i * float(g.stride[0]), float(g.offset[1]) + j * float(g.stride[1])],
            },
        }


def _mask_path(image: ServedImage) -> Path:
    if image.mask_path is None:
        from fcnkit.app.serve.catalog import NotFound

        raise NotFound(f"image {image.name} has no mask; give one with --masks DIR or upload it with the image")
    return image.mask_path
