"""init_from: tensors copied by name and shape, class rows by class name, clear errors, and a
training run that starts from a checkpoint's weights."""

import json

import pytest
import torch
from torch import nn

from fcnkit.app.init_from import init_from_checkpoint
from fcnkit.checkpoint import save_checkpoint
from fcnkit.errors import InputError, MissingFileError
from fcnkit.models import build_model

BODY = {"width": 4, "depth": 1, "stages": 2}
DIGITS = [str(k) for k in range(10)]
CANVAS = ["background"] + DIGITS


def _classifier(tmp_path, **body):
    torch.manual_seed(1)
    model = build_model("allconv_cls", num_classes=10, in_channels=1, **{**BODY, **body})
    for p in model.parameters():  # away from any default initialisation, so a copy is visible
        p.data.normal_()
    path = save_checkpoint(tmp_path / "cls", model, {"task": "classification", "classes": DIGITS, "num_classes": 10})
    return model, path


def test_trunk_loads_by_name_and_head_rows_by_class_name(tmp_path):
    source, path = _classifier(tmp_path)
    torch.manual_seed(2)
    target = build_model("allconv", num_classes=11, in_channels=1, **BODY)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    report = init_from_checkpoint(target, path, classes=CANVAS)
    src, got = source.state_dict(), target.state_dict()
    for name in src:
        if name.startswith("features."):
            assert torch.equal(got[name], src[name]), name
    assert set(report.by_class) == {"score.weight", "score.bias"} and not report.skipped
    assert torch.equal(got["score.weight"][1:], src["score.weight"])  # digit k -> canvas class k + 1
    assert torch.equal(got["score.weight"][0], fresh["score.weight"][0])  # background: not in the classifier
    assert torch.equal(got["score.bias"][1:], src["score.bias"])
    assert all(torch.equal(got[n], fresh[n]) for n in report.kept) and any(
        n.startswith("skip_scores") for n in report.kept
    )
    assert "10 of 11 rows" in report.summary()


def test_without_class_names_a_head_of_other_size_is_skipped(tmp_path):
    source, path = _classifier(tmp_path)
    target = build_model("allconv", num_classes=11, in_channels=1, **BODY)
    before = target.score.weight.detach().clone()
    report = init_from_checkpoint(target, path)
    assert dict(report.skipped) == {
        "score.weight": "shape [10, 16, 1, 1] vs the model's [11, 16, 1, 1]",
        "score.bias": "shape [10] vs the model's [11]",
    }
    assert torch.equal(target.score.weight, before)
    assert torch.equal(target.features.stage0[0][0].weight, source.features.stage0[0][0].weight)


def test_nothing_shared_is_an_input_error_naming_the_fix(tmp_path):
    _, path = _classifier(tmp_path, width=6)
    target = build_model("allconv", num_classes=11, in_channels=1, **BODY)
    with pytest.raises(InputError, match="share no learned tensor.*--model-option width=6"):
        init_from_checkpoint(target, path)
    other = nn.Sequential(nn.Conv2d(1, 3, 3))
    other.fcnkit_spec = {"name": "custom", "kwargs": {}}  # any other architecture
    save_checkpoint(tmp_path / "other", other, {})
    with pytest.raises(InputError, match="same family"):
        init_from_checkpoint(target, tmp_path / "other")
    with pytest.raises(MissingFileError, match="no such run or checkpoint"):
        init_from_checkpoint(target, tmp_path / "missing")


@pytest.mark.slow
def test_train_starts_from_the_checkpoint(tmp_path, capsys):
    from fcnkit.checkpoint import load_checkpoint
    from fcnkit.cli.main import main

    source, path = _classifier(tmp_path)
    run = tmp_path / "seg"
    args = [
        "train",
        "--data",
        "digit-canvas",
        "--data-option",
        "count=4",
        "--data-option",
        "size=[32,32]",
        "--val-data-option",
        "count=2",
        "--model",
        "allconv",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--optimizer",
        "sgd",
        "--lr",
        "1e-9",
        "--momentum",
        "0",
        "--device",
        "cpu",
        "--init-from",
        str(path),
        "--out",
        str(run),
    ]
    args += [f"--model-option={k}={v}" for k, v in BODY.items()]
    assert main(args) == 0
    assert "init from" in capsys.readouterr().out
    saved = json.loads((run / "init_from.json").read_text())
    assert "features.stage0.0.0.weight" in saved["loaded"] and "score.weight" in saved["by_class"]
    model, config = load_checkpoint(run / "last")
    assert config["train"]["init_from"] == str(path)
    # one SGD step at lr 1e-9 moves nothing visible: the trunk is the classifier's
    torch.testing.assert_close(
        model.features.stage1[0][0].weight, source.features.stage1[0][0].weight, atol=1e-6, rtol=0
    )
    bad = list(args)
    bad[bad.index("--init-from") + 1], bad[bad.index("--out") + 1] = str(tmp_path / "nope"), str(tmp_path / "bad")
    assert main(bad) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_a_convert_output_initialises_a_model_with_other_classes(tmp_path):
    """``fcnkit convert`` writes a checkpoint folder; init_from reads it like any other."""
    import torchvision

    from fcnkit.app.convert import convert_classifier

    torch.manual_seed(0)
    classifier = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    torch.save(classifier.state_dict(), tmp_path / "resnet18.pth")
    convert_classifier("torchvision:resnet18", tmp_path / "resnet18.pth", tmp_path / "converted", output="coarse")
    target = build_model("convolutionalized", arch="torchvision:resnet18", num_classes=4, output="coarse")
    report = init_from_checkpoint(target, tmp_path / "converted")
    assert sorted(name for name, _ in report.skipped) == ["fcn.body.fc.bias", "fcn.body.fc.weight"]  # 10 classes vs 4
    got = target.state_dict()
    assert torch.equal(got["fcn.body.layer4.1.conv2.weight"], classifier.layer4[1].conv2.weight)
    assert torch.equal(got["fcn.body.bn1.running_var"], classifier.bn1.running_var)
    assert len(report.loaded) == len(got) - 2
