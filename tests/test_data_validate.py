"""Data validated before training: one pass over every file of the splits used, cached in the
user cache dir by path + size + mtime; ``data check`` reports symlink loops, NaN/inf and labels
past the inferred-class bound."""

from __future__ import annotations

import os

import bad_input_files as bad
import numpy as np
import pytest

import fcnkit.data.validate as validate
from fcnkit.data import load_dataset
from fcnkit.data.checks import inspect_dataset
from fcnkit.errors import InputError


def _counting(monkeypatch):
    calls = {"image": 0, "mask": 0}
    real_image, real_mask = validate.read_image, validate.read_mask

    def image(p):
        calls["image"] += 1
        return real_image(p)

    def mask(p):
        calls["mask"] += 1
        return real_mask(p)

    monkeypatch.setattr(validate, "read_image", image)
    monkeypatch.setattr(validate, "read_mask", mask)
    return calls


def test_second_validation_reads_nothing_and_the_dataset_folder_is_not_written(tmp_path, monkeypatch):
    data = bad.write_dataset(tmp_path / "data", n=6)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in data.rglob("*"))
    data.chmod(0o555)  # the cache must not need the dataset folder
    sets = [load_dataset(str(data), "train"), load_dataset(str(data), "val")]
    calls = _counting(monkeypatch)
    assert validate.validate_before_training(sets) == 6
    assert calls == {"image": 6, "mask": 6}
    assert validate.cache_file(data).is_file() and str(validate.cache_file(data)).startswith(
        os.environ["FCNKIT_CACHE_DIR"]
    )
    assert validate.validate_before_training(sets) == 6
    assert calls == {"image": 6, "mask": 6}  # second run: from the cache
    data.chmod(0o755)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in data.rglob("*")) == before
    # an edited mask is read again, and its new label refused
    bad._png(data / "masks" / "s5.png", np.full((16, 16), 9, np.uint8))
    with pytest.raises(InputError, match=r"s5.png: labels 9 are outside 0..1"):
        validate.validate_before_training([load_dataset(str(data), "val")])
    assert calls["mask"] == 7


def test_label_past_the_bound_is_named_not_taken_as_a_class_count(tmp_path):
    data = bad.write_dataset(tmp_path / "data")
    (data / "classes.txt").unlink()
    (data / "masks" / "s0.png").unlink()
    bad.tiff(data / "masks" / "s0.tif", np.where(np.eye(16, dtype=bool), 1000, 0).astype(np.uint16))
    with pytest.raises(InputError, match=r"s0.tif: holds label 1000, so 'largest label \+ 1' would make 1001 classes"):
        _ = load_dataset(str(data), "train").info
    problems = [str(p) for p in inspect_dataset(data).problems]
    assert any("holds label 1000" in p for p in problems), problems
    # said explicitly, 1001 classes are accepted
    assert load_dataset(str(data), "train", num_classes=1001).info.num_classes == 1001


def test_data_check_reports_symlink_loops_nan_and_labels_outside_classes(tmp_path):
    data = bad.write_dataset(tmp_path / "data", n=6)
    bad.symlink_loop(data / "images", "loop.png")
    (data / "images" / "s1.png").unlink()
    bad.float_tiff(data / "images" / "s1.tif", float("nan"))
    bad._png(data / "masks" / "s4.png", np.full((16, 16), 3, np.uint8))  # classes.txt lists 2
    problems = [str(p) for p in inspect_dataset(data).problems]
    assert any("loop.png: is a symlink loop" in p for p in problems), problems
    assert any("s1.tif: the image holds NaN or inf" in p for p in problems), problems
    assert any("s4.png: labels 3 are outside 0..1" in p for p in problems), problems
    with pytest.raises(InputError, match="symlink loop"):  # and the loader refuses, not skips
        load_dataset(str(data), "train")


def test_data_check_command_lists_them_and_exits_2(tmp_path, capsys):
    from fcnkit.cli.main import main

    data = bad.write_dataset(tmp_path / "data", n=6)
    bad.symlink_loop(data / "masks", "s9.png")
    rc = main(["data", "check", str(data)])
    out, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in out + err
    assert "s9.png: is a symlink loop; point it at the real file or remove it" in out
