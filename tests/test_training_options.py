"""Issue 11, training options: poly + warmup, validation every N steps, TensorBoard, Dice/focal losses,
the Dice score, --backbone."""

from __future__ import annotations

import csv
import math

import pytest
import torch
import torch.nn.functional as F

from fcnkit.metrics import scores
from fcnkit.training.losses import dice_loss, focal_loss, pixelwise_loss, segmentation_loss
from fcnkit.training.schedules import lr_factor

pytestmark = pytest.mark.usefixtures("one_thread")


def test_poly_and_warmup_factors():
    assert lr_factor(0, 100, "poly") == 1.0
    assert lr_factor(50, 100, "poly") == pytest.approx(0.5**0.9)
    assert lr_factor(100, 100, "poly") == 0.0 and lr_factor(150, 100, "poly") == 0.0
    # warmup 10: linear 0.1, 0.2, ... 1.0, then poly over the remaining 90 steps
    assert [lr_factor(s, 100, "poly", warmup_steps=10) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor(10, 100, "poly", warmup_steps=10) == 1.0
    assert lr_factor(55, 100, "poly", warmup_steps=10) == pytest.approx(0.5**0.9)
    assert lr_factor(3, 100, "none", warmup_steps=4) == 1.0 and lr_factor(70, 100, "none", warmup_steps=4) == 1.0
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    with pytest.raises(ValueError):
        lr_factor(0, 10, "step")


def _batch():
    logits = torch.tensor([[[[2.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [3.0, 0.0]]]])  # [1, 2, 2, 2]
    target = torch.tensor([[[0, 1], [1, 255]]])
    return logits, target


def test_focal_loss_by_hand_and_ignore():
    logits, target = _batch()
    p = F.softmax(logits, 1)[0]
    pt = torch.stack([p[0, 0, 0], p[1, 0, 1], p[1, 1, 0]])  # the three labelled cells
    expected = (-((1 - pt) ** 2) * pt.log()).mean()
    assert focal_loss(logits, target) == pytest.approx(float(expected), rel=1e-6)
    assert focal_loss(logits, target, gamma=0.0) == pytest.approx(float(pixelwise_loss(logits, target)), rel=1e-6)
    weights = torch.tensor([1.0, 3.0])
    wexp = float(((-((1 - pt) ** 2) * pt.log()) * torch.tensor([1.0, 3.0, 3.0])).sum() / 7)
    assert focal_loss(logits, target, class_weights=weights) == pytest.approx(wexp, rel=1e-6)


def test_dice_loss_by_hand_and_ignore():
    logits, target = _batch()
    p = F.softmax(logits, 1)[0]
    cells = [(0, 0, 0), (0, 1, 1), (1, 0, 1)]  # (y, x, label); (1, 1) is ignored
    dice = []
    for c in (0, 1):
        inter = sum(float(p[c, y, x]) * (lab == c) for y, x, lab in cells)
        total = sum(float(p[c, y, x]) + (lab == c) for y, x, lab in cells)
        dice.append((2 * inter + 1) / (total + 1))
    assert dice_loss(logits, target) == pytest.approx(1 - sum(dice) / 2, rel=1e-6)
    assert dice_loss(logits, target, class_weights=torch.tensor([1.0, 3.0])) == pytest.approx(
        1 - (dice[0] + 3 * dice[1]) / 4, rel=1e-6
    )
    changed = logits.clone()
    changed[0, :, 1, 1] = torch.tensor([-50.0, 50.0])  # the ignored cell cannot change any loss
    for name in ("ce", "dice", "focal", "ce+dice"):
        assert segmentation_loss(name, changed, target) == pytest.approx(float(segmentation_loss(name, logits, target)))
    perfect = torch.tensor([[[[9.0, -9.0], [-9.0, 0.0]], [[-9.0, 9.0], [9.0, 0.0]]]])
    assert dice_loss(perfect, target) < 1e-3
    total = segmentation_loss("ce+dice", logits, target)
    assert total == pytest.approx(float(pixelwise_loss(logits, target) + dice_loss(logits, target)))


def test_dice_score():
    cm = torch.tensor([[5, 1], [2, 2]])
    s = scores(cm)
    assert s["dice"] == pytest.approx([10 / 13, 4 / 7])
    assert s["mean_dice"] == pytest.approx((10 / 13 + 4 / 7) / 2)
    assert math.isnan(scores(torch.tensor([[4, 0, 0], [0, 0, 0], [1, 0, 3]]))["dice"][1])


def _rows(run):
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_poly_warmup_lr_logged_val_every_n_steps_and_tensorboard(tmp_path, squares_data):
    from fcnkit.app.train import train

    squares_data(train=8, val=4)  # batch 2: 4 steps per epoch
    run = train(
        {
            "data": "squares",
            "out": str(tmp_path / "run"),
            "batch_size": 2,
            "epochs": 2,
            "max_steps": 6,
            "lr": 0.01,
            "lr_schedule": "poly",
            "warmup_steps": 2,
            "val_every_n_steps": 3,
            "logger": "tensorboard",
            "model_options": {"width": 4},
            "device": "cpu",
            "log_every_n_steps": 1,
        },
        report=False,
    )
    import json

    best = json.loads((run / "best" / "config.json").read_text())["metrics"]
    assert best["step"] == 3 and best["epoch"] == 0  # validated before the first epoch (4 steps) ended
    lrs = {int(r["step"]): float(r["lr-Adam"]) for r in _rows(run) if r.get("lr-Adam")}
    total = 6
    for step, lr in lrs.items():
        assert lr == pytest.approx(0.01 * lr_factor(step, total, "poly", 2), rel=1e-6), step
    assert {0, 1, 2} <= set(lrs)
    events = list((run / "logs").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert (events[0].parent / "metrics.csv").is_file()  # beside the CSV log, one version folder per start


def test_backbone_flag_and_models_listing(capsys):
    from fcnkit.cli.main import main
    from fcnkit.engine.config import TrainConfig
    from fcnkit.errors import InputError

    cfg = TrainConfig(data="digit-canvas", model="fcn8s", backbone="resnet18").resolved()
    assert cfg.model_options["backbone"] == "resnet18"
    with pytest.raises(InputError, match="disagree"):
        TrainConfig(
            data="digit-canvas", model="fcn8s", backbone="vgg16", model_options={"backbone": "allconv"}
        ).resolved()
    with pytest.raises(InputError, match="unknown value 'tversky'"):
        TrainConfig.from_dict({"loss": "tversky"})
    assert main(["models", "--task", "segmentation"]) == 0
    out = capsys.readouterr().out
    assert "fcn8s" in out and "[default backbone: allconv" in out


@pytest.mark.slow
def test_weights_flag_says_what_it_loaded(tmp_path, squares_data, capsys):
    from fcnkit.app.train import train
    from fcnkit.models.registry import build_model

    squares_data(train=4, val=4)
    source = build_model("fcn8s", num_classes=2, in_channels=1)
    torch.save(source.backbone.state_dict(), tmp_path / "backbone.pt")
    n = len(source.backbone.state_dict())
    run = train(
        {
            "data": "squares",
            "model": "fcn8s",
            "backbone": "allconv",
            "weights": str(tmp_path / "backbone.pt"),
            "out": str(tmp_path / "run"),
            "max_steps": 1,
            "batch_size": 4,
            "device": "cpu",
        },
        report=False,
    )
    out = capsys.readouterr().out
    assert f"{n} tensors loaded into the allconv backbone, 0 missing, 0 unexpected" in out
    assert (run / "last").is_dir()
