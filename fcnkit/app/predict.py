"""The ``fcnkit predict RUN_DIR INPUT... --out DIR`` job: images in, masks/overlays/probabilities out.

Per input ``NAME.ext`` it writes, all or nothing (temporary files renamed at the end):

    DIR/NAME_mask.png       palette PNG of the labels, the input's size (NAME_mask.tif, tiled,
                            above PNG_MAX_PIXELS)
    DIR/NAME_overlay.png    the labels over the image (every f-th pixel above PNG_MAX_PIXELS)
    DIR/NAME_prob.npy       with probabilities=True: float32 [K, H', W'] class probabilities
                            at the model's output resolution

Inputs are read lazily (memory-mapped TIFFs) and normalised tile by tile with the checkpoint's
mean/std; labels of huge images live in a memory-mapped scratch file, never as logits.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from fcnkit.errors import InputError, MissingFileError
from fcnkit.inference.predict import TiledJob, eval_mode
from fcnkit.inference.sources import open_image
from fcnkit.inference.writers import PNG_MAX_PIXELS, Fanout, LabelSink, NpySink, write_labels, write_overlay
from fcnkit.utils.device import model_device

__all__ = ["predict_files", "expand_inputs", "to_input_grid"]

SCRATCH_PIXELS = 1 << 24  # labels above 16 Mpx go to a memory-mapped scratch file


def expand_inputs(inputs) -> list[Path]:
    """Files as given; folders expand to the images directly inside them (sorted)."""
    from fcnkit.data.io import IMAGE_SUFFIXES

    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise MissingFileError(
                    f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder; point at image files"
                )
            out += found
        elif not p.is_file():
            raise MissingFileError(f"{p}: input image not found; check the path")
        else:
            out.append(p)
    stems = {}
    for p in out:
        if p.stem in stems:
            raise InputError(
                f"{p}: same name as {stems[p.stem]}, their outputs would collide; predict them into different --out folders"
            )
        stems[p.stem] = p
    return out


def to_input_grid(labels: np.ndarray, size: tuple[int, int], stride, offset, scratch) -> np.ndarray:
    """Labels of a coarse/cropped output -> the input's grid: each pixel takes the nearest cell."""
    idx = []
    for n, total, j, o in zip(size, labels.shape, stride, offset):
        cell = np.rint((np.arange(n, dtype=np.float64) - float(o)) / float(j)).astype(np.int64)
        idx.append(np.clip(cell, 0, total - 1))
    if scratch is not None:
        from fcnkit.utils.outputs import preallocate

        out = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8, shape=size)
        preallocate(scratch, os.path.getsize(scratch))  # a full disk is an error here, not SIGBUS later
    else:
        out = np.empty(size, dtype=np.uint8)
    for y in range(0, size[0], 1024):
        out[y : y + 1024] = labels[idx[0][y : y + 1024]][:, idx[1]]
    return out


def predict_files(
    run_dir,
    inputs,
    out_dir,
    tile=None,
    halo="auto",
    batch_size: int = 1,
    blend: str = "crop",
    overlap: float = 0.25,
    device=None,
    memory_budget=None,
    probabilities: bool = False,
    progress=False,
    backend: str = "torch",
) -> list[dict]:
    """Predict every input image with the checkpoint in ``run_dir``; returns one dict of paths per input.

    ``tile``/``halo``/``blend``/... are those of :func:`fcnkit.predict`. An input that fails
    (unreadable, wrong channels) raises before any of its outputs appear. ``backend="onnx"`` runs
    the exported ``model.onnx`` of the checkpoint (or ``run_dir`` itself if it is an ``.onnx``
    file) with onnxruntime, reading classes/normalisation/geometry from the file.
    """
    from fcnkit.data.io import voc_palette
    from fcnkit.utils.device import resolve_device
    from fcnkit.utils.outputs import check_output, output_folder

    files = expand_inputs(inputs)
    device = resolve_device(device) if device is not None else resolve_device("cpu")  # a bad name: one line, first
    check_output(out_dir, "predictions")  # never writes into a folder of the user's files
    model, config = _load_model(run_dir, device, backend)
    if config.get("task", "segmentation") != "segmentation":
        raise InputError(
            f"{run_dir}: checkpoint is a {config.get('task')} model; fcnkit predict needs a segmentation checkpoint"
        )
    norm = config.get("normalization") or {}
    channels = int(config.get("in_channels", 3))
    mean, std = norm.get("mean", [0.0] * channels), norm.get("std", [1.0] * channels)
    palette = config.get("palette") or voc_palette(int(config.get("num_classes", 21)))
    results = []
    # a folder this job creates goes again if the first input fails: bad input leaves nothing behind
    with output_folder(out_dir, "predictions") as out_dir, eval_mode(model, model_device(model, device)):
        for path in files:
            source = open_image(path, channels, mean, std)
            job = TiledJob(model, source, tile, halo, batch_size, blend, overlap, device, memory_budget, progress)
            results.append(_one(job, source, path, out_dir, palette, probabilities))
    return results


def _load_model(run_dir, device, backend: str):
    from fcnkit import checkpoint

    if backend == "onnx":
        from fcnkit.inference.onnx_model import OnnxModel

        path = Path(run_dir)
        if path.suffix != ".onnx":
            path = checkpoint.resolve_checkpoint(run_dir) / "model.onnx"
            if not path.is_file():
                raise MissingFileError(f"{path}: not exported yet; run 'fcnkit export {run_dir} --format onnx' first")
        model = OnnxModel(path)
        return model, model.config
    if backend != "torch":
        raise InputError(f"backend {backend!r} is not known; use torch or onnx")
    checkpoint.resolve_checkpoint(run_dir)  # a missing checkpoint is reported before any model is built
    return checkpoint.load_checkpoint(run_dir, map_location=device or "cpu")


def _one(job: TiledJob, source, path: Path, out_dir: Path, palette, probabilities: bool) -> dict:
    from fcnkit.utils.atomic import atomic_path

    _, h, w = source.shape
    big = h * w > PNG_MAX_PIXELS
    names = {
        "mask": out_dir / f"{path.stem}_mask.{'tif' if big else 'png'}",
        "overlay": out_dir / f"{path.stem}_overlay.png",
    }
    if probabilities:
        names["probabilities"] = out_dir / f"{path.stem}_prob.npy"
    scratch = []
    try:
        with contextlib.ExitStack() as stack:
            tmp = {k: stack.enter_context(atomic_path(v)) for k, v in names.items()}
            if h * w > SCRATCH_PIXELS:
                scratch = [out_dir / f".{path.stem}.labels.npy", out_dir / f".{path.stem}.grid.npy"]
            sinks = {}

            def make_sink(shape):
                sinks["labels"] = LabelSink(shape[1:], shape[0], scratch[0] if scratch else None)
                if probabilities:
                    sinks["prob"] = NpySink(tmp["probabilities"], shape, softmax=True)
                return Fanout(*sinks.values())

            job.run(make_sink)
            labels = sinks["labels"].result
            if labels.shape != (h, w):  # coarse or valid-padded output: map it onto the input grid
                g = job.geometry or job.model_geometry()
                labels = to_input_grid(labels, (h, w), g.stride, g.offset, scratch[1] if scratch else None)
            write_labels(tmp["mask"], labels, palette, tiff=big)
            factor = write_overlay(tmp["overlay"], source.array, labels, palette, max_pixels=PNG_MAX_PIXELS)
            del labels
            sinks.clear()  # the memory-mapped scratch arrays are released before they are unlinked
    finally:
        for s in scratch:
            with contextlib.suppress(OSError):
                os.unlink(s)
    return {"input": path, **names, "size": (h, w), "tiles": len(job.plan), "overlay_factor": factor}
