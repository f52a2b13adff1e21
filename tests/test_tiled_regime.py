"""The ``tiled`` regime through the real train() loop (Lightning on CPU): it trains, it equals
``whole`` training step for step (same gradient), it resumes, and it skips tiles under loss sampling."""

import numpy as np
import pytest
import torch

import fcnkit.data
from fcnkit.app.train import train_and_log
from fcnkit.engine.config import TrainConfig
from fcnkit.errors import InputError
from fcnkit.training.regimes import build_regime

SIZE = 56  # allconv with 2 stages: halo 12, align 4 -> tiles of 32 give a 3 x 3 plan


class _Info:
    name, task, num_classes, in_channels = "squares", "segmentation", 2, 1
    class_names, palette, mean, std = ["background", "square"], [[0, 0, 0], [255, 0, 0]], [0.5], [0.25]


class Squares(torch.utils.data.Dataset):
    """Noise with one bright 10x10 square (class 1); a 3-pixel ignored frame on top."""

    info = _Info()

    def __init__(self, n, seed):
        rng = np.random.default_rng(seed)
        self.items = []
        for _ in range(n):
            mask = np.zeros((SIZE, SIZE), np.int64)
            y, x = rng.integers(3, SIZE - 12, 2)
            mask[y : y + 10, x : x + 10] = 1
            image = (rng.random((SIZE, SIZE)) * 60 + mask * 150).astype(np.float32) / 255
            mask[:3] = 255
            self.items.append((image, mask))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        image, mask = self.items[i]
        image = torch.from_numpy((image - 0.5) / 0.25)[None]
        return {"image": image, "mask": torch.from_numpy(mask), "meta": {"name": str(i)}}


@pytest.fixture
def squares(monkeypatch):
    def load(name, split="train", **kw):
        return Squares(4 if split == "train" else 2, 0 if split == "train" else 1)

    monkeypatch.setattr(fcnkit.data, "load_dataset", load, raising=False)


def _cfg(tmp_path, regime, name="run", **kw):
    return TrainConfig.from_dict(
        {
            "data": "squares",
            "batch_size": 2,
            "epochs": 1,
            "out": str(tmp_path / name),
            "threads": 1,
            "model_options": {"width": 2, "stages": 2, "norm": "none"},
            "log_every_n_steps": 1,
            "optimizer": "sgd",
            "lr": 0.05,
            "lr_schedule": "none",
            "regime": regime,
            **kw,
        }
    )


def _weights(out):
    from fcnkit.checkpoint import load_checkpoint

    return load_checkpoint(out["run"] / "last")[0].state_dict()


def test_tiled_training_equals_whole_training_and_resumes(tmp_path, squares):
    whole = train_and_log(_cfg(tmp_path, "whole", "whole"))
    tiled = train_and_log(_cfg(tmp_path, "tiled:tile=32"))
    assert tiled["config"]["regime"] == {
        "name": "tiled",
        "tile": 32,
        "memory": "auto",
        "freeze_bn": False,
        "sample": "whole",
    }
    assert [r["step_cells"] for r in tiled["train"]] == [r["step_cells"] for r in whole["train"]]
    # 2 SGD steps on the same batches: the same weights up to float32 rounding (the gradient is the same)
    after_one = _weights(tiled)
    for name, w in _weights(whole).items():
        assert torch.allclose(after_one[name], w, rtol=1e-4, atol=1e-6), name
    resumed = train_and_log(TrainConfig.from_dict({"resume": str(tmp_path / "run"), "epochs": 2, "threads": 1}))
    assert [int(r["step"]) for r in resumed["train"]] == [0, 1, 2, 3]  # continued: steps 2, 3 added
    assert resumed["config"]["regime"] == tiled["config"]["regime"]
    assert all(np.isfinite(r["train_loss"]) for r in resumed["train"] if "train_loss" in r)
    assert not torch.equal(_weights(resumed)["score.weight"], after_one["score.weight"])


def test_loss_sampling_inside_tiles_skips_tiles_and_keeps_the_batch_rule():
    regime = build_regime("tiled:tile=32,sample=loss-sampling,p=0.25,seed=2")
    assert regime.options() == {
        "name": "tiled",
        "tile": 32,
        "memory": "auto",
        "freeze_bn": False,
        "sample": "loss-sampling",
        "p": 0.25,
        "seed": 2,
        "cell": "auto",
    }
    assert build_regime(regime.options()) == regime
    assert regime.batch_size(2) == 8  # ceil(2 / p) images, as loss-sampling
    from fcnkit import build_model

    torch.manual_seed(0)
    model = build_model("allconv", num_classes=2, in_channels=1, width=2, stages=2, norm="none")
    bound = regime.bind(model, None, num_classes=2, in_channels=1)
    image, mask = torch.randn(1, 1, 200, 200), torch.zeros(1, 200, 200, dtype=torch.int64)
    mask[:, :, 100:] = 255  # nothing labelled on the right: those tiles hold no sampled cell
    loss, weight_map = bound.training_loss(model, {"image": image, "mask": mask}, step=0)
    loss.backward()
    assert bound.last_pass.skipped > 0 and bound.last_pass.tiles > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    kept = float(((weight_map > 0) & (mask != 255)).float().mean() / (mask != 255).float().mean())
    assert 0.15 < kept < 0.35


def test_tiled_regime_refuses_batchnorm_in_training_mode_at_bind_unless_frozen():
    from fcnkit import build_model

    model = build_model("allconv", num_classes=2, in_channels=1, width=2, stages=2)  # BatchNorm by default
    with pytest.raises(InputError, match="BatchNorm in training mode.*norm='none'"):
        build_regime("tiled:tile=32").bind(model, None, num_classes=2, in_channels=1)
    assert build_regime("tiled:tile=32,freeze_bn=true").bind(model, None, num_classes=2, in_channels=1)._tile == 32
    auto = build_regime("tiled:memory=64M,freeze_bn=true").bind(model, None, num_classes=2, in_channels=1)
    assert auto._tile % 4 == 0 and auto._tile > 2 * 12  # tile=auto: from the budget, aligned, more than the halos
    with pytest.raises(InputError, match="sample=patchwise cannot be tiled"):
        build_regime("tiled:sample=patchwise")
    with pytest.raises(InputError, match="regime 'tiled': regime: unknown name 'los-sampling'"):
        build_regime("tiled:sample=los-sampling")
    with pytest.raises(InputError, match="unknown option 'q'"):
        build_regime("tiled:q=1")
    with pytest.raises(InputError, match="tile must be"):
        build_regime("tiled:tile=-4")
