"""fcnkit.engine.config: YAML + CLI overrides, resolved defaults, and errors that name the key."""

import pytest
import yaml

from fcnkit.engine.config import TrainConfig, load_config, save_config
from fcnkit.errors import InputError, MissingFileError


def test_yaml_then_cli_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: digit-canvas\nepochs: 4\nbatch-size: 16\nlr: 0.01\nmodel_options: {width: 8}\n")
    cfg = load_config(path, {"epochs": 7, "lr": None, "seed": 3})
    assert cfg.data == "digit-canvas"
    assert cfg.epochs == 7  # flag wins over the file
    assert cfg.batch_size == 16  # dashed key in YAML accepted
    assert cfg.lr == 0.01  # None override = flag not given: the file's value stays
    assert cfg.seed == 3
    assert cfg.model_options == {"width": 8}


def test_unknown_key_suggests_nearest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: x\nepoch: 3\n")
    with pytest.raises(InputError, match=r"unknown key 'epoch' \(did you mean 'epochs'\?\)") as err:
        load_config(path)
    assert str(path) in str(err.value)
    with pytest.raises(InputError, match="did you mean 'batch_size'"):
        load_config(None, {"batchsize": 2})


@pytest.mark.parametrize(
    "key,value,pattern",
    [
        ("epochs", "many", "epochs must be a whole number"),
        ("epochs", 0, "epochs must be >= 1"),
        ("lr", -1, "lr must be a finite number > 0"),
        ("lr", "abc", "lr must be a number"),
        ("momentum", 1.5, "momentum must be below 1"),
        ("optimizer", "adamw", "did you mean 'adam'"),
        ("precision", "16", "precision: unknown value '16'; use one of 32, 16-mixed, bf16-mixed"),
        ("device", "gpu", "use one of auto, cpu, cuda"),
        ("data_options", "size=3", "data_options must be a mapping"),
        ("augment", "maybe", "unknown augmentation .maybe.; use true, false or a list of flip, scale"),
        ("augment", ["flip", "scael"], "did you mean .scale."),
        ("overwrite", "maybe", "overwrite must be true or false"),
    ],
)
def test_bad_values_name_the_key(key, value, pattern):
    with pytest.raises(InputError, match=pattern):
        TrainConfig.from_dict({key: value})


def test_resolved_defaults_per_optimizer():
    assert TrainConfig(data="d").resolved().lr == 1e-3
    sgd = TrainConfig(data="d", optimizer="sgd").resolved()
    assert (sgd.lr, sgd.momentum, sgd.batch_size) == (1e-2, 0.9, 8)
    heavy = TrainConfig(data="d", optimizer="heavy").resolved()
    assert (heavy.batch_size, heavy.momentum, heavy.lr) == (1, 0.99, 1e-4)
    with pytest.raises(InputError, match="optimizer heavy means batch_size 1, got 4"):
        TrainConfig(data="d", optimizer="heavy", batch_size=4).resolved()
    assert TrainConfig(data="d", model="allconv").resolved().out.endswith("allconv-d")


def test_resolved_rejects_missing_data_and_unbuilt_features():
    with pytest.raises(InputError, match="pass --data"):
        TrainConfig().resolved()
    assert (
        TrainConfig(data="d", task="classification").resolved().model == "allconv_cls"
    )  # built now (tests/test_classification.py)
    # regimes are implemented (fcnkit.training.regimes): a name resolves to its full settings
    assert TrainConfig.from_dict({"data": "d", "regime": "patchwise"}).resolved().regime["patch_size"] == "rf"
    with pytest.raises(InputError, match="did you mean 'whole'"):
        TrainConfig.from_dict({"data": "d", "regime": {"name": "wholes"}}).resolved()


def test_save_roundtrip_and_file_errors(tmp_path):
    cfg = TrainConfig(data="d", epochs=2, regime={"name": "whole"}).resolved()
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["epochs"] == 2
    assert load_config(tmp_path / "config.yaml") == cfg
    with pytest.raises(MissingFileError, match="--config"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("epochs: [1,\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")


def test_augment_forms_resolve_to_a_list():
    assert TrainConfig.from_dict({"data": "d", "augment": True}).resolved().augment == ["flip", "scale"]
    assert TrainConfig.from_dict({"data": "d", "augment": "false"}).resolved().augment == []
    assert TrainConfig.from_dict({"data": "d", "augment": "scale"}).resolved().augment == ["scale"]
