"""Checkpoint callback and trainer-state IO, on a tiny in-test dataset and a tiny conv model.

train() is run for real (Lightning loop on CPU); only the dataset and the model builder are
replaced by fakes, so these tests do not depend on the built-in data or the model zoo.
"""

import json
import math
import pickle

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import fcnkit.app.train as run_mod
import fcnkit.data
import fcnkit.engine.segmentation as module_mod
from fcnkit.engine.callbacks import TRAINER_CKPT, AtomicCheckpointIO
from fcnkit.engine.config import TrainConfig
from fcnkit.errors import InputError


def _collate(batch):  # all items have the same size here
    return {
        "image": torch.stack([b["image"] for b in batch]),
        "mask": torch.stack([b["mask"] for b in batch]),
        "meta": [b["meta"] for b in batch],
    }


class Tiny(nn.Module):
    """Two convs; with ``nan_after=n`` the n+1-th training forward returns NaN (injected divergence)."""

    def __init__(self, nan_after=None):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
        self.fcnkit_spec = {"name": "tiny", "kwargs": {}}
        self.nan_after, self.calls = nan_after, 0

    def forward(self, x):
        out = self.body(x)
        if self.training:
            self.calls += 1
            if self.nan_after is not None and self.calls > self.nan_after:
                out = out * float("nan")
        return out


@pytest.fixture
def fake_world(monkeypatch, squares_data):
    squares_data(train=8, val=4)
    monkeypatch.setattr(fcnkit.data, "pad_collate", _collate, raising=False)

    def use_model(**kw):
        monkeypatch.setattr(run_mod, "_build_model", lambda cfg, info: Tiny(**kw))

    use_model()
    return use_model


def _cfg(tmp_path, **kw):
    return TrainConfig(data="squares", batch_size=4, out=str(tmp_path / "run"), **kw)


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_best_follows_max_val_mean_iu_and_last_is_newest(tmp_path, fake_world, monkeypatch):
    # script the validation mean IU per epoch: the best is epoch 1 even though later epochs train more
    scripted = iter([0.5, 0.7, 0.6, 0.65])

    def fake_scores(cm):
        return {"pixel_accuracy": 0.9, "mean_accuracy": 0.8, "mean_iu": next(scripted), "fw_iu": 0.85, "iu": [0.9, 0.1]}

    monkeypatch.setattr(module_mod.SegmentationModule, "score_fn", staticmethod(fake_scores))
    run = run_mod.train(_cfg(tmp_path, epochs=4), report=False)
    best = json.loads((run / "best" / "config.json").read_text())
    last = json.loads((run / "last" / "config.json").read_text())
    assert (best["metrics"]["epoch"], best["metrics"]["mean_iu"]) == (1, 0.7)
    assert (last["metrics"]["epoch"], last["metrics"]["mean_iu"]) == (3, 0.65)
    assert last["metrics"]["step"] == 8  # 4 epochs x 2 batches
    assert best["num_classes"] == 2 and best["normalization"] == {"mean": [0.5], "std": [0.25]}
    assert best["train"]["epochs"] == 4 and best["model"] == {"name": "tiny", "kwargs": {}}
    # the weights differ: best/ was not overwritten by later, worse epochs
    assert not torch.equal(_weights(run / "best")["body.0.weight"], _weights(run / "last")["body.0.weight"])
    # the best score is part of the trainer state (for --resume), readable with weights_only=True
    state = torch.load(run / TRAINER_CKPT, weights_only=True)
    assert state["callbacks"]["FcnkitCheckpoint"]["best_score"] == 0.7
    # metrics.csv: one row per epoch with train and val values
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,") and "val_mean_iu" in rows[0] and "train_loss_epoch" in rows[0]
    assert len(rows) == 1 + 4
    # atomic writes leave no temporary files or folders behind
    for folder in (run, run / "best", run / "last"):
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".fcnkit"]


def test_non_finite_loss_stops_and_keeps_last_good_weights(tmp_path, fake_world):
    fake_world(nan_after=5)  # steps 0-4 fine (epochs 0, 1 and half of 2), NaN at step 5
    with pytest.raises(
        InputError, match=r"loss became nan at step 5; .*last holds the last good weights; lower --lr"
    ) as err:
        run_mod.train(_cfg(tmp_path, epochs=5), report=False)
    assert "\n" not in str(err.value)
    run = tmp_path / "run"
    last = json.loads((run / "last" / "config.json").read_text())
    assert last["metrics"]["step"] == 4  # written after epoch 1, never after the NaN
    assert all(torch.isfinite(t).all() for t in _weights(run / "last").values())
    assert all(torch.isfinite(t).all() for t in _weights(run / "best").values())
    assert (run / "metrics.csv").is_file()


def test_fresh_run_refuses_to_overwrite_a_run(tmp_path, fake_world):
    run_mod.train(_cfg(tmp_path, epochs=1), report=False)
    with pytest.raises(InputError, match="already holds a run; continue it with --resume"):
        run_mod.train(_cfg(tmp_path, epochs=1), report=False)
    run_mod.train(_cfg(tmp_path, epochs=1, overwrite=True), report=False)
    assert not (tmp_path / "run" / "logs" / "version_1").exists()  # overwrite started from scratch


class _Unsafe:
    """Any class outside torch's weights_only allowlist."""


def test_checkpoint_io_is_atomic_and_loads_weights_only(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "t.ckpt"
    io.save_checkpoint({"a": torch.ones(2)}, path)
    # a failing save (unpicklable object) leaves the old file intact and no temp file
    with pytest.raises((pickle.PicklingError, AttributeError)):  # which one depends on the Python version
        io.save_checkpoint({"a": torch.zeros(2), "f": lambda: 0}, path)
    assert torch.equal(io.load_checkpoint(path)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["t.ckpt"]
    # weights_only=True whatever the caller or the environment asks for
    torch.save({"x": _Unsafe()}, tmp_path / "evil.ckpt")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        io.load_checkpoint(tmp_path / "evil.ckpt", weights_only=False)


def test_json_safe_turns_nan_into_null():
    # NaN scores (a class absent everywhere) must not make config.json or --json invalid JSON
    from fcnkit.utils.jsonsafe import json_safe

    assert json_safe({"a": math.nan, "b": [1.0, math.inf]}) == {"a": None, "b": [1.0, None]}


def test_fp16_on_cpu_is_a_clear_input_error(tmp_path, fake_world):
    with pytest.raises(InputError, match="16-mixed needs a CUDA GPU.*bf16-mixed"):
        run_mod.train(_cfg(tmp_path, epochs=1, precision="16-mixed", device="cpu"), report=False)


def test_max_steps_mid_epoch_and_resume_without_new_steps(tmp_path, fake_world):
    # 2 batches per epoch; max_steps 3 stops inside epoch 1, before its validation
    run = run_mod.train(_cfg(tmp_path, epochs=5, max_steps=3), report=False)
    last = json.loads((run / "last" / "config.json").read_text())["metrics"]
    assert (last["step"], last["validated_at_step"]) == (3, 2)  # newest weights, scores of step 2
    assert "mean_iu" in last
    # resuming with nothing left to train must not rewrite last/ (Lightning skips the loop; the
    # callback also restores the step it last saved, in case on_train_end runs)
    before = (run / "last").stat().st_ino  # an atomic rewrite would put a new folder there
    run_mod.train(TrainConfig(resume=str(run), max_steps=3), report=False)
    assert (run / "last").stat().st_ino == before
    # and resuming with more steps continues from step 3
    run_mod.train(TrainConfig(resume=str(run), max_steps=6), report=False)
    assert json.loads((run / "last" / "config.json").read_text())["metrics"]["step"] == 6
