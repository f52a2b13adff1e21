"""Registry: names, errors that say the fix, fcnkit_spec and checkpoint round trips, the CLI table."""

import json

import pytest
import torch

from fcnkit.checkpoint import load_checkpoint, save_checkpoint
from fcnkit.errors import InputError
from fcnkit.models import registry
from fcnkit.models.registry import (
    build_model,
    count_parameters,
    list_models,
    model_info,
    register,
)


def test_list_models_and_tasks():
    assert {"allconv", "allconv_cls", "fcn32s", "fcn16s", "fcn8s"} <= set(list_models())
    assert "allconv_cls" not in list_models("segmentation")
    assert list_models("classification") == ["allconv_cls", "resallconv_cls"]
    with pytest.raises(InputError, match="segmentation"):
        list_models("segmentaton")


def test_model_info():
    info = model_info("fcn8s")
    assert info["task"] == "segmentation" and info["description"]
    assert info["defaults"]["backbone"] == "allconv" and info["defaults"]["in_channels"] == 3


def test_unknown_name_suggests_and_lists():
    with pytest.raises(InputError) as exc:
        build_model("fcn8", num_classes=2)
    msg = str(exc.value)
    assert "did you mean 'fcn8s'" in msg and "allconv" in msg and "fcn32s" in msg


def test_unknown_keyword_suggests():
    with pytest.raises(InputError) as exc:
        build_model("allconv", num_classes=2, widht=8)
    msg = str(exc.value)
    assert "'widht'" in msg and "did you mean 'width'" in msg and "downsample" in msg


def test_bad_value_names_argument_choices_and_nearest():
    with pytest.raises(InputError) as exc:
        build_model("allconv", num_classes=2, downsample="maxpol")
    msg = str(exc.value)
    assert "downsample='maxpol'" in msg and "did you mean 'maxpool'" in msg and "'strided-only'" in msg
    with pytest.raises(InputError, match="backbone='vgg'.*did you mean 'vgg16'"):
        build_model("fcn8s", num_classes=2, backbone="vgg")
    with pytest.raises(InputError, match="num_classes"):
        build_model("allconv", num_classes=0)
    with pytest.raises(InputError, match="depth"):
        build_model("allconv", num_classes=2, depth=0)


def test_register_requires_keyword_only_builder():
    with pytest.raises(TypeError):
        register("bad_builder", task="segmentation", description="x")(lambda num_classes, in_channels=3: None)


def test_a_missing_model_module_fails_loudly(monkeypatch):
    # a renamed or missing family is a packaging bug: never a silently shorter model list
    monkeypatch.setattr(registry, "_MODEL_MODULES", registry._MODEL_MODULES + ["fcnkit.models.not_written_yet"])
    monkeypatch.setattr(registry, "_loaded", set())
    with pytest.raises(ModuleNotFoundError, match="not_written_yet"):
        list_models()


def test_spec_has_all_arguments_and_rebuilds():
    model = build_model("allconv", num_classes=4, in_channels=1, width=8, downsample="strided")
    spec = model.fcnkit_spec
    assert spec["name"] == "allconv"
    assert spec["kwargs"]["num_classes"] == 4 and spec["kwargs"]["in_channels"] == 1
    assert spec["kwargs"]["width"] == 8 and spec["kwargs"]["depth"] == model_info("allconv")["defaults"]["depth"]
    json.dumps(spec)
    again = build_model(spec["name"], **spec["kwargs"])
    assert again.fcnkit_spec == spec
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


CASES = [
    ("allconv", {"width": 4}),
    ("allconv", {"width": 4, "padding": "valid", "downsample": "avgpool", "norm": "none", "learn_upsampling": True}),
    ("allconv", {"width": 4, "output": "coarse", "downsample": "strided-only"}),
    ("allconv_cls", {"width": 4, "norm": "group"}),
    ("resallconv", {"width": 4, "skip_downsample": "pool-concat", "downsample": "maxpool"}),
    ("resallconv_cls", {"width": 4, "skip_downsample": "pool", "norm": "group"}),
    ("fcn32s", {}),
    ("fcn16s", {"learn_upsampling": True}),
    ("fcn8s", {}),
    ("fcn8s", {"backbone": "resnet18"}),
]


@pytest.mark.parametrize("name,kwargs", CASES)
def test_checkpoint_round_trip(tmp_path, name, kwargs):
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, in_channels=2, **kwargs)
    with torch.no_grad():  # move every weight (FCN score layers start at zero) and BN statistic
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(2, 2, 37, 45)
    expected = model(x)
    save_checkpoint(tmp_path / "ckpt", model, {"task": model_info(name)["task"]})
    loaded, config = load_checkpoint(tmp_path / "ckpt")
    assert config["model"] == model.fcnkit_spec
    assert loaded.fcnkit_spec == model.fcnkit_spec
    assert torch.equal(loaded(x), expected)
    assert expected.abs().max() > 0


def test_count_parameters_on_meta_matches_real():
    model = build_model("allconv", num_classes=21)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count_parameters("allconv") == trainable
    # fcn8s on vgg16 without allocating it: conv1-5 (14,714,688) + fc6 + fc7 + three zero score layers
    vgg = 14_714_688 + (512 * 49 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 + 512 + 256) * 21 + 3 * 21
    assert count_parameters("fcn8s", backbone="vgg16") == vgg


def test_cli_table(capsys):
    from fcnkit.cli.main import main

    assert main(["models", "--task", "segmentation"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "task", "params"]
    allconv_line = next(line for line in lines if line.startswith("allconv "))
    assert f"{count_parameters('allconv'):,}" in allconv_line
    assert "fcn8s" in out and "allconv_cls" not in out
