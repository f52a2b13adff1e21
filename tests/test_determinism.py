"""Issue 11: the README's determinism claim. Two runs with the same config and seed on the same
machine (CPU, same thread count) give bit-identical weights, augmentation included; another seed
does not (so the comparison can fail)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def _weights(run):
    from safetensors.torch import load_file

    return load_file(str(run / "last" / "model.safetensors"))


def test_same_seed_same_weights_bit_for_bit(tmp_path, squares_data):
    from fcnkit.app.train import train

    squares_data(train=8, val=4)
    config = {
        "data": "squares",
        "batch_size": 4,
        "epochs": 2,
        "model_options": {"width": 4},
        "device": "cpu",
        "threads": 1,
        "augment": ["scale", "crop:12", "flip", "vflip", "rot90", "color"],
        "lr_schedule": "poly",
        "warmup_steps": 1,
        "loss": "ce+dice",
    }
    runs = [
        train({**config, "seed": seed, "out": str(tmp_path / name)}, report=False)
        for name, seed in (("a", 0), ("b", 0), ("c", 1))
    ]
    a, b, c = (_weights(r) for r in runs)
    assert a.keys() == b.keys()
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) == 0.0
    assert any(not torch.equal(a[k], c[k]) for k in a)
    import csv

    def scores(run):  # the logged losses and scores (not the timing columns)
        with open(run / "metrics.csv") as f:
            return [(r["train_loss_epoch"], r["val_loss"], r["val_mean_iu"]) for r in csv.DictReader(f)]

    assert scores(runs[0]) == scores(runs[1]) != scores(runs[2])
