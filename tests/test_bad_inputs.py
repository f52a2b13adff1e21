"""The bad-input corpus: every subcommand, fed broken files and arguments, answers with exit code 2,
exactly one line on stderr naming what is wrong, no traceback, and nothing new (or changed) in
its output location. Cases run the CLI in-process (``fcnkit.cli.main.main``), a few as a real
subprocess. ``data check`` is a report: its problems go to stdout, so there stderr stays empty.

The files are built by tests/bad_input_files.py. A read-only folder is a read-only tmpfs mount
(CI runs as root, where permission bits do not stop writes); without one those cases are skipped
with the reason printed.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import bad_input_files as bad
from fcnkit.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")


class Ctx:
    """What a case builder gets: the shared assets, its own folder, a read-only folder (or None)."""

    def __init__(self, assets: bad.Assets, tmp: Path, ro: Path | None):
        self.a, self.tmp, self.ro = assets, tmp, ro

    def p(self, name: str) -> Path:
        return self.tmp / name


def _need_ro(t: Ctx) -> Path:
    if t.ro is None:
        pytest.skip("no read-only folder: mounting a read-only tmpfs is not possible here and we run as root")
    return t.ro


def _pred(t: Ctx, run, *inputs, out=None, extra=()):
    out = Path(out) if out is not None else t.p("pred")
    return dict(argv=["predict", str(run), *map(str, inputs or [t.a.image]), "--out", str(out), "--quiet", *extra], out=out)


def _ckpt(t: Ctx, edit=None, weights=None):
    return t.a.checkpoint_with(t.p("ck"), edit, weights)


def _train(t: Ctx, *extra, data=None, out=None):
    out = Path(out) if out is not None else t.p("run")
    argv = ["train", "--data", str(data or t.a.data), "--model-option", "width=4", "--model-option", "stages=2",
            "--epochs", "1", "--device", "cpu", "--out", str(out), *map(str, extra)]
    return dict(argv=argv, out=out)


def _data(t: Ctx, edit):
    return t.a.dataset_with(t.p("ds"), edit)


def _eval(t: Ctx, *extra, run=None, json_out=None):
    argv = ["evaluate", str(run or t.a.run), "--device", "cpu", *map(str, extra)]
    if json_out is not None:
        argv += ["--json", str(json_out)]
    return dict(argv=argv, out=Path(json_out) if json_out is not None else None)


def _convert(t: Ctx, weights, *extra, out=None, arch="torchvision:resnet18"):
    out = Path(out) if out is not None else t.p("conv")
    return dict(argv=["convert", "--arch", arch, "--weights", str(weights), "--out", str(out), *map(str, extra)], out=out)


def _resnet_like(t: Ctx, head_only=False, **extra) -> Path:
    """A state dict with resnet18's head name (fc.weight) but nothing else: cheap, and enough to
    get past the head check where a case needs that."""
    state = {"fc.weight": torch.zeros(3, 512), "fc.bias": torch.zeros(3), **extra}
    torch.save(state, t.p("w.pth"))
    return t.p("w.pth")


def _one_inf(state):
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("inf")


def _set(key, value):
    def edit(config):
        config[key] = value
    return edit


def _norm(mean, std):
    def edit(config):
        config["normalization"] = {"mean": mean, "std": std}
    return edit


def _mask(stem, array, mode=None, suffix=".png"):
    def edit(folder):
        (folder / "masks" / f"{stem}.png").unlink()
        if suffix == ".png":
            bad._png(folder / "masks" / f"{stem}.png", array, mode)
        else:
            bad.tiff(folder / "masks" / f"{stem}{suffix}", array)
    return edit


def _image(stem, writer):
    def edit(folder):
        (folder / "images" / f"{stem}.png").unlink()
        writer(folder / "images", stem)
    return edit


_WRONG_SIZE = np.zeros((8, 8), np.uint8)
_RGB = np.zeros((16, 16, 3), np.uint8)
_LABEL_1000 = np.where(np.eye(16, dtype=bool), 1000, 0).astype(np.uint16)
_LABEL_7 = np.where(np.eye(16, dtype=bool), 7, 0).astype(np.uint8)

# (id, build(ctx) -> {"argv", "out"}, text the one line must contain)
CASES = [
    # --- predict: checkpoints --------------------------------------------------------------------
    ("predict-run-missing", lambda t: _pred(t, t.p("nope")), "no such run"),
    ("predict-run-empty", lambda t: _pred(t, bad.user_folder(t.p("empty"))), "no checkpoint here"),
    ("predict-config-not-json", lambda t: _pred(t, _ckpt(t, lambda c: "{not json")), "unreadable checkpoint config"),
    ("predict-config-binary", lambda t: _pred(t, _ckpt(t, lambda c: b"\xff\xfe\x00garbage")), "unreadable checkpoint config"),
    ("predict-config-list", lambda t: _pred(t, _ckpt(t, lambda c: "[1, 2]")), "not an fcnkit checkpoint"),
    ("predict-config-no-format", lambda t: _pred(t, _ckpt(t, _set("format", "other"))), "not an fcnkit checkpoint"),
    ("predict-model-string", lambda t: _pred(t, _ckpt(t, _set("model", "allconv"))), "'model' must be"),
    ("predict-model-unknown", lambda t: _pred(t, _ckpt(t, lambda c: c["model"].update(name="nosuchnet"))), "nosuchnet"),
    ("predict-model-kwarg-unknown", lambda t: _pred(t, _ckpt(t, lambda c: c["model"]["kwargs"].update(bogus=1))), "bogus"),
    ("predict-mean-length", lambda t: _pred(t, _ckpt(t, _norm([0.1, 0.2, 0.3], [0.25]))), "normalization mean has 3"),
    ("predict-std-length", lambda t: _pred(t, _ckpt(t, _norm([0.1], [0.2, 0.2]))), "normalization std has 2"),
    ("predict-std-zero", lambda t: _pred(t, _ckpt(t, _norm([0.1], [0.0]))), "std must be > 0"),
    ("predict-mean-string", lambda t: _pred(t, _ckpt(t, _norm("abc", [1.0]))), "finite numbers"),
    ("predict-num-classes-vs-spec", lambda t: _pred(t, _ckpt(t, _set("num_classes", 5))), "num_classes' is 5"),
    ("predict-num-classes-vs-weights", lambda t: _pred(t, _ckpt(t, lambda c: (c.update(num_classes=5), c["model"]["kwargs"].update(num_classes=5), c.update(classes=list("abcde")))[-1])), "weights do not fit"),
    ("predict-in-channels-string", lambda t: _pred(t, _ckpt(t, _set("in_channels", "one"))), "in_channels' must be"),
    ("predict-num-classes-zero", lambda t: _pred(t, _ckpt(t, _set("num_classes", 0))), "num_classes' must be"),
    ("predict-classes-length", lambda t: _pred(t, _ckpt(t, _set("classes", ["only-one"]))), "'classes' must list 2"),
    ("predict-weights-truncated", lambda t: _pred(t, _ckpt(t, weights=lambda s: b"\x10\x00\x00\x00\x00\x00\x00\x00{")), "corrupt or truncated"),
    ("predict-weights-empty", lambda t: _pred(t, _ckpt(t, weights=lambda s: b"")), "corrupt or truncated"),
    ("predict-weights-nan", lambda t: _pred(t, _ckpt(t, weights=lambda s: {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in s.items()})), "NaN/inf"),
    ("predict-weights-one-inf", lambda t: _pred(t, _ckpt(t, weights=_one_inf)), "NaN/inf"),
    ("predict-weights-missing-tensor", lambda t: _pred(t, _ckpt(t, weights=lambda s: {k: v for k, v in s.items() if k != next(iter(n for n, w in s.items() if w.is_floating_point()))})), "weights do not fit"),
    ("predict-weights-wrong-shape", lambda t: _pred(t, _ckpt(t, weights=lambda s: {k: v[:1] if v.dim() > 0 and v.shape[0] > 1 else v for k, v in s.items()})), "weights do not fit"),
    ("predict-classification-ckpt", lambda t: _pred(t, _ckpt(t, _set("task", "classification"))), "classification"),
    # --- predict: inputs -------------------------------------------------------------------------
    ("predict-input-missing", lambda t: _pred(t, t.a.ckpt, t.p("none.png")), "input image not found"),
    ("predict-input-empty-folder", lambda t: _pred(t, t.a.ckpt, bad.user_folder(t.p("in"))), "no images"),
    ("predict-input-garbage-png", lambda t: _pred(t, t.a.ckpt, bad.garbage(t.p("x.png"))), "cannot decode"),
    ("predict-input-truncated-png", lambda t: _pred(t, t.a.ckpt, bad.truncated(t.p("x.png"), t.a.image)), "cannot decode"),
    ("predict-input-empty-png", lambda t: _pred(t, t.a.ckpt, bad.garbage(t.p("x.png"), 0)), "cannot decode"),
    ("predict-input-garbage-jpeg", lambda t: _pred(t, t.a.ckpt, bad.garbage(t.p("x.jpg"))), "cannot decode"),
    ("predict-input-png-bomb", lambda t: _pred(t, t.a.ckpt, bad.png_bomb(t.p("bomb.png"))), "--tile"),
    ("predict-input-garbage-tiff", lambda t: _pred(t, t.a.ckpt, bad.garbage(t.p("x.tif"))), "cannot decode TIFF"),
    ("predict-input-truncated-tiff", lambda t: _pred(t, t.a.ckpt, bad.truncated(t.p("x.tif"), bad.tiff(t.p("src.tif"), np.zeros((64, 64), np.uint8), compression="zlib"), 0.3)), "TIFF"),
    ("predict-input-tiff-bomb", lambda t: _pred(t, t.a.ckpt, bad.tiff(t.p("big.tif"), np.zeros((64, 64), np.uint8), compression="zlib")), "--tile"),
    ("predict-input-nan-tiff", lambda t: _pred(t, t.a.ckpt, bad.float_tiff(t.p("nan.tif"), float("nan"))), "NaN or inf"),
    ("predict-input-inf-tiff", lambda t: _pred(t, t.a.ckpt, bad.float_tiff(t.p("inf.tif"), float("inf"))), "NaN or inf"),
    ("predict-input-neg-inf-tiff", lambda t: _pred(t, t.a.ckpt, bad.float_tiff(t.p("inf.tif"), float("-inf"))), "NaN or inf"),
    ("predict-input-5d-tiff", lambda t: _pred(t, t.a.ckpt, bad.tiff(t.p("v.tif"), np.zeros((2, 3, 8, 8, 2), np.uint8))), "TIFF has shape"),
    ("predict-input-5-channels", lambda t: _pred(t, t.a.ckpt, bad.tiff(t.p("c.tif"), np.zeros((16, 16, 6), np.uint8), photometric="minisblack", planarconfig="contig")), "channels"),
    ("predict-input-same-stem", lambda t: _pred(t, t.a.ckpt, t.a.image, bad._png(t.p("d/good.png"), np.zeros((8, 8), np.uint8))), "collide"),
    # --- predict: output and options -------------------------------------------------------------
    ("predict-out-is-file", lambda t: _pred(t, t.a.ckpt, out=bad.garbage(t.p("out.txt"))), "existing file"),
    ("predict-out-user-folder", lambda t: _pred(t, t.a.ckpt, out=bad.user_folder(t.p("mine"))), "did not write"),
    ("predict-out-run-folder", lambda t: _pred(t, t.a.ckpt, out=(t.a.run_with(t.p("r")), (t.p("r") / ".fcnkit").write_text('{"kind": "run"}'))[0]), "not predictions"),
    ("predict-out-read-only", lambda t: _pred(t, t.a.ckpt, out=_need_ro(t) / "pred"), "not writable"),
    ("predict-out-under-file", lambda t: _pred(t, t.a.ckpt, out=bad.garbage(t.p("f")) / "pred"), "is a file"),
    ("predict-device-bogus", lambda t: _pred(t, t.a.ckpt, extra=["--device", "bogus"]), "--device 'bogus'"),
    ("predict-device-tpu", lambda t: _pred(t, t.a.ckpt, extra=["--device", "meta"]), "cpu or cuda"),
    ("predict-device-cuda-missing", lambda t: _pred(t, t.a.ckpt, extra=["--device", "cuda" if not torch.cuda.is_available() else "cuda:99"]), "--device cuda"),
    ("predict-tile-word", lambda t: _pred(t, t.a.ckpt, extra=["--tile", "big"]), "tile size"),
    ("predict-blend-bogus", lambda t: _pred(t, t.a.ckpt, extra=["--blend", "median"]), "invalid choice"),
    ("predict-overlap-word", lambda t: _pred(t, t.a.ckpt, extra=["--overlap", "half"]), "invalid float"),
    ("predict-no-out", lambda t: dict(argv=["predict", str(t.a.ckpt), str(t.a.image)], out=None), "--out"),
    # --- evaluate ----------------------------------------------------------------------------------
    ("evaluate-run-missing", lambda t: _eval(t, run=t.p("nope")), "no such run"),
    ("evaluate-run-empty", lambda t: _eval(t, run=bad.user_folder(t.p("e"))), "no checkpoint here"),
    ("evaluate-json-directory", lambda t: _eval(t, json_out=bad.user_folder(t.p("j"))), "is a folder"),
    ("evaluate-json-foreign-file", lambda t: _eval(t, json_out=bad.garbage(t.p("notes.json"))), "not written by fcnkit"),
    ("evaluate-json-read-only", lambda t: _eval(t, json_out=_need_ro(t) / "s.json"), "not writable"),
    ("evaluate-json-under-file", lambda t: _eval(t, json_out=bad.garbage(t.p("f")) / "s.json"), "is a file"),
    ("evaluate-device-bogus", lambda t: _eval(t, "--device", "bogus"), "--device 'bogus'"),
    ("evaluate-device-cuda-missing", lambda t: _eval(t, "--device", "cuda" if not torch.cuda.is_available() else "cuda:99"), "--device cuda"),
    ("evaluate-data-missing", lambda t: _eval(t, "--data", t.p("nodata")), "not found"),
    ("evaluate-data-unknown", lambda t: _eval(t, "--data", "imagenett"), "unknown dataset"),
    ("evaluate-split-bogus", lambda t: _eval(t, "--split", "validation"), "validation"),
    ("evaluate-batch-zero", lambda t: _eval(t, "--batch-size", "0"), "batch_size"),
    ("evaluate-no-train-data", lambda t: _eval(t, run=_ckpt(t, _set("train", {}))), "--data"),
    ("evaluate-classes-mismatch", lambda t: _eval(t, "--data", t.a.dataset_with(t.p("d3"), lambda f: (f / "classes.txt").write_text("a\nb\nc\n"))), "classes"),
    ("evaluate-nan-weights", lambda t: _eval(t, run=_ckpt(t, weights=lambda s: {k: v * float("nan") if v.is_floating_point() else v for k, v in s.items()})), "NaN/inf"),
    ("evaluate-bad-mask", lambda t: _eval(t, "--data", _data(t, _mask("s2", _RGB))), "mode RGB"),
    # --- train: config and flags -------------------------------------------------------------------
    ("train-config-missing", lambda t: {**_train(t), "argv": ["train", "--config", str(t.p("none.yaml")), "--out", str(t.p("run"))]}, "config file not found"),
    ("train-config-binary", lambda t: _train(t, "--config", bad.garbage(t.p("c.yaml"))), "not a text file"),
    ("train-config-invalid-yaml", lambda t: (t.p("c.yaml").write_text("epochs: [1, 2\n"), _train(t, "--config", t.p("c.yaml")))[1], "not valid YAML"),
    ("train-config-list", lambda t: (t.p("c.yaml").write_text("- 1\n- 2\n"), _train(t, "--config", t.p("c.yaml")))[1], "expected a mapping"),
    ("train-config-unknown-key", lambda t: (t.p("c.yaml").write_text("epoch: 3\n"), _train(t, "--config", t.p("c.yaml")))[1], "epoch"),
    ("train-epochs-zero", lambda t: _train(t, "--epochs", "0"), "epochs"),
    ("train-epochs-word", lambda t: _train(t, "--epochs", "ten"), "epochs"),
    ("train-lr-negative", lambda t: _train(t, "--lr", "-1"), "lr"),
    ("train-optimizer-bogus", lambda t: _train(t, "--optimizer", "adamw2"), "optimizer"),
    ("train-precision-bogus", lambda t: _train(t, "--precision", "8"), "precision"),
    ("train-precision-16-on-cpu", lambda t: _train(t, "--precision", "16-mixed"), "16-mixed"),
    ("train-device-bogus", lambda t: _train(t, "--device", "bogus"), "device"),
    ("train-device-cuda-missing", lambda t: _train(t, "--device", "cuda") if not torch.cuda.is_available() else pytest.skip("a GPU is visible"), "cuda"),
    ("train-model-unknown", lambda t: _train(t, "--model", "unet9000"), "unet9000"),
    ("train-model-option-unknown", lambda t: _train(t, "--model-option", "bogus=1"), "bogus"),
    ("train-data-option-no-equals", lambda t: _train(t, "--data-option", "count"), "KEY=VALUE"),
    ("train-regime-bogus", lambda t: _train(t, "--regime", "fullimage"), "regime"),
    ("train-weights-missing", lambda t: _train(t, "--weights", t.p("none.pth")), "weights file not found"),
    ("train-init-from-missing", lambda t: _train(t, "--init-from", t.p("none")), "no such run"),
    ("train-task-mismatch", lambda t: _train(t, "--task", "classification"), "classification"),
    # --- train: data validated before training -------------------------------------------------------
    ("train-data-missing", lambda t: _train(t, data=t.p("nodata")), "not found"),
    ("train-data-unknown-name", lambda t: _train(t, data="digitz"), "unknown dataset"),
    ("train-data-unknown-layout", lambda t: _train(t, data=bad.user_folder(t.p("stuff"))), "unknown dataset layout"),
    ("train-label-1000-16bit", lambda t: _train(t, data=_data(t, lambda f: ((f / "classes.txt").unlink(), _mask("s0", _LABEL_1000, suffix=".tif")(f)))), "label 1000"),
    ("train-label-outside-classes-in-val", lambda t: _train(t, data=_data(t, _mask("s3", _LABEL_7))), "labels 7"),
    ("train-label-outside-classes-in-train", lambda t: _train(t, data=_data(t, _mask("s1", _LABEL_7))), "labels 7"),
    ("train-mask-size-mismatch-val", lambda t: _train(t, data=_data(t, _mask("s2", _WRONG_SIZE))), "8x8"),
    ("train-mask-rgb", lambda t: _train(t, data=_data(t, _mask("s3", _RGB))), "mode RGB"),
    ("train-mask-garbage", lambda t: _train(t, data=_data(t, lambda f: bad.garbage(f / "masks" / "s3.png"))), "cannot decode mask"),
    ("train-image-garbage", lambda t: _train(t, data=_data(t, lambda f: bad.garbage(f / "images" / "s3.png"))), "cannot decode"),
    ("train-image-nan-tiff", lambda t: _train(t, data=_data(t, _image("s3", lambda d, s: bad.float_tiff(d / f"{s}.tif", float("nan"))))), "NaN or inf"),
    ("train-image-symlink-loop", lambda t: _train(t, data=_data(t, _image("s3", lambda d, s: bad.symlink_loop(d, f"{s}.png")))), "symlink loop"),
    ("train-image-without-mask", lambda t: _train(t, data=_data(t, lambda f: (f / "masks" / "s3.png").unlink())), "has no mask"),
    ("train-empty-train-split", lambda t: _train(t, data=_data(t, lambda f: (f / "train.txt").write_text(""))), "empty"),
    ("train-classes-txt-one-name", lambda t: _train(t, data=_data(t, lambda f: (f / "classes.txt").write_text("only\n"))), "class name"),
    # --- train: output folder and resume --------------------------------------------------------------
    ("train-out-is-file", lambda t: _train(t, out=bad.garbage(t.p("run.txt"))), "existing file"),
    ("train-out-user-folder", lambda t: _train(t, out=bad.user_folder(t.p("mine"))), "did not write"),
    ("train-out-user-folder-overwrite", lambda t: _train(t, "--overwrite", out=bad.user_folder(t.p("mine"))), "did not write"),
    ("train-out-holds-run", lambda t: _train(t, out=t.a.run_with(t.p("r"))), "already holds a run"),
    ("train-out-read-only", lambda t: _train(t, out=_need_ro(t) / "run"), "not writable"),
    ("train-out-predictions", lambda t: _train(t, out=(t.p("pr").mkdir(), (t.p("pr") / ".fcnkit").write_text('{"kind": "predictions"}'), t.p("pr"))[2]), "not a run"),
    ("train-resume-missing", lambda t: dict(argv=["train", "--resume", str(t.p("nope"))], out=t.p("nope")), "no run to resume"),
    ("train-resume-user-folder", lambda t: dict(argv=["train", "--resume", str(bad.user_folder(t.p("u")))], out=t.p("u")), "no run to resume"),
    ("train-resume-truncated-state", lambda t: (lambda r: dict(argv=["train", "--resume", str(r)], out=r))(t.a.run_with(t.p("r"), trainer_bytes=(t.a.run / "trainer.ckpt").read_bytes()[:300])), "cannot read the trainer state"),
    ("train-resume-garbage-state", lambda t: (lambda r: dict(argv=["train", "--resume", str(r)], out=r))(t.a.run_with(t.p("r"), trainer_bytes=b"\x80\x04garbage")), "cannot read the trainer state"),
    ("train-resume-malicious-state", lambda t: (lambda r: dict(argv=["train", "--resume", str(r)], out=r))(t.a.run_with(t.p("r"), trainer_obj={"state_dict": {}, "x": bad.Evil(t.p("pwned"))})), "cannot read the trainer state"),
    ("train-resume-not-a-state", lambda t: (lambda r: dict(argv=["train", "--resume", str(r)], out=r))(t.a.run_with(t.p("r"), trainer_obj=[1, 2, 3])), "not a Lightning trainer state"),
    ("train-resume-binary-config", lambda t: (lambda r: (bad.garbage(r / "config.yaml"), dict(argv=["train", "--resume", str(r)], out=r))[1])(t.a.run_with(t.p("r"))), "not a text file"),
    # --- convert ------------------------------------------------------------------------------------
    ("convert-weights-missing", lambda t: _convert(t, t.p("none.pth")), "no such weights file"),
    ("convert-weights-garbage", lambda t: _convert(t, bad.garbage(t.p("w.pth"))), "cannot read a state dict"),
    ("convert-weights-empty", lambda t: _convert(t, bad.garbage(t.p("w.pth"), 0)), "cannot read a state dict"),
    ("convert-weights-malicious", lambda t: (torch.save({"fc.weight": bad.Evil(t.p("pwned"))}, t.p("w.pth")), _convert(t, t.p("w.pth")))[1], "cannot read a state dict"),
    ("convert-weights-truncated", lambda t: _convert(t, bad.truncated(t.p("w.pth"), _resnet_like(t), 0.4)), "cannot read a state dict"),
    ("convert-weights-list", lambda t: (torch.save([torch.zeros(2)], t.p("w.pth")), _convert(t, t.p("w.pth")))[1], "not a state dict"),
    ("convert-weights-safetensors-garbage", lambda t: _convert(t, bad.garbage(t.p("w.safetensors"))), "cannot read a state dict"),
    ("convert-arch-unknown", lambda t: _convert(t, _resnet_like(t), arch="torchvision:resnet9000"), "resnet9000"),
    ("convert-arch-no-prefix", lambda t: _convert(t, _resnet_like(t), arch="vgg16"), "vgg16"),
    ("convert-weights-other-arch", lambda t: _convert(t, _resnet_like(t), arch="torchvision:alexnet"), "not a torchvision:alexnet"),
    ("convert-weights-trunk-missing", lambda t: _convert(t, _resnet_like(t)), "resnet18"),
    ("convert-num-classes-zero", lambda t: _convert(t, _resnet_like(t), "--num-classes", "0"), "--num-classes 0"),
    ("convert-num-classes-negative", lambda t: _convert(t, _resnet_like(t), "--num-classes", "-3"), "--num-classes -3"),
    ("convert-out-is-file", lambda t: _convert(t, _resnet_like(t), out=bad.garbage(t.p("ck.bin"))), "existing file"),
    ("convert-out-user-folder", lambda t: _convert(t, _resnet_like(t), out=bad.user_folder(t.p("mine"))), "did not write"),
    ("convert-out-user-folder-overwrite", lambda t: _convert(t, _resnet_like(t), "--overwrite", out=bad.user_folder(t.p("mine"))), "did not write"),
    ("convert-out-checkpoint-no-overwrite", lambda t: _convert(t, _resnet_like(t), out=_ckpt(t)), "--overwrite"),
    ("convert-out-checkpoint-plus-user-file", lambda t: _convert(t, _resnet_like(t), "--overwrite", out=(lambda c: (bad.user_folder(c), c)[1])(_ckpt(t))), "did not write"),
    ("convert-out-read-only", lambda t: _convert(t, _resnet_like(t), out=_need_ro(t) / "conv"), "not writable"),
    # --- data ---------------------------------------------------------------------------------------
    ("data-info-missing", lambda t: dict(argv=["data", "info", str(t.p("nodata"))], out=None), "not found"),
    ("data-info-unknown", lambda t: dict(argv=["data", "info", "nucleus"], out=None), "nucleus"),
    ("data-info-bad-layout", lambda t: dict(argv=["data", "info", str(bad.user_folder(t.p("u")))], out=None), "unknown dataset layout"),
    ("data-check-num-classes-word", lambda t: dict(argv=["data", "check", str(t.a.data), "--num-classes", "two"], out=None), "invalid int"),
    # --- rf, models, experiment, demo --------------------------------------------------------------------
    ("rf-model-unknown", lambda t: dict(argv=["rf", "allconvv"], out=None), "allconvv"),
    ("rf-run-broken", lambda t: dict(argv=["rf", str(_ckpt(t, _set("model", "allconv")))], out=None), "'model' must be"),
    ("rf-input-size-word", lambda t: dict(argv=["rf", "allconv", "--input-size", "a", "b"], out=None), "invalid int"),
    ("models-task-bogus", lambda t: dict(argv=["models", "--task", "detection"], out=None), "invalid choice"),
    ("experiment-unknown", lambda t: dict(argv=["experiment", "samplingg", "--out", str(t.p("ex"))], out=t.p("ex")), "samplingg"),
    ("experiment-out-is-file", lambda t: dict(argv=["experiment", "sampling", "--out", str(bad.garbage(t.p("ex.txt")))], out=t.p("ex.txt")), "existing file"),
    ("experiment-out-user-folder", lambda t: dict(argv=["experiment", "sampling", "--out", str(bad.user_folder(t.p("ex")))], out=t.p("ex")), "did not write"),
    ("experiment-out-read-only", lambda t: dict(argv=["experiment", "sampling", "--out", str(_need_ro(t) / "ex")], out=None), "not writable"),
    ("experiment-device-cuda-missing", lambda t: dict(argv=["experiment", "sampling", "--device", "cuda", "--out", str(t.p("ex"))], out=t.p("ex")) if not torch.cuda.is_available() else pytest.skip("a GPU is visible"), "cuda"),
    ("experiment-datasets-grad-eq", lambda t: dict(argv=["experiment", "gradient-equivalence", "--datasets", "x", "--out", str(t.p("ex"))], out=t.p("ex")), "--datasets"),
    ("demo-config-missing", lambda t: dict(argv=["demo", "--config", str(t.p("none.yaml")), "--out", str(t.p("demo"))], out=t.p("demo")), "not found"),
    ("demo-config-binary", lambda t: dict(argv=["demo", "--config", str(bad.garbage(t.p("c.yaml"))), "--out", str(t.p("demo"))], out=t.p("demo")), "not a text file"),
    ("demo-out-user-folder", lambda t: dict(argv=["demo", "--out", str(bad.user_folder(t.p("demo"))), "--device", "cpu"], out=t.p("demo")), "did not write"),
    ("demo-device-bogus", lambda t: dict(argv=["demo", "--device", "bogus", "--out", str(t.p("demo"))], out=t.p("demo")), "device"),
    ("unknown-command", lambda t: dict(argv=["segment", "x"], out=None), "invalid choice"),
]


def _snapshot(path: Path | None):
    if path is None or not os.path.lexists(path):
        return None
    if not path.is_dir():
        return ("file", hashlib.sha1(path.read_bytes()).hexdigest())
    return sorted((str(p.relative_to(path)), p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns if p.exists() else 0)
                  for p in path.rglob("*"))


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return bad.Assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """A read-only folder: a read-only tmpfs where we can mount one, else (not root) a chmod 555 folder."""
    folder = tmp_path_factory.mktemp("ro")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True, text=True)
    if made.returncode == 0:
        yield folder
        subprocess.run(["umount", str(folder)], check=False)
        return
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    print(f"read-only cases skipped: cannot mount a read-only tmpfs ({made.stderr.strip()}) and root ignores chmod")
    yield None


RESULTS: dict[str, bool] = {}


@pytest.mark.parametrize("case_id,build,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_answered_in_one_line(case_id, build, expect, assets, read_only, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("fcnkit.data.io.TIFF_MAX_DECODED_PIXELS", 1000)  # the 64x64 zlib TIFF stands for 30000x30000
    RESULTS[case_id] = False
    case = build(Ctx(assets, tmp_path, read_only))
    before = _snapshot(case["out"])
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:  # a user would see each warning on stderr too
        warnings.simplefilter("always")
        try:
            rc = main(case["argv"])
        except SystemExit as exc:  # argparse's usage errors (also one line: fcnkit.cli.main._Parser)
            rc = exc.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()] + [f"warning: {w.message}" for w in caught]
    assert "Traceback" not in out + err
    assert rc == 2, f"exit {rc}; stderr: {err[-500:]}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {err[-800:]}"
    assert expect in lines[0], lines[0]
    assert _snapshot(case["out"]) == before, "the output location changed"
    assert not (tmp_path / "pwned").exists(), "something was unpickled"
    RESULTS[case_id] = True


def test_zz_corpus_size_and_count():
    """At least 100 cases; prints answered/total (the -s output or the report uses it)."""
    assert len(CASES) >= 100
    answered = sum(RESULTS.values())
    print(f"\nbad-input corpus: {answered}/{len(RESULTS)} answered correctly (exit 2, one line, no traceback, "
          "output untouched)")


@pytest.mark.parametrize("argv_of", [
    lambda a, tmp: ["predict", str(a.ckpt), str(bad.png_bomb(tmp / "bomb.png")), "--out", str(tmp / "p")],
    lambda a, tmp: ["convert", "--arch", "torchvision:resnet18", "--weights", str(a.weights), "--num-classes", "0",
                    "--out", str(tmp / "c")],
    lambda a, tmp: ["evaluate", str(a.run), "--json", str(tmp), "--device", "cpu"],
], ids=["predict-bomb", "convert-num-classes-0", "evaluate-json-dir"])
def test_bad_input_as_a_real_process(argv_of, assets, tmp_path):
    """The same answer from a real ``python -m fcnkit`` (warnings, logging and exit code as users see them)."""
    assets.weights.write_bytes(b"")
    argv = argv_of(assets, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "fcnkit", *argv], capture_output=True, text=True, env=env, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-800:]
    assert lines[0].startswith("fcnkit: ")
    assert not (tmp_path / "p").exists() and not (tmp_path / "c").exists()
    json.dumps(lines)  # printable
