"""The run log ``RUN/metrics.csv``: its schema, the merge of Lightning's per-start logs, its readers.

One definition of the file every report, experiment and test reads::

    epoch, step                  Lightning's counters (step = optimizer steps done before the row)
    train_loss_step              the training loss of that step      (train_loss_epoch: epoch mean)
    val_loss, val_<score>        validation, once per validation run  (segmentation: val_mean_iu, ...)
    step_<counter>               per step: images, items, cells, flops, seconds  (StepLog)
    total_<counter>              the running sums of the same, so no step is lost between rows
    lr-<Optimizer>               the learning rate, when logged

A resumed run logs into ``RUN/logs/version_N/`` (one folder per start); :func:`merge_metrics` joins
them, and :func:`read_rows` is the one parser (rows of floats, sorted by step).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from fcnkit.errors import MissingFileError

__all__ = ["METRICS_CSV", "COUNTERS", "read_rows", "merge_metrics", "read_step_log", "read_epochs"]

METRICS_CSV = "metrics.csv"
#: the StepLog counters: ``step_<name>`` and ``total_<name>`` columns
COUNTERS = ("images", "items", "cells", "flops", "seconds")


def read_rows(run_or_csv: str | os.PathLike) -> list[dict[str, float]]:
    """``RUN/metrics.csv`` (or a metrics.csv path) as rows of floats, empty cells dropped, sorted by step."""
    path = Path(run_or_csv)
    path = path / METRICS_CSV if path.is_dir() else path
    if not path.is_file():
        raise MissingFileError(f"{path}: no {METRICS_CSV}; give a run folder written by fcnkit train")
    with path.open(newline="") as f:
        rows = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
    rows.sort(key=lambda r: r.get("step", math.inf))
    return rows


def read_step_log(run: str | os.PathLike) -> dict[str, list[dict[str, float]]]:
    """``RUN/metrics.csv`` as ``{"train": [...], "val": [...]}``: rows of floats sorted by step.

    ``train`` rows hold the step counters (``step_*``, ``total_*``, ``train_loss_step``); ``val``
    rows hold ``val_*`` scores and, carried over from the last train row logged at or before
    them, the ``total_*`` sums, so a validation score can be plotted against images, cells,
    FLOPs or seconds spent (their resolution is ``log_every_n_steps``; use 1 for exact sums).
    """
    train, val, totals = [], [], {}
    for r in read_rows(run):
        if "total_flops" in r:
            totals = {k: v for k, v in r.items() if k.startswith("total_")}
            train.append(r)
        if any(k.startswith("val_") for k in r):
            val.append({**totals, **{k: v for k, v in r.items() if not k.startswith(("step_", "total_", "train_"))}})
    return {"train": train, "val": val}


def read_epochs(run_or_csv: str | os.PathLike) -> dict[int, dict[str, float]]:
    """``{epoch: {column: value}}`` (the last value logged in each epoch; no epoch/step columns)."""
    epochs: dict[int, dict[str, float]] = {}
    for row in read_rows(run_or_csv):
        if "epoch" in row:
            epochs.setdefault(int(row["epoch"]), {}).update(
                {k: v for k, v in row.items() if k not in ("epoch", "step")}
            )
    return epochs


def merge_metrics(run: str | os.PathLike) -> Path | None:
    """Join ``RUN/logs/version_*/metrics.csv`` into ``RUN/metrics.csv`` (atomically).

    A resumed run logs into a new version folder; rows of an earlier version at or after the
    first step of a later one (logged after the checkpoint it resumed from) are dropped.
    """
    from fcnkit.utils.atomic import atomic_path

    run = Path(run)
    versions = sorted((run / "logs").glob(f"version_*/{METRICS_CSV}"), key=lambda p: int(p.parent.name.split("_")[-1]))
    tables = []
    for path in versions:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if rows:
            tables.append(rows)
    if not tables:
        return None
    # (epoch, step) -> one row: Lightning logs val and train epoch values apart
    merged: dict[tuple, dict] = {}
    for i, rows in enumerate(tables):
        later = [int(float(r["step"])) for t in tables[i + 1 :] for r in t[:1] if r.get("step")]
        cut = min(later) if later else None
        for r in rows:
            if cut is None or int(float(r["step"])) < cut:
                slot = merged.setdefault((r.get("epoch", ""), r["step"]), {})
                slot.update({k: v for k, v in r.items() if v not in ("", None)})
    merged_rows = list(merged.values())
    columns = sorted({k for r in merged_rows for k in r})
    columns = ["epoch", "step"] + [c for c in columns if c not in ("epoch", "step")]
    out = run / METRICS_CSV
    with atomic_path(out) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(merged_rows)
    return out
