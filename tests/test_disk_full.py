"""A full disk answers in one line (the path, the space needed where known), exit 2, no temp files
left, earlier checkpoints intact and the run resumable. The disk is a small tmpfs (CI runs as
root); where mounting is impossible the tests are skipped and say why.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import bad_input_files as bad
import numpy as np
import pytest
import torch

from fcnkit.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs("2m") -> Path``: a fresh tmpfs of that size (unmounted at the end)."""
    mounted = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
        folder.mkdir()
        made = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if made.returncode != 0:
            reason = f"cannot mount a {size} tmpfs here ({made.stderr.strip() or 'not root'}): disk-full case skipped"
            print(reason)
            pytest.skip(reason)
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` up to ``leave`` free bytes with one file; returns it (delete it to make room)."""
    filler = disk / "filler.bin"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(filler, "wb") as f:
        try:
            f.write(b"\0" * max(0, free - leave))
        except OSError:
            pass
    return filler


def run_cli(argv, capsys):
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):  # their handlers keep the stream
        for handler in logging.getLogger(name).handlers:  # of an earlier test's capture
            if isinstance(handler, logging.StreamHandler):
                handler.stream = sys.stderr
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    return rc, out, err, lines


def _assert_disk_full_line(rc, err, lines, path_part):
    assert rc == 2 and "Traceback" not in err, err[-1500:]
    assert lines and lines[-1].startswith("fcnkit: ") and "no space left" in lines[-1], err[-800:]
    assert path_part in lines[-1], lines[-1]
    print(f"\n{lines[-1]}")


def _temps(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.startswith(".") and p.name != ".fcnkit"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return bad.Assets(tmp_path_factory.mktemp("assets"))


def test_predict_probabilities_on_a_full_disk_is_an_error_not_sigbus(assets, tmpfs, tmp_path, capsys):
    disk = tmpfs("1m")
    image = bad._png(tmp_path / "big.png", (np.random.default_rng(0).random((512, 512)) * 255).astype(np.uint8))
    rc, out, err, lines = run_cli(
        ["predict", assets.ckpt, image, "--out", disk / "pred", "--probabilities", "--quiet"], capsys
    )
    _assert_disk_full_line(rc, err, lines, "big")
    assert "needs 2.0 MB" in lines[-1]  # 2 classes x 512 x 512 x float32, reserved up front
    assert len(lines) == 1
    assert not list(disk.iterdir())  # no temp files, not even the folder it made


def test_predict_mask_png_on_a_full_disk(assets, tmpfs, tmp_path, capsys):
    disk = tmpfs("1m")
    image = bad._png(tmp_path / "noise.png", (np.random.default_rng(0).random((1024, 1024)) * 255).astype(np.uint8))
    fill(disk, leave=64 * 1024)
    rc, out, err, lines = run_cli(["predict", assets.ckpt, image, "--out", disk / "pred", "--quiet"], capsys)
    _assert_disk_full_line(rc, err, lines, str(disk))
    assert len(lines) == 1
    assert sorted(p.name for p in disk.iterdir()) == ["filler.bin"]


def test_convert_on_a_full_disk(tmpfs, tmp_path, capsys):
    import torchvision

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)  # 45 MB, a 2 MB disk
    disk = tmpfs("2m")
    rc, out, err, lines = run_cli(
        ["convert", "--arch", "torchvision:resnet18", "--weights", weights, "--out", disk / "fcn"], capsys
    )
    _assert_disk_full_line(rc, err, lines, str(disk))
    assert len(lines) == 1
    assert not list(disk.iterdir())


def test_evaluate_json_on_a_full_disk(assets, tmpfs, capsys):
    disk = tmpfs("1m")
    fill(disk)
    rc, out, err, lines = run_cli(["evaluate", assets.run, "--device", "cpu", "--json", disk / "scores.json"], capsys)
    _assert_disk_full_line(rc, err, lines, str(disk))
    assert len(lines) == 1
    assert sorted(p.name for p in disk.iterdir()) == ["filler.bin"]


def _train_argv(data, out, *extra):
    return ["train", "--data", data, "--device", "cpu", "--batch-size", "2", "--threads", "1", "--out", out, *extra]


def test_train_on_a_full_disk_keeps_the_run_resumable(tmp_path, tmpfs, capsys):
    data = bad.write_dataset(tmp_path / "data", n=4)
    disk = tmpfs("8m")
    run = disk / "run"
    rc, *_ = run_cli(_train_argv(data, run, "--epochs", "1"), capsys)
    assert rc == 0
    before = {name: (run / name / "model.safetensors").read_bytes() for name in ("best", "last")}
    state = (run / "trainer.ckpt").read_bytes()
    filler = fill(disk, leave=16 * 1024)  # too little for the next checkpoint
    rc, out, err, lines = run_cli(["train", "--resume", run, "--epochs", "2"], capsys)
    _assert_disk_full_line(rc, err, lines, str(disk))
    assert not _temps(run), _temps(run)
    for name in ("best", "last"):  # the earlier checkpoints are intact and still load
        assert (run / name / "model.safetensors").read_bytes() == before[name]
    assert (run / "trainer.ckpt").read_bytes() == state
    filler.unlink()
    rc, out, err, _ = run_cli(["train", "--resume", run, "--epochs", "2"], capsys)  # room again: it continues
    assert rc == 0, err[-1500:]
    assert json.loads((run / "last" / "config.json").read_text())["metrics"]["epoch"] == 1


def test_train_first_checkpoint_on_a_full_disk(tmp_path, tmpfs, capsys):
    data = bad.write_dataset(tmp_path / "data", n=4)
    disk = tmpfs("1m")  # allconv width 48: a 3.5 MB checkpoint
    rc, out, err, lines = run_cli(
        _train_argv(data, disk / "run", "--epochs", "1", "--model-option", "width=48"), capsys
    )
    _assert_disk_full_line(rc, err, lines, str(disk))
    assert not _temps(disk / "run"), _temps(disk / "run")
