"""The ``fcnkit predict RUN_DIR INPUT... [--out DIR]`` job: images in, masks/overlays/probabilities out.

Inputs are files, folders (``recursive``) or glob patterns; each image's intensity is checked
against the training data's and its size optionally changed (:mod:`fcnkit.app.predict_inputs`).
``out_dir`` defaults to ``RUN/predictions``. One progress bar runs across the files (tiles of the
current file in its postfix), with an ETA.

Per input ``NAME.ext`` it writes, all or nothing (temporary files renamed at the end):

    DIR/NAME_mask.png       palette PNG of the labels, the input's size (NAME_mask.tif, tiled,
                            above PNG_MAX_PIXELS, and for a GeoTIFF input, with its georeference
                            tags: fcnkit.inference.geotiff)
    DIR/NAME_overlay.png    the labels over the image (every f-th pixel above PNG_MAX_PIXELS)
    DIR/NAME_prob.npy       with probabilities=True: float32 [K, H', W'] class probabilities
                            at the model's output resolution

Inputs are read lazily (memory-mapped TIFFs) and normalised tile by tile with the checkpoint's
mean/std; labels of huge images live in a memory-mapped scratch file, never as logits.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fcnkit.app.predict_inputs import expand_inputs
from fcnkit.errors import InputError, MissingFileError
from fcnkit.inference.predict import TiledJob, eval_mode, staged_or_single
from fcnkit.inference.sources import open_image
from fcnkit.inference.writers import PNG_MAX_PIXELS, Fanout, LabelSink, NpySink, write_labels, write_overlay
from fcnkit.utils.device import model_device

__all__ = ["predict_files", "expand_inputs", "default_out", "to_input_grid"]

SCRATCH_PIXELS = 1 << 24  # labels above 16 Mpx go to a memory-mapped scratch file


def to_input_grid(labels: np.ndarray, size: tuple[int, int], stride, offset, scratch) -> np.ndarray:
    """Labels of a coarse/cropped output -> the input's grid: each pixel takes the nearest cell."""
    idx = []
    for n, total, j, o in zip(size, labels.shape, stride, offset):
        cell = np.rint((np.arange(n, dtype=np.float64) - float(o)) / float(j)).astype(np.int64)
        idx.append(np.clip(cell, 0, total - 1))
    out: np.ndarray  # a memory-mapped scratch file or an array in memory
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
    out_dir=None,
    tile=None,
    halo="auto",
    batch_size: int = 1,
    blend: str = "crop",
    overlap: float = 0.25,
    device=None,
    memory_budget=None,
    probabilities: bool = False,
    progress=False,
    recursive: bool = False,
    intensity: str = "check",
    force: bool = False,
    scale: float | None = None,
    resize=None,
    warn=None,
    zarr: bool = False,
    backend: str = "torch",
) -> list[dict]:
    """Predict every input image with the checkpoint in ``run_dir``; returns one dict of paths per input.

    ``tile``/``halo``/``blend``/... are those of :func:`fcnkit.predict` (exact tiling is staged).
    An input that fails (unreadable, wrong channels, intensity far from the training data's) raises
    before any of its outputs appear. ``out_dir``: default :func:`default_out`. ``intensity``:
    ``check`` (refuse a far range unless ``force``), ``match`` (map the range onto the training's)
    or ``off``; ``scale``/``resize``: see :func:`fcnkit.app.predict_inputs.target_size`; ``warn``:
    called with each warning line (default: printed to stderr). ``progress``: True for one tqdm bar
    across files. ``zarr=True`` also writes ``NAME_mask.ome.zarr`` (an OME-Zarr label pyramid).
    ``backend="onnx"`` runs the exported ``model.onnx`` of the checkpoint (or ``run_dir`` itself if
    it is an ``.onnx`` file) with onnxruntime, reading classes/normalisation/geometry from the file
    (single-level tiling: an exported graph cannot be replayed stage by stage).
    """
    from fcnkit.app.predict_inputs import (
        MatchedSource,
        input_settings,
        intensity_check,
        resized_source,
        target_size,
    )
    from fcnkit.utils.device import resolve_device
    from fcnkit.utils.outputs import check_output, output_folder

    files = expand_inputs(inputs, recursive=recursive)
    if intensity not in ("check", "match", "off"):
        raise InputError(f"--intensity {intensity}: use check, match or off")
    device = resolve_device(device) if device is not None else resolve_device("cpu")  # a bad name: one line, first
    out_dir = Path(out_dir) if out_dir is not None else default_out(run_dir)
    check_output(out_dir, "predictions")  # never writes into a folder of the user's files
    model, config = _load_model(run_dir, device, backend)
    if config.get("task", "segmentation") != "segmentation":
        raise InputError(
            f"{run_dir}: checkpoint is a {config.get('task')} model; fcnkit predict needs a segmentation checkpoint"
        )
    channels, mean, std, palette = input_settings(config)
    trained = config.get("input")
    warn = warn or (lambda line: print(f"warning: {line}", file=sys.stderr, flush=True))
    results = []
    bar = _bar(len(files)) if progress is True else None
    # a folder this job creates goes again if the first input fails: bad input leaves nothing behind
    with output_folder(out_dir, "predictions") as out_dir, eval_mode(model, model_device(model, device)):
        for path in files:
            source: Any = open_image(path, channels, mean, std)
            affine, warning = intensity_check(str(path), source.array, trained, intensity, force)
            if warning:
                bar.write(f"warning: {warning}", file=sys.stderr) if bar is not None else warn(warning)
            if affine is not None:
                source = MatchedSource(source.array, channels, mean, std, affine)
            size = target_size(source.shape[1:], scale, resize, trained)
            model_input = resized_source(source, size) if size is not None else source
            tiles = _tile_progress(bar, path) if bar is not None else progress
            job = TiledJob(model, model_input, tile, halo, batch_size, blend, overlap, device, memory_budget, tiles)
            job = staged_or_single(job, True, halo)  # an exported (onnx) graph runs single-level
            results.append(_one(job, source, path, out_dir, palette, probabilities, model_input.shape[1:]))
            if zarr:
                _write_zarr_mask(results[-1], palette)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return results


def default_out(run_dir) -> Path:
    """``RUN/predictions`` for a run folder; next to a checkpoint folder otherwise (never inside it)."""
    from fcnkit.checkpoint import resolve_checkpoint

    run = Path(run_dir)
    if run.suffix == ".onnx":  # an exported model file: next to it
        return run.parent / "predictions"
    return (run.parent if resolve_checkpoint(run) == run else run) / "predictions"


def _bar(total: int):
    from tqdm.auto import tqdm

    # disable=None: only on a terminal; a log file or pipe gets no bar (and a bad input's one line
    # stays the only line)
    return tqdm(total=total, unit="image", desc="predict", file=sys.stderr, dynamic_ncols=True, disable=None)


def _tile_progress(bar, path: Path):
    def show(done: int, total: int) -> None:
        bar.set_postfix_str(f"{path.name}: tiles {done}/{total}", refresh=True)

    return show


def _nearest_resize(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Labels on the model's (resized) grid -> ``size``, centre-aligned nearest neighbour."""
    rows = np.minimum(((np.arange(size[0]) + 0.5) * labels.shape[0] / size[0]).astype(np.int64), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * labels.shape[1] / size[1]).astype(np.int64), labels.shape[1] - 1)
    return labels[rows][:, cols]


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


def _one(job: TiledJob, source, path: Path, out_dir: Path, palette, probabilities: bool, model_size) -> dict:
    from fcnkit.inference.geotiff import geo_tags
    from fcnkit.utils.atomic import atomic_path

    _, h, w = source.shape
    geo = geo_tags(path)  # a GeoTIFF's georeference goes onto its mask, so the mask is a TIFF too
    big = h * w > PNG_MAX_PIXELS or geo is not None
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
            mh, mw = (int(v) for v in model_size)
            if labels.shape != (mh, mw):  # coarse or valid-padded output: map it onto the model input's grid
                g = job.geometry or job.model_geometry()
                labels = to_input_grid(labels, (mh, mw), g.stride, g.offset, scratch[1] if scratch else None)
            if (mh, mw) != (h, w):  # --scale/--resize: back to the input's size
                labels = _nearest_resize(labels, (h, w))
            write_labels(tmp["mask"], labels, palette, tiff=big, extratags=geo)
            factor = write_overlay(tmp["overlay"], source.array, labels, palette, max_pixels=PNG_MAX_PIXELS)
            del labels
            sinks.clear()  # the memory-mapped scratch arrays are released before they are unlinked
    finally:
        for s in scratch:
            with contextlib.suppress(OSError):
                os.unlink(s)
    return {
        "input": path,
        **names,
        "size": (h, w),
        "tiles": len(job.plan),
        "overlay_factor": factor,
        "georeferenced": geo is not None,
    }


def _write_zarr_mask(result: dict, palette) -> None:
    """``NAME_mask.ome.zarr`` next to ``NAME_mask.png|tif``, from that label image (atomic folder)."""
    from PIL import Image

    from fcnkit.inference.geotiff import add_georeference, geo_tags
    from fcnkit.inference.zarr_io import open_lazy, write_label_pyramid
    from fcnkit.utils.atomic import atomic_dir

    mask = Path(result["mask"])
    target = mask.with_name(mask.stem + ".ome.zarr")
    labels = open_lazy(mask) if mask.suffix == ".tif" else None  # the tiled TIFF, chunk by chunk
    if labels is None:
        with Image.open(mask) as img:
            labels = np.asarray(img)  # palette indices
    with atomic_dir(target) as tmp:
        write_label_pyramid(tmp, labels, palette, name=mask.stem)
        if result.get("georeferenced"):
            add_georeference(tmp, geo_tags(mask))  # the mask TIFF carries the input's tags
    result["zarr"] = target
