"""Exact tiled prediction on ``dask.distributed``: one task per output chunk, any number of workers.

The output (labels, optionally logits) is a zarr array whose chunks ARE the tile cores, so every
task writes whole chunks that no other task touches, and a task's result is final once written::

    image   [hhhh[== core (0,0) ==)hhhh]            window = core + halo (from the geometry),
                  [hhhh[== core (0,1) ==)hhhh]      starts at multiples of the alignment
    output  |  chunk (0,0)  |  chunk (0,1)  | ...   chunk = core: one writer per chunk

A task reads its window lazily from the image file, predicts it exactly (staged tiling inside
the window, ``fcnkit.predict``), keeps its core and writes it; then it writes a completion
marker ``.fcnkit-done/R_C``. A re-run skips chunks with a marker; a worker killed mid-task is
retried by Dask on another worker (the chunk is simply written again). Each worker loads the
model once, in :class:`ModelPlugin` (a ``WorkerPlugin``: also on workers that join or restart).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from distributed.diagnostics.plugin import WorkerPlugin

from fcnkit.inference.tiling import Span, core_cells, origin_cell

__all__ = ["DONE", "PLUGIN", "ChunkTask", "ModelPlugin", "chunk_spans", "done_chunks", "out_chunk", "run_chunk"]

PLUGIN = "fcnkit-model"
DONE = ".fcnkit-done"


class ModelPlugin(WorkerPlugin):
    """Loads the checkpoint once per worker (``setup``); tasks find it by :data:`PLUGIN`."""

    name = PLUGIN

    def __init__(self, run_dir, device: str = "cpu", threads: int = 1):
        self.run_dir, self.device, self.threads = str(run_dir), device, threads
        self.model = self.config = None
        self.loads = 0

    def setup(self, worker=None):
        from fcnkit.checkpoint import load_checkpoint
        from fcnkit.utils.device import resolve_device

        torch.set_num_threads(self.threads)
        device = self.device
        if device in ("auto", None):  # resolved where the worker runs: its machine may have a GPU
            device = resolve_device("auto").type
        count = torch.cuda.device_count() if device == "cuda" else 0
        if count > 1:  # one GPU per worker: local workers are named 0..N-1 (others: spread by name)
            name = str(getattr(worker, "name", 0))
            device = f"cuda:{(int(name) if name.isdigit() else sum(map(ord, name))) % count}"
        self.model, self.config = load_checkpoint(self.run_dir, map_location=device)
        self.model.eval()
        self.loads += 1


def chunk_spans(length: int, chunk: int, halo: int) -> list[Span]:
    """Spans whose cores are ``[k*chunk, (k+1)*chunk)`` and windows the core plus ``halo`` (clipped)."""
    n = -(-length // chunk)
    spans = []
    for k in range(n):
        c0, c1 = k * chunk, min(length, (k + 1) * chunk)
        spans.append(Span(max(0, c0 - halo), min(length, c1 + halo), c0 if k else None, c1 if k < n - 1 else None))
    return spans


@dataclass(frozen=True)
class ChunkTask:
    """Everything a worker needs for one chunk (picklable, small)."""

    image: str
    channels: int
    mean: tuple
    std: tuple
    rows: Span
    cols: Span
    index: tuple[int, int]
    out_shape: tuple[int, int, int]  # K, H', W'
    stride: tuple
    offset: tuple
    labels: str  # zarr array path (uint8 H' x W')
    logits: str | None  # zarr array path (float32 K x H' x W') or None
    tile: int | None  # staged tiling inside the window (None: the window at once)


def _model():
    from distributed import get_worker

    return get_worker().plugins[PLUGIN].model


def run_chunk(task: ChunkTask, model=None, crash_once: str | None = None) -> tuple[int, int]:
    """Predict one chunk and write it, then its marker; returns the chunk index. ``model`` is the
    plugin's unless given (single-process runs); ``crash_once`` (tests) kills this worker process
    the first time (the file marks that it happened)."""
    import zarr

    from fcnkit.inference.predict import predict
    from fcnkit.inference.sources import open_image

    if crash_once and not os.path.exists(crash_once):
        Path(crash_once).touch()
        os._exit(1)  # a worker dying mid-task: Dask must retry the chunk elsewhere
    model = model if model is not None else _model()
    src = open_image(task.image, task.channels, list(task.mean), list(task.std))
    window = src.read((task.rows.start, task.rows.stop), (task.cols.start, task.cols.stop))
    y = predict(model, window, tile=task.tile)
    box = []
    for axis, span in enumerate((task.rows, task.cols)):
        n0, n1 = core_cells(span, task.out_shape[1 + axis], task.stride[axis], task.offset[axis])
        box.append((n0, n1, n0 - origin_cell(span, task.stride[axis])))
    (r0, r1, a), (c0, c1, b) = box
    block = y[:, a : a + r1 - r0, b : b + c1 - c0]
    zarr.open_array(task.labels, mode="r+")[r0:r1, c0:c1] = block.argmax(0).to(torch.uint8).numpy()
    if task.logits:
        zarr.open_array(task.logits, mode="r+")[:, r0:r1, c0:c1] = block.float().numpy()
    marker = Path(task.labels).parent / DONE / f"{task.index[0]}_{task.index[1]}"
    marker.parent.mkdir(exist_ok=True)
    marker.touch()
    return task.index


def done_chunks(store: Path) -> set[tuple[int, int]]:
    """Chunks with a completion marker in ``store`` (the folder holding the labels array)."""
    d = store / DONE
    if not d.is_dir():
        return set()
    pairs = (f.name.split("_") for f in d.iterdir() if f.name.count("_") == 1)
    return {(int(r), int(c)) for r, c in pairs}


def out_chunk(chunk: int, stride) -> tuple[int, int]:
    """Output chunk (cells) for an input core of ``chunk`` pixels; the stride must divide it."""
    out = []
    for j in stride:
        cells = chunk / float(j)
        if cells != int(cells):
            raise ValueError(f"chunk {chunk} is not a whole number of output cells of stride {j}")
        out.append(int(cells))
    return out[0], out[1]
