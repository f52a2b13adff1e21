"""Resume with changed settings, divergence beyond NaN, and the run lock, on a tiny in-test
dataset and model (train() runs the real Lightning loop on CPU)."""

import json
import math
import os
import signal

import pytest
import torch
from torch import nn

import fcnkit.app.train as run_mod
from fcnkit.engine.config import TrainConfig, load_config
from fcnkit.engine.module import LossGuard
from fcnkit.engine.segmentation import SegmentationModule
from fcnkit.errors import InputError
from fcnkit.utils.lock import LOCK_FILE, RunLock, RunLockedError

pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(nn.Module):
    """Two convs; after ``explode_after`` training forwards the output is scaled by 1e4 (a loss
    far above its median, but finite)."""

    def __init__(self, explode_after=None):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
        self.fcnkit_spec = {"name": "tiny", "kwargs": {}}
        self.explode_after, self.calls = explode_after, 0

    def forward(self, x):
        out = self.body(x)
        if self.training:
            self.calls += 1
            if self.explode_after is not None and self.calls > self.explode_after:
                out = out * 1e4
        return out


@pytest.fixture
def tiny(monkeypatch, squares_data):
    squares_data(train=8, val=4)

    def use_model(**kw):
        monkeypatch.setattr(run_mod, "_build_model", lambda cfg, info: Tiny(**kw))

    use_model()
    return use_model


@pytest.fixture
def lrs(monkeypatch):
    """The optimizer's lr at the start of every training step of the runs in the test."""
    seen = []

    def on_train_batch_start(self, batch, batch_idx):
        seen.append((int(self.global_step), self.optimizers().param_groups[0]["lr"]))

    monkeypatch.setattr(SegmentationModule, "on_train_batch_start", on_train_batch_start, raising=False)
    return seen


def _cfg(tmp_path, **kw):
    return TrainConfig(data="squares", batch_size=4, out=str(tmp_path / "run"), **kw)


def _group(run):
    return torch.load(run / "trainer.ckpt", weights_only=True)["optimizer_states"][0]["param_groups"][0]


def test_resume_applies_a_new_lr_and_momentum(tmp_path, tiny, lrs):
    run = run_mod.train(_cfg(tmp_path, epochs=1, optimizer="sgd", lr=0.01), report=False)
    run_mod.train(TrainConfig(resume=str(run), epochs=2, lr=0.001, momentum=0.5), report=False)
    assert lrs == [(0, 0.01), (1, 0.01), (2, 0.001), (3, 0.001)]
    assert (_group(run)["lr"], _group(run)["momentum"]) == (0.001, 0.5)
    saved = load_config(run / "config.yaml")
    assert (saved.lr, saved.epochs, saved.momentum) == (0.001, 2, 0.5)


def test_a_resume_applies_a_flag_given_at_its_default_value(tmp_path, tiny):
    # --epochs 10 is the default of epochs, but given on the command line it is meant
    run = run_mod.train(_cfg(tmp_path, epochs=1), report=False)
    run_mod.train(load_config(overrides={"resume": str(run), "epochs": 10, "max_steps": 4}), report=False)
    assert torch.load(run / "trainer.ckpt", weights_only=True)["global_step"] == 4  # not stopped at epoch 1
    assert load_config(run / "config.yaml").epochs == 10


def test_resume_with_more_epochs_follows_the_cosine_of_the_new_length(tmp_path, tiny, lrs):
    # 2 batches an epoch: 4 steps, then resumed to 8; lr(t) = lr0 (1 + cos(pi t / total)) / 2
    run = run_mod.train(_cfg(tmp_path, epochs=2, lr=0.01, lr_schedule="cosine"), report=False)
    run_mod.train(TrainConfig(resume=str(run), epochs=4), report=False)
    first, resumed = lrs[:4], lrs[4:]
    assert [s for s, _ in resumed] == [4, 5, 6, 7]
    for step, lr in first:
        assert lr == pytest.approx(0.01 * (1 + math.cos(math.pi * step / 4)) / 2, abs=1e-12)
    for step, lr in resumed:  # never climbing back (the periodic cosine past its end did)
        assert lr == pytest.approx(0.01 * (1 + math.cos(math.pi * step / 8)) / 2, abs=1e-12)
    assert _group(run)["lr"] == pytest.approx(0.0, abs=1e-12)  # the end of the new schedule


def test_a_run_with_the_former_cosine_schedule_state_resumes(tmp_path, tiny, lrs):
    run = run_mod.train(_cfg(tmp_path, epochs=2, lr=0.01, lr_schedule="cosine"), report=False)
    state = torch.load(run / "trainer.ckpt", weights_only=True)
    schedule = state["lr_schedulers"][0]
    del schedule["lr_lambdas"]
    schedule.update(T_max=4, eta_min=0.0)  # what CosineAnnealingLR saved
    torch.save(state, run / "trainer.ckpt")
    run_mod.train(TrainConfig(resume=str(run), epochs=3), report=False)
    assert lrs[-1] == (5, pytest.approx(0.01 * (1 + math.cos(math.pi * 5 / 6)) / 2, abs=1e-12))


@pytest.mark.parametrize(
    "change",
    [
        {"optimizer": "sgd"},
        {"lr_schedule": "cosine"},
        {"batch_size": 2},
        {"seed": 3},
        {"model": "fcn8s"},
        {"augment": True},
    ],
)
def test_settings_the_state_depends_on_are_refused_before_anything_is_written(tmp_path, tiny, change):
    run = run_mod.train(_cfg(tmp_path, epochs=1), report=False)
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in run.iterdir()}
    key = next(iter(change))
    with pytest.raises(InputError, match=f"cannot change {key} of a run") as err:
        run_mod.train(TrainConfig(resume=str(run), epochs=2, **change), report=False)
    assert "\n" not in str(err.value)
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in run.iterdir()} == before


class _Boom(Exception):
    pass


def test_config_yaml_is_rewritten_only_once_the_resume_started(tmp_path, tiny, monkeypatch):
    from fcnkit.engine.callbacks import FcnkitCheckpoint

    run = run_mod.train(_cfg(tmp_path, epochs=1), report=False)
    before = (run / "config.yaml").read_bytes()

    real, calls = FcnkitCheckpoint.load_state_dict, []

    def fail_once(self, state):
        calls.append(1)
        if len(calls) == 1:
            raise _Boom  # the resume fails while restoring the trainer state
        real(self, state)

    monkeypatch.setattr(FcnkitCheckpoint, "load_state_dict", fail_once)
    with pytest.raises(_Boom):
        run_mod.train(TrainConfig(resume=str(run), epochs=2, lr=0.5), report=False)
    assert (run / "config.yaml").read_bytes() == before
    run_mod.train(TrainConfig(resume=str(run), epochs=2, lr=0.5), report=False)
    assert load_config(run / "config.yaml").lr == 0.5


def test_divergence_beyond_nan_stops_and_keeps_the_last_good_weights(tmp_path, tiny):
    tiny(explode_after=4)  # steps 0-3 fine (epochs 0 and 1), then a loss ~1e4 x higher, finite
    cfg = _cfg(tmp_path, epochs=10, divergence_patience=3)
    with pytest.raises(
        InputError,
        match=r"training diverged: loss .* at step 6 stayed above 100x its running "
        r"median .* for 3 steps .*last holds the last good weights",
    ) as err:
        run_mod.train(cfg, report=False)
    assert "\n" not in str(err.value)
    last = json.loads((tmp_path / "run" / "last" / "config.json").read_text())["metrics"]
    assert last["step"] == 4  # epoch 2 validated while the loss was suspect: not written


def test_loss_guard_rule():
    guard = LossGuard(factor=100, patience=3)
    assert not any(guard.update(v) for v in [1.0, 0.8, 0.5, 0.4, 0.3])
    assert not guard.update(0.05) and not guard.suspect  # falling is fine
    assert [guard.update(v) for v in (500.0, 600.0)] == [False, False] and guard.suspect
    assert not guard.update(0.4) and not guard.suspect  # a streak that ends joins the window
    assert [guard.update(v) for v in (1e6, 1e7, 1e8)] == [False, False, True]
    restored = LossGuard(factor=100, patience=3)
    restored.load_state_dict(guard.state_dict())
    assert (restored.accepted, restored.streak) == (guard.accepted, guard.streak)


def test_a_stale_lock_of_a_dead_process_does_not_block(tmp_path):
    run = tmp_path / "run"
    pid = os.fork()
    if pid == 0:  # holds the lock, then dies without releasing it
        RunLock(run).acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    assert (run / LOCK_FILE).read_text().strip() == str(pid)  # left behind, with the dead PID
    with RunLock(run):
        assert (run / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(RunLockedError, match=f"locked by process {os.getpid()}"):
            RunLock(run).acquire()  # a second holder is refused (another open file description)
    assert not (run / LOCK_FILE).exists()


def test_lock_is_taken_and_released_by_train(tmp_path, tiny, monkeypatch):
    seen = []

    def on_train_batch_start(self, batch, batch_idx):
        seen.append((tmp_path / "run" / LOCK_FILE).read_text().strip())

    monkeypatch.setattr(SegmentationModule, "on_train_batch_start", on_train_batch_start, raising=False)
    run_mod.train(_cfg(tmp_path, epochs=1), report=False)
    assert seen and set(seen) == {str(os.getpid())}
    assert not (tmp_path / "run" / LOCK_FILE).exists()
