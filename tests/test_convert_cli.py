"""``fcnkit convert``: local torchvision weights -> a checkpoint that load_checkpoint rebuilds, whose
dense output is the classifier's logits at the native size; clear errors for wrong files."""

import json

import pytest
import torch
import torchvision

from fcnkit.checkpoint import load_checkpoint
from fcnkit.cli import main as cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A random ResNet-18 (1000 classes, non-trivial BN statistics) saved as a torchvision state dict."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_convert_writes_checkpoint_equal_to_classifier(resnet18_file, tmp_path, capsys):
    path, classifier = resnet18_file
    out = tmp_path / "run"
    assert cli.main(["convert", "--arch", "torchvision:resnet18", "--weights", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1000 classes" in printed and "stride (32, 32)" in printed and "note:" not in printed
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "segmentation" and config["num_classes"] == 1000 and config["in_channels"] == 3
    assert config["geometry"] == {"size": [627, 627], "stride": [32, 32], "offset": [96, 96]}
    assert config["normalization"]["mean"] == [0.485, 0.456, 0.406] and len(config["palette"]) == 1000
    assert config["classes"][:2] == ["class_0", "class_1"] and config["converted_from"]["weights"] == "resnet18.pth"
    model, _ = load_checkpoint(out)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        logits, dense = classifier(x), model(x)
    assert dense.shape == (1, 1000, 224, 224)
    # one cell at the native size: the dense map is that cell everywhere, and the cell is the logits
    assert (dense[:, :, 0, 0] - logits).abs().max() <= 1e-4
    assert (dense - dense[:, :, :1, :1]).abs().max() <= 1e-5


def test_new_num_classes_reinitialises_last_layer_only(resnet18_file, tmp_path, capsys):
    path, classifier = resnet18_file
    from safetensors.torch import save_file

    st = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(st))
    out = tmp_path / "run3"
    assert (
        cli.main(
            ["convert", "--arch", "torchvision:resnet18", "--weights", str(st), "--out", str(out), "--num-classes", "3"]
        )
        == 0
    )
    assert (
        "note: re-initialised the last layer 'fc' for 3 classes (the weights file has 1000)" in capsys.readouterr().out
    )
    model, config = load_checkpoint(out)
    body = model.fcn.body
    assert body.get_submodule("fc").weight.shape == (3, 512, 1, 1)
    assert torch.equal(body.get_submodule("layer4.1.conv2").weight, classifier.layer4[1].conv2.weight)
    assert config["converted_from"]["reinitialised"] == ["fc"] and config["classes"] == [
        "class_0",
        "class_1",
        "class_2",
    ]


def test_errors_are_one_line_with_the_fix(resnet18_file, tmp_path, capsys):
    path, _ = resnet18_file
    base = ["convert", "--weights", str(path), "--out", str(tmp_path / "x")]
    assert cli.main(base + ["--arch", "torchvision:resnet34"]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "resnet18.pth" in err
        and "not a torchvision:resnet34 state dict" in err
        and "--arch" in err
    )
    assert cli.main(base + ["--arch", "torchvision:vgg11"]) == 2
    assert "no 'classifier.6.weight'" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "convert",
                "--arch",
                "torchvision:resnet18",
                "--weights",
                str(tmp_path / "none.pth"),
                "--out",
                str(tmp_path / "y"),
            ]
        )
        == 2
    )
    assert "no such weights file" in capsys.readouterr().err
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    assert (
        cli.main(["convert", "--arch", "torchvision:resnet18", "--weights", str(junk), "--out", str(tmp_path / "z")])
        == 2
    )
    assert "cannot read a state dict" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()
