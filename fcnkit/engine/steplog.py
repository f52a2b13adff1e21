"""Per-step accounting of a training run, so regimes compare at matched compute (Lightning).

:class:`StepLog` (a Lightning callback, added by :func:`fcnkit.app.train.train`) logs into
``metrics.csv``, every ``log_every_n_steps`` steps (the ``total_*`` columns are running sums, so
no step is lost between logged rows)::

    step_images   source images in the step's batch (patchwise: the images its crops came from)
    step_items    forward-pass items (= images; patchwise: crops)
    step_cells    loss cells with a non-zero weight (labelled and kept by the regime)
    step_flops    forward FLOPs of the batch (fcnkit.training.flops, counted once per input size)
    step_seconds  wall time of the step: forward, backward and optimizer (data loading excluded)
    total_images, total_items, total_cells, total_flops, total_seconds   running sums

Under DDP every process logs its own counts (multiply by the number of processes). The sums are
callback state, saved in ``trainer.ckpt``, so a resumed run keeps counting.
:func:`fcnkit.engine.runlog.read_step_log` reads them back.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

from fcnkit.constants import IGNORE_INDEX
from fcnkit.engine.runlog import COUNTERS
from fcnkit.training.flops import batch_flops

__all__ = ["StepLog"]


class StepLog(L.Callback):
    """Logs ``step_<counter>`` and ``total_<counter>`` for every training step (see module docstring).

    The module's ``training_step`` may return ``{"loss": ..., "cells": n}``; without ``cells``
    the labelled cells of the batch are counted.
    """

    def __init__(self):
        super().__init__()
        self.totals = {name: 0 for name in COUNTERS}
        self.totals["seconds"] = 0.0
        self._start: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        _sync(batch["image"])
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _sync(batch["image"])
        seconds = time.perf_counter() - (self._start if self._start is not None else time.perf_counter())
        images = batch["image"]
        cells = outputs.get("cells") if isinstance(outputs, dict) else None
        if cells is None:
            cells = (batch["mask"] != IGNORE_INDEX).sum()
        step = {
            "images": int(batch.get("num_images", len(images))),
            "items": int(len(images)),
            "cells": int(cells),
            "flops": batch_flops(pl_module.model, images),
            "seconds": seconds,
        }
        for name, value in step.items():
            self.totals[name] += value
        # only on the steps Lightning writes (its own test, read before it increments the step):
        # ten log() calls per step cost ~7 ms, 5% of a demo step; the totals keep every step
        if not (getattr(trainer._logger_connector, "should_update_logs", True) or trainer.fast_dev_run):
            return
        values = {f"step_{k}": float(v) for k, v in step.items()}
        values.update({f"total_{k}": float(v) for k, v in self.totals.items()})
        pl_module.log_dict(values, on_step=True, on_epoch=False, batch_size=len(images))

    def state_dict(self) -> dict[str, Any]:
        return {"totals": dict(self.totals)}  # plain numbers: the trainer checkpoint loads weights_only

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.totals.update(state_dict.get("totals", {}))


def _sync(tensor: torch.Tensor) -> None:
    # CUDA runs asynchronously: without this the time would be that of launching the kernels
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)
