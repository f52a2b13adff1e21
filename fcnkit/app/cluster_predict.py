"""``fcnkit predict RUN INPUT... --out DIR --cluster local[:N] | tcp://HOST:PORT``: the chunk plan on Dask.

Per input ``NAME`` it writes ``DIR/NAME_mask.ome.zarr`` (labels as an OME-Zarr pyramid; level 0
is written by the workers, chunk = tile core) and, with ``logits=True``, ``DIR/NAME_logits.zarr``
(float32 ``[K, H, W]``). Until the job is complete they live in ``DIR/.NAME.partial/`` with one
completion marker per chunk: a re-run after a crash computes only the chunks without a marker;
the finished outputs are then renamed into place (an older output of the same name is replaced).

Multi-node: start a scheduler and workers with Dask's own commands, then point ``--cluster`` at
the scheduler (each worker needs the run folder, the images and DIR at the same paths)::

    dask scheduler --port 8786                                    # on the head node
    dask worker tcp://HEAD:8786 --nworkers 1 --nthreads 1         # on each node (one per GPU:
                                                                  #  CUDA_VISIBLE_DEVICES=i ...)
    fcnkit predict RUN big.tif --out DIR --tile 1024 --cluster tcp://HEAD:8786
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

from fcnkit.errors import InputError

__all__ = ["connect", "predict_on_cluster"]


@contextlib.contextmanager
def connect(cluster: str):
    """A ``distributed.Client`` for ``local[:N]`` (a LocalCluster of N processes x 1 thread; N = the
    number of GPUs, else of CPU cores, by default) or ``tcp://HOST:PORT`` (a running scheduler)."""
    from distributed import Client, LocalCluster

    if cluster.startswith(("tcp://", "tls://", "ucx://")):
        with Client(cluster) as client:
            yield client
        return
    name, _, n = cluster.partition(":")
    if name != "local" or (n and not n.isdigit()) or n == "0":
        raise InputError(f"--cluster {cluster!r} is not understood; use local, local:N or tcp://HOST:PORT")
    import os

    import torch

    gpus = torch.cuda.device_count()
    workers = int(n) if n else (gpus or os.cpu_count() or 1)  # default: one worker per GPU, else per core
    with (
        # ":0": any free port for the scheduler's HTTP server (None still binds 8787, and warns when it is taken)
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as lc,
        Client(lc) as client,
    ):
        yield client


def _plan(model, source, image: Path, chunk: int, tile, channels, mean, std, store: Path, logits: bool):
    import zarr

    from fcnkit.geometry.stages import cached_geometry, op_graph
    from fcnkit.inference.dask_exec import ChunkTask, chunk_spans, out_chunk

    c, h, w = source.shape
    g = cached_geometry(model, c)
    align = max(g.align)
    if chunk % align:
        raise InputError(
            f"--chunk {chunk} is not a multiple of the model's alignment {align}; use {chunk // align * align or align}"
        )
    halo = max(g.halo())
    _, out = op_graph(model, c, (h, w))  # the output size, on the meta device (no compute)
    from fcnkit.geometry.analytic import select_output

    k, oh, ow = (int(v) for v in select_output(out).shape[-3:])
    out_shape = (k, oh, ow)
    oc = out_chunk(chunk, g.stride)
    labels = store / "labels"
    if not labels.exists():
        zarr.create_array(str(labels), shape=out_shape[1:], chunks=oc, dtype="uint8", zarr_format=2)
        if logits:
            zarr.create_array(
                str(store / "logits"), shape=out_shape, chunks=(out_shape[0],) + oc, dtype="float32", zarr_format=2
            )
    tasks = []
    rows, cols = chunk_spans(h, chunk, halo), chunk_spans(w, chunk, halo)
    from fcnkit.inference.tiling import core_cells

    for spans, total, j, o, n in zip((rows, cols), out_shape[1:], g.stride, g.offset, oc):
        if any(core_cells(s, total, j, o)[0] % n for s in spans):  # cores must be whole output chunks
            raise InputError(
                f"{image}: the model's output cells (offset {o}) do not line up with chunks; "
                "use fcnkit predict without --cluster"
            )
    for i, r in enumerate(rows):
        for j, col in enumerate(cols):
            tasks.append(
                ChunkTask(
                    str(image),
                    c,
                    tuple(mean),
                    tuple(std),
                    r,
                    col,
                    (i, j),
                    out_shape,
                    g.stride,
                    g.offset,
                    str(labels),
                    str(store / "logits") if logits else None,
                    tile,
                )
            )
    return tasks


def predict_on_cluster(
    run_dir,
    inputs,
    out_dir,
    cluster: str = "local",
    tile=None,
    chunk: int = 1024,
    logits: bool = False,
    device: str = "cpu",
    client=None,
    crash_once: str | None = None,
    fail_chunks=(),
) -> list[dict]:
    """Predict every input on Dask workers (module docstring); returns per input the output paths and
    how many chunks were ``computed`` and ``skipped`` (already complete). ``client``: an existing
    ``distributed.Client`` instead of ``cluster``; ``crash_once``/``fail_chunks``: test hooks."""
    from fcnkit import checkpoint
    from fcnkit.app.predict_inputs import expand_inputs, input_settings
    from fcnkit.inference.dask_exec import ModelPlugin, done_chunks, run_chunk
    from fcnkit.inference.sources import open_image
    from fcnkit.utils.outputs import check_output, prepare_output

    files = expand_inputs(inputs)
    if out_dir is None:
        from fcnkit.app.predict import default_out

        out_dir = default_out(run_dir)
    check_output(out_dir, "predictions")  # never writes into a folder of the user's files
    checkpoint.resolve_checkpoint(run_dir)  # a missing checkpoint is one line, before any cluster starts
    model, config = checkpoint.load_checkpoint(run_dir, map_location="cpu")
    tile = None if tile == "auto" else tile  # None: the plan picks the tile
    channels, mean, std, palette = input_settings(config)
    out_dir = prepare_output(out_dir, "predictions")  # created and marked as fcnkit's
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(connect(cluster))
        client.register_plugin(ModelPlugin(checkpoint.resolve_checkpoint(run_dir), device))
        results = []
        for path in files:
            store = out_dir / f".{path.stem}.partial"
            store.mkdir(exist_ok=True)
            source = open_image(path, channels, mean, std)
            tasks = _plan(model, source, path, chunk, tile, channels, mean, std, store, logits)
            done = done_chunks(store)
            todo = [t for t in tasks if t.index not in done]
            futures = [
                client.submit(
                    run_chunk, t, crash_once=crash_once, key=f"fcnkit-{path.stem}-{t.index[0]}-{t.index[1]}", pure=False
                )
                for t in todo
                if t.index not in fail_chunks
            ]
            client.gather(futures)  # a task that fails for good raises here; finished chunks keep their markers
            if len(futures) < len(todo):
                raise RuntimeError(f"{path}: chunks {sorted(fail_chunks)} were not run (test hook)")
            results.append(
                _finish(store, out_dir, path, palette, logits)
                | {"computed": len(todo), "skipped": len(tasks) - len(todo), "chunks": len(tasks)}
            )
    return results


def _finish(store: Path, out_dir: Path, path: Path, palette, logits: bool) -> dict:
    """Pyramid levels + metadata, then rename the finished outputs into place."""
    import zarr

    from fcnkit.inference.dask_exec import DONE
    from fcnkit.inference.geotiff import add_georeference, geo_tags
    from fcnkit.inference.zarr_io import finish_label_pyramid

    mask = store / "mask"
    if mask.exists():
        shutil.rmtree(mask)
    root = zarr.open_group(str(mask), mode="w", zarr_format=2)
    (store / "labels").rename(mask / "0")
    level0 = root["0"]
    assert isinstance(level0, zarr.Array)  # the labels array moved in just above
    finish_label_pyramid(root, palette, chunk=level0.chunks[0], name=f"{path.stem}_mask")
    georeferenced = add_georeference(root, geo_tags(path))  # a GeoTIFF input: its place on the Earth
    target = out_dir / f"{path.stem}_mask.ome.zarr"
    out: dict[str, Any] = {"input": path, "mask": target, "georeferenced": georeferenced}
    moves = [(mask, target)]
    if logits:
        out["logits"] = out_dir / f"{path.stem}_logits.zarr"
        moves.append((store / "logits", out["logits"]))
    for src, dst in moves:
        if dst.exists():
            shutil.rmtree(dst)
        src.rename(dst)
    shutil.rmtree(store / DONE, ignore_errors=True)
    store.rmdir()
    return out
