"""Fault injection for training runs: a tiny training in a forked child, killed with SIGKILL at a
chosen moment, then resumed; used by tests/test_fault_injection.py and benchmarks/kill_resume.py.

The kill is placed deterministically by patching, inside the child only, the function that
reaches that moment (a training step, the trainer-state write, the rename of a checkpoint
folder). Children are forked (no re-import of torch/Lightning: ~1 s a run) and run on one thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
import types
from pathlib import Path

import numpy as np
import torch
from conftest import Squares
from safetensors.torch import load_file
from torch import nn

import fcnkit.app.tasks  # noqa: F401  imported here, before forking: children start warm
import fcnkit.app.train as train_mod
import fcnkit.data
import fcnkit.engine.loop  # noqa: F401
import fcnkit.engine.segmentation  # noqa: F401
from fcnkit.engine.config import TrainConfig
from fcnkit.errors import FcnkitError

# (what, which, n): kill at the n-th (1-based) occurrence of that moment
KILLS = {
    "start-up (before the first step)": ("step", None, 0),
    "first trainer.ckpt write (before its rename)": ("ckpt", "before", 1),
    "mid-epoch (after a step checkpoint)": ("step", None, 7),
    "first last/ write (before its rename)": ("rename", "last", 1),
    "last/ swap of epoch 1 (before it)": ("rename", "last", 2),
    "first best/ write (before its rename)": ("rename", "best", 1),
    "after the last/ swap, before the old copy is removed": ("rename-after", "last", 2),
    "trainer.ckpt at the end of epoch 1 (before its rename)": ("ckpt", "before", 4),
    "last/ swap of the final epoch (before it; nothing left to train)": ("rename", "last", 3),
}


class TinyDropout(nn.Module):
    """Two convs with dropout in between: the training step draws from torch's global RNG."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.2), nn.Conv2d(4, 2, 3, padding=1)
        )
        self.fcnkit_spec = {"name": "tiny-dropout", "kwargs": {}}

    def forward(self, x):
        return self.body(x)


class TinyClassifier(nn.Module):
    """Conv, dropout, global average pool: logits [B, 2] for any input size."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.2), nn.Conv2d(4, 2, 1))
        self.fcnkit_spec = {"name": "tiny-classifier", "kwargs": {}}

    def forward(self, x):
        return self.body(x).mean(dim=(2, 3))


class Bars(torch.utils.data.Dataset):
    """Classification: a horizontal (0) or vertical (1) bright bar in noise, 16x16."""

    info = types.SimpleNamespace(
        name="bars",
        task="classification",
        num_classes=2,
        in_channels=1,
        class_names=["horizontal", "vertical"],
        palette=[[0, 0, 0], [255, 0, 0]],
        mean=[0.5],
        std=[0.25],
    )

    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        self.items = []
        for i in range(n):
            image = (rng.random((16, 16)) * 60).astype(np.uint8)
            k = int(rng.integers(2, 14))
            if i % 2:
                image[:, k] = 220
            else:
                image[k] = 220
            self.items.append((image, i % 2))

    def __len__(self):
        return len(self.items)

    def raw(self, i):
        return self.items[i]

    def __getitem__(self, i):
        image, label = self.items[i]
        x = torch.from_numpy((image.astype(np.float32) / 255 - 0.5) / 0.25)[None]
        return {"image": x, "label": torch.tensor(label), "meta": {"name": str(i)}}


def config_classification(run: Path, **kw) -> dict:
    """Classification, 12 steps: 3 epochs of 4 batches of 2, each batch resized to a random size
    of ``sizes`` (drawn per epoch), flips, dropout."""
    return dict(
        dict(
            data="bars",
            task="classification",
            batch_size=2,
            epochs=3,
            out=str(run),
            augment=["flip"],
            sizes=[12, 16, 20],
            threads=1,
            checkpoint_every_n_steps=2,
            lr=0.01,
        ),
        **kw,
    )


def config(run: Path, **kw) -> dict:
    """12 steps: 3 epochs of 4 batches of 2 (loss sampling at p=0.5 doubles batch_size 1);
    augmentation (flip, scale), a random regime, dropout."""
    return dict(
        dict(
            data="squares",
            batch_size=1,
            epochs=3,
            out=str(run),
            augment=["flip", "scale"],
            threads=1,
            regime={"name": "loss-sampling", "p": 0.5},
            checkpoint_every_n_steps=2,
            lr=0.01,
        ),
        **kw,
    )


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(kill: tuple | None) -> None:
    """Patch (in this child process only) the function that reaches the kill moment."""
    train_mod._build_model = lambda cfg, info: TinyClassifier() if cfg.task == "classification" else TinyDropout()

    def load_dataset(name, split="train", **_):
        kind = Bars if name == "bars" else Squares
        return kind(8 if split == "train" else 4, 0 if split == "train" else 1)

    fcnkit.data.load_dataset = load_dataset
    if kill is None:
        return
    what, which, n = kill
    count = [0]
    if what in ("step", "pause"):
        from fcnkit.engine.module import FcnkitModule

        step = FcnkitModule.training_step

        def training_step(self, batch, batch_idx):
            if self.global_step == n and what == "step":
                _kill()
            if self.global_step == n and what == "pause":  # wait while the file ``which`` exists
                Path(f"{which}.reached").write_text("")
                while Path(which).exists():
                    time.sleep(0.02)
            return step(self, batch, batch_idx)

        FcnkitModule.training_step = training_step
    elif what == "ckpt":
        import fcnkit.engine.callbacks as callbacks

        real = callbacks.atomic_path

        @contextlib.contextmanager
        def atomic_path(path, suffix=""):
            with real(path, suffix) as tmp:
                yield tmp
                count[0] += 1
                if count[0] == n:
                    _kill()  # written, not yet renamed

        callbacks.atomic_path = atomic_path
    else:
        import fcnkit.utils.atomic as atomic

        replace, exchange = os.replace, atomic._exchange

        def counted(real, a, b):
            hit = Path(b).name == which and not Path(a).name.startswith(f".{which}.old")
            if hit:
                count[0] += 1
            if hit and count[0] == n and what == "rename":
                _kill()
            result = real(a, b)
            if hit and count[0] == n:
                _kill()
            return result

        atomic.os.replace = lambda a, b: counted(replace, a, b)  # os is shared: only this child
        atomic._exchange = lambda a, b: counted(exchange, a, b)


def start_child(cfg: dict, kill: tuple | None = None, resume: bool | dict = False, log: Path | None = None) -> int:
    """Fork a child that trains ``cfg`` (or resumes it; ``resume`` may be a dict of settings to
    change); returns its PID (see :func:`wait_child`)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            torch.set_num_threads(1)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if log else devnull, 2)
            sys.stdout, sys.stderr = open(os.devnull, "w"), open(2, "w", closefd=False)  # not pytest's capture
            _install(kill)
            given = dict(resume if isinstance(resume, dict) else {}, resume=cfg["out"]) if resume else cfg
            train_mod.train(TrainConfig.from_dict(given), report=False)
            code = 0
        except FcnkitError as exc:  # what the CLI answers with exit 2
            print(f"error: {exc}", file=sys.stderr)
            code = 2
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    return pid


def wait_child(pid: int) -> int:
    """The child's exit status: -9 killed, 2 an FcnkitError (as the CLI answers; message in its log)."""
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def run_child(cfg: dict, kill: tuple | None = None, resume: bool | dict = False, log: Path | None = None) -> int:
    """Fork, train (or resume) ``cfg`` in the child, wait; returns its exit status."""
    return wait_child(start_child(cfg, kill, resume, log))


def state_of(run: Path) -> dict:
    """What must be bit-identical: last/ and best/ weights and steps, the optimizer state."""
    import json

    out = {}
    for which in ("last", "best"):
        out[which] = load_file(str(run / which / "model.safetensors"))
        out[which + "_step"] = json.loads((run / which / "config.json").read_text())["metrics"]["step"]
    state = torch.load(run / "trainer.ckpt", weights_only=True)
    out["optimizer"] = {
        f"{k}.{name}": v
        for k, s in state["optimizer_states"][0]["state"].items()
        for name, v in s.items()
        if torch.is_tensor(v)
    }
    out["global_step"] = state["global_step"]
    return out


def max_difference(a: dict, b: dict) -> float:
    """0.0 when bit-identical; inf when the structure differs."""
    worst = 0.0
    for key in a:
        if isinstance(a[key], dict):
            if a[key].keys() != b[key].keys():
                return float("inf")
            for name in a[key]:
                x, y = a[key][name].double(), b[key][name].double()
                worst = max(worst, float((x - y).abs().max()) if x.shape == y.shape else float("inf"))
        elif a[key] != b[key]:
            return float("inf")
    return worst


def stale_files(run: Path) -> list[str]:
    """Hidden entries other than the output marker (which says the folder is fcnkit's run)."""
    from fcnkit.utils.outputs import MARKER

    return sorted(p.name for p in run.iterdir() if p.name.startswith(".") and p.name != MARKER)
