"""A training loader that resumes mid-epoch, and the RNG state saved with the Lightning state.

Choice: every random draw of the data pipeline is a pure function of ``(seed, epoch, item)``,
and the loader's checkpointed state is just ``(epoch, batches consumed)``::

    EpochSampler       order of epoch e = randperm seeded by seed + e (DistributedSampler's rule),
                       this process's share of it under DDP
    SeededBatches      batches of that order (a BatchSampler or SizeGroupedBatchSampler, built
                       under a torch seed of (seed, e)); skips the batches a resumed run already
                       trained; gives each key its item seed (seed, e, dataset index)
    SeededItems        dataset[key] under torch.manual_seed(item seed), in a forked RNG: the
                       augmentation's and patch sampler's generators (seeded from torch's RNG)
                       draw the same for an item whatever ran before it
    ResumableLoader    a DataLoader with state_dict()/load_state_dict(): Lightning saves it in
                       trainer.ckpt ("combined_loader") and loads it before the first batch

Why not save the RNG states of the sampler and the augmentation: Lightning fetches one batch
ahead and worker processes fetch several, so at a checkpoint the generators have already drawn
for batches that were not trained yet, and workers' RNGs never come back to the main process.
Pure per-item seeds make the batches independent of prefetching, of ``num_workers`` and of
where a run was interrupted; what remains is the global torch/numpy/python RNG of the training
step (e.g. dropout), captured by :class:`RngState` (plain tensors/ints/lists: trainer.ckpt is
read with ``weights_only=True``). Regimes that draw per step seed from ``(seed, step, rank)``
(:mod:`fcnkit.training.regimes`) and need no state. Under DDP rank 0's global RNG state is
saved (every rank starts from the same seed).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sized
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

__all__ = [
    "EpochSampler",
    "SeededBatches",
    "SeededItems",
    "ResumableLoader",
    "RngState",
    "rng_state",
    "set_rng_state",
    "resumable_loader",
    "eval_sampler",
    "loader_generator",
]


def _stream(*numbers: int) -> int:
    """A 63-bit seed from a tuple of ints (independent streams per tuple)."""
    return int(np.random.SeedSequence([int(n) for n in numbers]).generate_state(1, np.uint64)[0] >> 1)


class EpochSampler(DistributedSampler):
    """The shuffled order of epoch ``e`` (seeded by ``seed + e``), this process's share under DDP.

    A ``DistributedSampler`` so that Lightning leaves it in place; with ``num_replicas=1`` it is
    a plain reproducible shuffle. Rank ``r`` gets positions ``r, r + R, ...`` of the order, so the
    ranks' ``b``-th batches together are the ``b``-th batch of a one-process run with the global
    batch (DDP equality, see tests/test_training_ddp_equality.py).
    """

    def __init__(self, dataset: Any, seed: int, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=int(seed), drop_last=False)


class SeededBatches:
    """Batches of ``batch_sampler`` (whose ``.sampler`` is an :class:`EpochSampler`) as lists of
    ``(key, item_seed)``; ``resume_at(epoch, batches)`` skips the first batches of that epoch."""

    def __init__(self, batch_sampler: Any, seed: int):
        self.batch_sampler, self.seed = batch_sampler, int(seed)
        self.sampler: EpochSampler = batch_sampler.sampler  # Lightning calls sampler.set_epoch
        self._skip: tuple[int, int] | None = None

    def resume_at(self, epoch: int, batches: int) -> None:
        if batches >= len(self):  # the epoch was complete: the next one starts from its first batch
            epoch, batches = epoch + 1, 0
        self.sampler.set_epoch(epoch)
        self._skip = (epoch, batches)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self):
        epoch = self.sampler.epoch
        skip = self._skip[1] if self._skip is not None and self._skip[0] == epoch else 0
        self._skip = None
        # batch samplers that draw (sizes) draw from torch's RNG: seed it for this epoch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_stream(self.seed, epoch))
            batches = list(self.batch_sampler)
        for batch in batches[skip:]:
            yield [(key, _stream(self.seed, epoch, key[0] if isinstance(key, tuple) else key)) for key in batch]


class SeededItems(Dataset):
    """``dataset[key]`` for a ``(key, seed)`` pair, drawn under ``torch.manual_seed(seed)`` in a
    forked RNG (the caller's RNG is left as it was)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset
        self.info = getattr(dataset, "info", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key_seed: tuple) -> Any:
        key, seed = key_seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[key]


class ResumableLoader(DataLoader):
    """A DataLoader over :class:`SeededItems` and :class:`SeededBatches` whose state is
    ``{"epoch", "batches"}``: ``batches`` is what ``consumed()`` says when the checkpoint is written
    (the optimizer steps done in this epoch; the loader itself cannot know it, as it runs ahead)."""

    def __init__(self, dataset: Dataset, batches: SeededBatches, consumed: Callable[[], int], **kwargs: Any):
        super().__init__(SeededItems(dataset), batch_sampler=batches, **kwargs)
        self._consumed = consumed

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self._batches.sampler.epoch), "batches": int(self._consumed())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._batches.resume_at(int(state["epoch"]), int(state["batches"]))

    @property
    def _batches(self) -> SeededBatches:
        # DataLoader types batch_sampler as any sampler; this loader's is the SeededBatches it was given
        return cast(SeededBatches, self.batch_sampler)


def resumable_loader(
    dataset: Dataset,
    trainer: L.Trainer | None,
    seed: int,
    batch_size: int,
    make_batches: Callable[[Any], Any] | None = None,
    **kwargs: Any,
) -> ResumableLoader:
    """The training loader of a task: ``dataset`` shuffled per epoch, this process's share under
    DDP, batched by ``make_batches(sampler)`` (default: ``BatchSampler(sampler, batch_size)``)."""
    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    sampler = EpochSampler(dataset, seed, num_replicas=world, rank=rank)
    inner = make_batches(sampler) if make_batches else BatchSampler(sampler, batch_size, drop_last=False)

    def consumed() -> int:
        if trainer is None:
            return 0
        # Lightning types batch_progress.current as _ReadyCompletedTracker; it is a _ProcessedTracker
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)  # type: ignore[attr-defined]

    return ResumableLoader(dataset, SeededBatches(inner, seed), consumed, generator=loader_generator(seed), **kwargs)


# --- global RNG state ------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """torch (CPU and initialised CUDA devices), numpy and python RNG states as plain tensors/lists."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "internal": [int(v) for v in internal], "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and torch.cuda.device_count() == len(state["cuda"]):
        torch.cuda.set_rng_state_all(state["cuda"])  # (resumed elsewhere, e.g. on CPU: nothing to restore)


class RngState(L.Callback):
    """Saves the global RNG states with the trainer state and restores them on resume."""

    def state_dict(self) -> dict[str, Any]:
        return rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            set_rng_state(state_dict)


def eval_sampler(dataset: Dataset, trainer: L.Trainer | None) -> Any:
    """The validation order: sequential, this process's share under DDP (what Lightning's own
    ``use_distributed_sampler`` would do; fcnkit turns that off, as it shards training itself).
    Give the loader ``generator=loader_generator()`` too (see there)."""
    from torch.utils.data import SequentialSampler

    if trainer is None or trainer.world_size <= 1:
        return SequentialSampler(cast(Sized, dataset))  # map-style datasets have a length
    return DistributedSampler(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False)


def loader_generator(seed: int = 0) -> torch.Generator:
    """A DataLoader's own generator: creating an iterator then draws its workers' base seed from
    it, not from torch's global RNG. Without one, a loader drew from the global RNG on each new
    iterator -- once per epoch without workers, once per run with persistent workers -- so the
    dropout of the next training step depended on ``num_workers`` (measured: 0.03 max weight
    difference between 0 and 2 workers in tests/faults.py's run)."""
    return torch.Generator().manual_seed(int(seed))
