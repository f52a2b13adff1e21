"""Checkpointing for Lightning runs: fcnkit checkpoints (best/, last/) and atomic trainer state.

Two kinds of files, two jobs::

    RUN/best/, RUN/last/   fcnkit checkpoints (model.safetensors + config.json): what predict,
                           evaluate and users load; no pickle. Written on rank 0 only.
    RUN/trainer.ckpt       Lightning's own checkpoint (loops, optimizer, callback states) for
                           --resume; written through AtomicCheckpointIO, read with weights_only=True.

Both are written after each validation epoch (trainer.ckpt first, see FcnkitCheckpoint), and
``last`` again when training ends between validations (max_steps); trainer.ckpt also every N
steps. Weights are checked to be finite before every write, so a run that diverges keeps its
last good checkpoints.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from fcnkit.checkpoint import save_checkpoint
from fcnkit.utils.atomic import atomic_path
from fcnkit.utils.jsonsafe import json_safe

__all__ = ["FcnkitCheckpoint", "AtomicCheckpointIO", "NonFiniteWeightsError", "TRAINER_CKPT", "load_trainer_state"]

TRAINER_CKPT = "trainer.ckpt"


class NonFiniteWeightsError(RuntimeError):
    """The weights became NaN/inf (turned into an InputError by ``train``)."""

    def __init__(self, step: int):
        super().__init__(f"non-finite weights after step {step}")
        self.step = step


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, but the file is written to a temp sibling and renamed, and loading
    always uses ``torch.load(weights_only=True)``.

    Lightning 2.6.6 passes ``weights_only=None`` down to ``torch.load`` unless the caller of
    ``Trainer.fit`` sets it; torch then applies its own default, which the environment variable
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` can turn off. Here it is ``True`` whatever the caller says.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        # serialized in memory first: torch.save's C++ writer reports a full disk as a RuntimeError
        # ("iostream error"); a plain write raises OSError(ENOSPC), which becomes one line naming the run
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getbuffer())

    def load_checkpoint(
        self, path, map_location: Callable | None = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return load_trainer_state(path, map_location, lightning=False)


class FcnkitCheckpoint(L.Callback):
    """Write ``RUN/last`` after every validation epoch and ``RUN/best`` when the ``monitor`` score
    improves (segmentation: mean IU; classification: accuracy).

    ``base_config`` is the checkpoint config.json without ``metrics`` (model spec, task,
    classes, palette, normalization, train); ``metrics`` gets the validation scores of that
    epoch plus ``epoch`` and ``step``. The best score is part of the trainer state, so a resumed
    run keeps comparing against it.

    Order, so that a kill at any moment leaves a resumable run: ``trainer.ckpt`` first (it
    records which ``last``/``best`` belong to it), then ``last/``, then ``best/``. A resumed run
    whose ``last``/``best`` were not written yet (killed in between) writes them from the
    restored weights before its first step (:meth:`on_train_start`). With ``every_n_steps``
    ``trainer.ckpt`` is also written every N optimizer steps inside an epoch, so a kill loses
    little. While the loss guard suspects divergence (:class:`fcnkit.engine.module.LossGuard`)
    nothing is written: ``last/`` keeps the last good weights.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        base_config: dict[str, Any],
        monitor: str = "mean_iu",
        every_n_steps: int | None = None,
    ):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.base_config = base_config
        self.monitor = monitor
        self.every_n_steps = every_n_steps
        self.best_score = -math.inf
        self.best_epoch: int | None = None
        self._last_saved_step = -1
        self._last_metrics: dict | None = None
        # the metrics (with their "step") that RUN/last and RUN/best hold as of the saved state
        self._written: dict[str, dict | None] = {"last": None, "best": None}

    # --- Lightning hooks ---------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a resumed run killed between trainer.ckpt and last/ (or best/): write them now, from
        # the weights trainer.ckpt restored (those of the step they record)
        if not trainer.is_global_zero:
            return
        for which, metrics in self._written.items():
            if (
                metrics is not None
                and metrics.get("step") == trainer.global_step
                and _saved_step(self.run_dir / which) != metrics["step"]
            ):
                self._save(pl_module, which, metrics)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx + 1 >= trainer.num_training_batches or _suspect(pl_module):
            return  # the epoch's own checkpoint follows (validation)
        if 0 < trainer.max_steps <= trainer.global_step:
            # max_steps stops inside the epoch: save here, where the state is a mid-epoch one
            # (Lightning's state at on_train_end marks the epoch complete, so a resume with more
            # steps would skip the rest of it)
            self._save_last_between_validations(trainer, pl_module)
            return
        n = self.every_n_steps
        if n and trainer.global_step % n == 0:
            trainer.save_checkpoint(self.run_dir / TRAINER_CKPT, weights_only=False)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or getattr(pl_module, "last_scores", None) is None or _suspect(pl_module):
            return
        self._check_finite(trainer, pl_module)
        scores = cast(dict[str, Any], pl_module.last_scores)  # FcnkitModule's; nn.Module attributes are untyped
        metrics = dict(json_safe(scores), epoch=int(trainer.current_epoch), step=int(trainer.global_step))
        self._last_metrics = metrics
        score = scores[self.monitor]
        improved = not math.isnan(score) and score > self.best_score
        if improved:
            self.best_score, self.best_epoch = float(score), int(trainer.current_epoch)
            self._written["best"] = metrics
        self._written["last"] = metrics
        self._last_saved_step = trainer.global_step  # before saving: it is part of the saved state
        # full state (optimizer, loops) for --resume; collective: every rank calls it
        trainer.save_checkpoint(self.run_dir / TRAINER_CKPT, weights_only=False)
        if trainer.is_global_zero:
            self._save(pl_module, "last", metrics)
            if improved:
                self._save(pl_module, "best", metrics)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # training stopped between validations (otherwise than by max_steps): keep the newest weights too
        if trainer.global_step == self._last_saved_step or _suspect(pl_module):
            return
        self._save_last_between_validations(trainer, pl_module)

    def _save_last_between_validations(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_finite(trainer, pl_module)
        metrics = dict(self._last_metrics or {}, step=int(trainer.global_step), epoch=int(trainer.current_epoch))
        metrics["validated_at_step"] = (self._last_metrics or {}).get("step")
        self._written["last"] = metrics
        self._last_saved_step = trainer.global_step  # before saving: it is part of the saved state
        trainer.save_checkpoint(self.run_dir / TRAINER_CKPT, weights_only=False)
        if trainer.is_global_zero:
            self._save(pl_module, "last", metrics)

    def state_dict(self) -> dict[str, Any]:
        # plain types only: the trainer checkpoint is read with weights_only=True. The trainer
        # checkpoint is written at the step it records, so a resumed run that trains no further
        # step does not rewrite last/ (and keeps its scores).
        return {
            "best_score": float(self.best_score),
            "best_epoch": self.best_epoch,
            "last_saved_step": int(self._last_saved_step if self._last_saved_step >= 0 else -1),
            "last_metrics": self._last_metrics,
            "written": dict(self._written),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = float(state_dict.get("best_score", state_dict.get("best_mean_iu", -math.inf)))
        self.best_epoch = state_dict.get("best_epoch")
        self._last_saved_step = int(state_dict.get("last_saved_step", -1))
        self._last_metrics = state_dict.get("last_metrics")
        self._written = dict(state_dict.get("written") or {"last": None, "best": None})

    # --- helpers -----------------------------------------------------------------------------
    def _check_finite(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for p in _model(pl_module).parameters():
            if not torch.isfinite(p).all():
                raise NonFiniteWeightsError(int(trainer.global_step))

    def _save(self, pl_module: L.LightningModule, which: str, metrics: dict) -> None:
        config = dict(self.base_config, metrics=metrics)
        save_checkpoint(self.run_dir / which, _model(pl_module), config)


def _model(pl_module: L.LightningModule) -> torch.nn.Module:
    # the network a task module trains (FcnkitModule.model); nn.Module attributes are untyped
    return cast(torch.nn.Module, pl_module.model)


def _suspect(pl_module: L.LightningModule) -> bool:
    return bool(getattr(pl_module, "loss_suspect", False))


def _saved_step(folder: Path) -> int | None:
    import json

    try:
        return json.loads((folder / "config.json").read_text())["metrics"]["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_trainer_state(path, map_location: Any = "cpu", lightning: bool = True) -> Any:
    """``torch.load(path, weights_only=True)`` (nothing is unpickled); a truncated, tampered or foreign
    file is one :class:`~fcnkit.errors.InputError` naming it, not a traceback. ``lightning``: it must
    also be a Lightning checkpoint (a dict with ``state_dict``)."""
    from fcnkit.errors import InputError

    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a foreign file
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise  # the disk's answer (permission, ...) is reported as such
    except Exception as exc:  # UnpicklingError (refused), RuntimeError/EOFError (truncated zip), ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:140]
        raise InputError(
            f"{path}: cannot read the trainer state ({type(exc).__name__}: {first}); it is truncated or "
            "not written by fcnkit (it was not unpickled); restore it, or start over with --overwrite"
        ) from None
    if lightning and (not isinstance(state, dict) or "state_dict" not in state):
        raise InputError(
            f"{path}: not a Lightning trainer state (no 'state_dict'); restore it, or start over with --overwrite"
        )
    return state
