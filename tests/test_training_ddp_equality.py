"""DDP equality: 2 CPU processes (gloo) at batch B each train the same weights as 1 process at
batch 2B, to <= 1e-5 (fp32), for a model without batch statistics.

Why it holds: the training loader shards each epoch's order itself (fcnkit.engine.resumable:
rank r takes positions r, r + 2, ...), so the two processes' b-th batches together are the b-th
batch of the one-process run; DDP averages the two per-process mean losses' gradients, which is
the gradient of the global mean when both halves have as many labelled pixels (same-size images
without ignore labels here). What still differs: BatchNorm normalises with per-process batch
statistics (a different function of the batch: measured below, > 1e-3 after 4 steps);
``--sync-batchnorm`` (torch's SyncBatchNorm) fixes that on CUDA only -- torch refuses it on CPU,
so fcnkit answers it there in one line. Random regimes draw per (step, rank) and differ too.

The processes are forked (Lightning's ``ddp_fork``; ``--devices 2`` starts them as scripts with
the same DDP strategy), which keeps this test at a few seconds.
"""

import pytest
from safetensors.torch import load_file

import fcnkit.app.train as run_mod
import fcnkit.engine.loop as loop_mod
from fcnkit.engine.config import TrainConfig
from fcnkit.errors import InputError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _train(tmp_path, name, devices, batch_size, norm, monkeypatch):
    if devices > 1:
        monkeypatch.setattr(loop_mod, "distributed_devices", lambda cfg: {"devices": devices, "strategy": "ddp_fork"})
    cfg = TrainConfig(
        data="squares",
        model="allconv",
        model_options={"width": 4, "stages": 1, "norm": norm},
        batch_size=batch_size,
        devices=devices,
        epochs=2,
        lr=0.01,
        device="cpu",
        threads=1,
        out=str(tmp_path / name),
    )
    run = run_mod.train(cfg, report=False)
    return load_file(str(run / "last" / "model.safetensors"))


def _max_difference(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.mark.parametrize("norm, equal", [("group", True), ("none", True), ("batch", False)])
def test_two_processes_equal_one_with_the_global_batch(tmp_path, squares_data, monkeypatch, norm, equal):
    squares_data(train=16, val=4)  # 16 items: 4 steps of 4 (one process) or of 2 + 2 (two)
    one = _train(tmp_path, "one", 1, 4, norm, monkeypatch)
    two = _train(tmp_path, "two", 2, 2, norm, monkeypatch)  # patches the launcher (undone after the test)
    difference = _max_difference(one, two)
    print(f"norm={norm}: max |w(2 processes) - w(1 process)| = {difference:.3g}")
    if equal:
        assert difference <= 1e-5
    else:  # per-process batch statistics: a different function, documented above
        assert difference > 1e-3


def test_sync_batchnorm_on_cpu_is_one_line(tmp_path, squares_data):
    squares_data(train=8, val=4)
    cfg = TrainConfig(data="squares", devices=2, sync_batchnorm=True, device="cpu", out=str(tmp_path / "run"))
    with pytest.raises(InputError, match="sync-batchnorm.*CUDA.*norm=group") as err:
        run_mod.train(cfg, report=False)
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_two_processes_resume_mid_epoch_bit_identical(tmp_path, squares_data, monkeypatch):
    # stopped by max_steps inside an epoch, then resumed: each process's loader position (batches
    # of its own share) is in trainer.ckpt, so the two processes continue where they were
    squares_data(train=16, val=4)
    whole = _train(tmp_path, "whole", 2, 2, "group", monkeypatch)
    cfg = TrainConfig(
        data="squares",
        model="allconv",
        model_options={"width": 4, "stages": 1, "norm": "group"},
        batch_size=2,
        devices=2,
        epochs=2,
        max_steps=3,
        lr=0.01,
        device="cpu",
        threads=1,
        out=str(tmp_path / "split"),
    )
    run_mod.train(cfg, report=False)  # stops at step 3 of 4 in epoch 0: trainer.ckpt mid-epoch
    run = run_mod.train(TrainConfig(resume=str(tmp_path / "split"), max_steps=100), report=False)
    assert _max_difference(load_file(str(run / "last" / "model.safetensors")), whole) == 0.0
