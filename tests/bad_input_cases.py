"""The bad-input corpus, part 1: case builders, and the predict, evaluate and convert cases.

Each case is ``(id, build(ctx) -> {"argv": [...], "out": Path | None}, text the one line must contain)``;
``out`` is the output location that must be left as it was. Run by tests/test_bad_inputs.py.
"""

from __future__ import annotations

from pathlib import Path

import bad_input_files as bad
import numpy as np
import pytest
import torch


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
    return dict(
        argv=["predict", str(run), *map(str, inputs or [t.a.image]), "--out", str(out), "--quiet", *extra], out=out
    )


def _ckpt(t: Ctx, edit=None, weights=None):
    return t.a.checkpoint_with(t.p("ck"), edit, weights)


def _train(t: Ctx, *extra, data=None, out=None):
    out = Path(out) if out is not None else t.p("run")
    argv = [
        "train",
        "--data",
        str(data or t.a.data),
        "--model-option",
        "width=4",
        "--model-option",
        "stages=2",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
        *map(str, extra),
    ]
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
    return dict(
        argv=["convert", "--arch", arch, "--weights", str(weights), "--out", str(out), *map(str, extra)], out=out
    )


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

CASES = [
    # --- predict: checkpoints --------------------------------------------------------------------
    ("predict-run-missing", lambda t: _pred(t, t.p("nope")), "no such run"),
    ("predict-run-empty", lambda t: _pred(t, bad.user_folder(t.p("empty"))), "no checkpoint here"),
    ("predict-config-not-json", lambda t: _pred(t, _ckpt(t, lambda c: "{not json")), "unreadable checkpoint config"),
    (
        "predict-config-binary",
        lambda t: _pred(t, _ckpt(t, lambda c: b"\xff\xfe\x00garbage")),
        "unreadable checkpoint config",
    ),
    ("predict-config-list", lambda t: _pred(t, _ckpt(t, lambda c: "[1, 2]")), "not an fcnkit checkpoint"),
    ("predict-config-no-format", lambda t: _pred(t, _ckpt(t, _set("format", "other"))), "not an fcnkit checkpoint"),
    ("predict-model-string", lambda t: _pred(t, _ckpt(t, _set("model", "allconv"))), "'model' must be"),
    ("predict-model-unknown", lambda t: _pred(t, _ckpt(t, lambda c: c["model"].update(name="nosuchnet"))), "nosuchnet"),
    (
        "predict-model-kwarg-unknown",
        lambda t: _pred(t, _ckpt(t, lambda c: c["model"]["kwargs"].update(bogus=1))),
        "bogus",
    ),
    ("predict-mean-length", lambda t: _pred(t, _ckpt(t, _norm([0.1, 0.2, 0.3], [0.25]))), "normalization mean has 3"),
    ("predict-std-length", lambda t: _pred(t, _ckpt(t, _norm([0.1], [0.2, 0.2]))), "normalization std has 2"),
    ("predict-std-zero", lambda t: _pred(t, _ckpt(t, _norm([0.1], [0.0]))), "std must be > 0"),
    ("predict-mean-string", lambda t: _pred(t, _ckpt(t, _norm("abc", [1.0]))), "finite numbers"),
    ("predict-num-classes-vs-spec", lambda t: _pred(t, _ckpt(t, _set("num_classes", 5))), "num_classes' is 5"),
    (
        "predict-num-classes-vs-weights",
        lambda t: _pred(
            t,
            _ckpt(
                t,
                lambda c: (
                    c.update(num_classes=5),
                    c["model"]["kwargs"].update(num_classes=5),
                    c.update(classes=list("abcde")),
                )[-1],
            ),
        ),
        "weights do not fit",
    ),
    ("predict-in-channels-string", lambda t: _pred(t, _ckpt(t, _set("in_channels", "one"))), "in_channels' must be"),
    ("predict-num-classes-zero", lambda t: _pred(t, _ckpt(t, _set("num_classes", 0))), "num_classes' must be"),
    ("predict-classes-length", lambda t: _pred(t, _ckpt(t, _set("classes", ["only-one"]))), "'classes' must list 2"),
    (
        "predict-weights-truncated",
        lambda t: _pred(t, _ckpt(t, weights=lambda s: b"\x10\x00\x00\x00\x00\x00\x00\x00{")),
        "corrupt or truncated",
    ),
    ("predict-weights-empty", lambda t: _pred(t, _ckpt(t, weights=lambda s: b"")), "corrupt or truncated"),
    (
        "predict-weights-nan",
        lambda t: _pred(
            t,
            _ckpt(
                t,
                weights=lambda s: {
                    k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in s.items()
                },
            ),
        ),
        "NaN/inf",
    ),
    ("predict-weights-one-inf", lambda t: _pred(t, _ckpt(t, weights=_one_inf)), "NaN/inf"),
    (
        "predict-weights-missing-tensor",
        lambda t: _pred(
            t,
            _ckpt(
                t,
                weights=lambda s: {
                    k: v for k, v in s.items() if k != next(iter(n for n, w in s.items() if w.is_floating_point()))
                },
            ),
        ),
        "weights do not fit",
    ),
    (
        "predict-weights-wrong-shape",
        lambda t: _pred(
            t, _ckpt(t, weights=lambda s: {k: v[:1] if v.dim() > 0 and v.shape[0] > 1 else v for k, v in s.items()})
        ),
        "weights do not fit",
    ),
    ("predict-classification-ckpt", lambda t: _pred(t, _ckpt(t, _set("task", "classification"))), "classification"),
    # --- predict: inputs -------------------------------------------------------------------------
    ("predict-input-missing", lambda t: _pred(t, t.a.ckpt, t.p("none.png")), "input image not found"),
    ("predict-input-empty-folder", lambda t: _pred(t, t.a.ckpt, bad.user_folder(t.p("in"))), "no images"),
    ("predict-input-garbage-png", lambda t: _pred(t, t.a.ckpt, bad.garbage(t.p("x.png"))), "cannot decode"),
    (
        "predict-input-truncated-png",
        lambda t: _pred(t, t.a.ckpt, bad.truncated(t.p("x.png"), t.a.image)),
        "cannot decode",
    ),
    ("predict-input-empty-png", lambda t: _pred(t, t.a.ckpt, bad.garbage(t.p("x.png"), 0)), "cannot decode"),
    ("predict-input-garbage-jpeg", lambda t: _pred(t, t.a.ckpt, bad.garbage(t.p("x.jpg"))), "cannot decode"),
    ("predict-input-png-bomb", lambda t: _pred(t, t.a.ckpt, bad.png_bomb(t.p("bomb.png"))), "--tile"),
    ("predict-input-garbage-tiff", lambda t: _pred(t, t.a.ckpt, bad.garbage(t.p("x.tif"))), "cannot decode TIFF"),
    (
        "predict-input-truncated-tiff",
        lambda t: _pred(
            t,
            t.a.ckpt,
            bad.truncated(
                t.p("x.tif"), bad.tiff(t.p("src.tif"), np.zeros((64, 64), np.uint8), compression="zlib"), 0.3
            ),
        ),
        "TIFF",
    ),
    (
        "predict-input-tiff-bomb",
        lambda t: _pred(t, t.a.ckpt, bad.tiff(t.p("big.tif"), np.zeros((64, 64), np.uint8), compression="zlib")),
        "--tile",
    ),
    (
        "predict-input-nan-tiff",
        lambda t: _pred(t, t.a.ckpt, bad.float_tiff(t.p("nan.tif"), float("nan"))),
        "NaN or inf",
    ),
    (
        "predict-input-inf-tiff",
        lambda t: _pred(t, t.a.ckpt, bad.float_tiff(t.p("inf.tif"), float("inf"))),
        "NaN or inf",
    ),
    (
        "predict-input-neg-inf-tiff",
        lambda t: _pred(t, t.a.ckpt, bad.float_tiff(t.p("inf.tif"), float("-inf"))),
        "NaN or inf",
    ),
    (
        "predict-input-5d-tiff",
        lambda t: _pred(t, t.a.ckpt, bad.tiff(t.p("v.tif"), np.zeros((2, 3, 8, 8, 2), np.uint8))),
        "TIFF has shape",
    ),
    (
        "predict-input-5-channels",
        lambda t: _pred(
            t,
            t.a.ckpt,
            bad.tiff(t.p("c.tif"), np.zeros((16, 16, 6), np.uint8), photometric="minisblack", planarconfig="contig"),
        ),
        "channels",
    ),
    (
        "predict-input-same-stem",
        lambda t: _pred(t, t.a.ckpt, t.a.image, bad._png(t.p("d/good.png"), np.zeros((8, 8), np.uint8))),
        "collide",
    ),
    # --- predict: output and options -------------------------------------------------------------
    ("predict-out-is-file", lambda t: _pred(t, t.a.ckpt, out=bad.garbage(t.p("out.txt"))), "existing file"),
    ("predict-out-user-folder", lambda t: _pred(t, t.a.ckpt, out=bad.user_folder(t.p("mine"))), "did not write"),
    (
        "predict-out-run-folder",
        lambda t: _pred(
            t, t.a.ckpt, out=(t.a.run_with(t.p("r")), (t.p("r") / ".fcnkit").write_text('{"kind": "run"}'))[0]
        ),
        "not predictions",
    ),
    ("predict-out-read-only", lambda t: _pred(t, t.a.ckpt, out=_need_ro(t) / "pred"), "not writable"),
    ("predict-out-under-file", lambda t: _pred(t, t.a.ckpt, out=bad.garbage(t.p("f")) / "pred"), "is a file"),
    ("predict-device-bogus", lambda t: _pred(t, t.a.ckpt, extra=["--device", "bogus"]), "--device 'bogus'"),
    ("predict-device-tpu", lambda t: _pred(t, t.a.ckpt, extra=["--device", "meta"]), "cpu or cuda"),
    (
        "predict-device-cuda-missing",
        lambda t: _pred(t, t.a.ckpt, extra=["--device", "cuda" if not torch.cuda.is_available() else "cuda:99"]),
        "--device cuda",
    ),
    ("predict-tile-word", lambda t: _pred(t, t.a.ckpt, extra=["--tile", "big"]), "tile size"),
    ("predict-blend-bogus", lambda t: _pred(t, t.a.ckpt, extra=["--blend", "median"]), "invalid choice"),
    ("predict-overlap-word", lambda t: _pred(t, t.a.ckpt, extra=["--overlap", "half"]), "invalid float"),
    (
        "predict-resize-garbage",
        lambda t: _pred(t, t.a.ckpt, extra=["--resize", "big"]),
        "--resize",
    ),
    # --- evaluate ----------------------------------------------------------------------------------
    ("evaluate-run-missing", lambda t: _eval(t, run=t.p("nope")), "no such run"),
    ("evaluate-run-empty", lambda t: _eval(t, run=bad.user_folder(t.p("e"))), "no checkpoint here"),
    ("evaluate-json-directory", lambda t: _eval(t, json_out=bad.user_folder(t.p("j"))), "is a folder"),
    (
        "evaluate-json-foreign-file",
        lambda t: _eval(t, json_out=bad.garbage(t.p("notes.json"))),
        "not written by fcnkit",
    ),
    ("evaluate-json-read-only", lambda t: _eval(t, json_out=_need_ro(t) / "s.json"), "not writable"),
    ("evaluate-json-under-file", lambda t: _eval(t, json_out=bad.garbage(t.p("f")) / "s.json"), "is a file"),
    ("evaluate-device-bogus", lambda t: _eval(t, "--device", "bogus"), "--device 'bogus'"),
    (
        "evaluate-device-cuda-missing",
        lambda t: _eval(t, "--device", "cuda" if not torch.cuda.is_available() else "cuda:99"),
        "--device cuda",
    ),
    ("evaluate-data-missing", lambda t: _eval(t, "--data", t.p("nodata")), "not found"),
    ("evaluate-data-unknown", lambda t: _eval(t, "--data", "imagenett"), "unknown dataset"),
    ("evaluate-split-bogus", lambda t: _eval(t, "--split", "validation"), "validation"),
    ("evaluate-batch-zero", lambda t: _eval(t, "--batch-size", "0"), "batch_size"),
    ("evaluate-no-train-data", lambda t: _eval(t, run=_ckpt(t, _set("train", {}))), "--data"),
    (
        "evaluate-classes-mismatch",
        lambda t: _eval(
            t, "--data", t.a.dataset_with(t.p("d3"), lambda f: (f / "classes.txt").write_text("a\nb\nc\n"))
        ),
        "classes",
    ),
    (
        "evaluate-nan-weights",
        lambda t: _eval(
            t,
            run=_ckpt(t, weights=lambda s: {k: v * float("nan") if v.is_floating_point() else v for k, v in s.items()}),
        ),
        "NaN/inf",
    ),
    (
        "evaluate-nan-image",
        lambda t: _eval(t, "--data", _data(t, _image("s3", lambda d, s: bad.float_tiff(d / f"{s}.tif", float("inf"))))),
        "NaN or inf",
    ),
    ("evaluate-bad-mask", lambda t: _eval(t, "--data", _data(t, _mask("s2", _RGB))), "mode RGB"),
    # --- convert ------------------------------------------------------------------------------------
    ("convert-weights-missing", lambda t: _convert(t, t.p("none.pth")), "no such weights file"),
    ("convert-weights-garbage", lambda t: _convert(t, bad.garbage(t.p("w.pth"))), "cannot read a state dict"),
    ("convert-weights-empty", lambda t: _convert(t, bad.garbage(t.p("w.pth"), 0)), "cannot read a state dict"),
    (
        "convert-weights-malicious",
        lambda t: (torch.save({"fc.weight": bad.Evil(t.p("pwned"))}, t.p("w.pth")), _convert(t, t.p("w.pth")))[1],
        "cannot read a state dict",
    ),
    (
        "convert-weights-truncated",
        lambda t: _convert(t, bad.truncated(t.p("w.pth"), _resnet_like(t), 0.4)),
        "cannot read a state dict",
    ),
    (
        "convert-weights-list",
        lambda t: (torch.save([torch.zeros(2)], t.p("w.pth")), _convert(t, t.p("w.pth")))[1],
        "not a state dict",
    ),
    (
        "convert-weights-safetensors-garbage",
        lambda t: _convert(t, bad.garbage(t.p("w.safetensors"))),
        "cannot read a state dict",
    ),
    ("convert-arch-unknown", lambda t: _convert(t, _resnet_like(t), arch="torchvision:resnet9000"), "resnet9000"),
    ("convert-arch-no-prefix", lambda t: _convert(t, _resnet_like(t), arch="vgg16"), "vgg16"),
    (
        "convert-weights-other-arch",
        lambda t: _convert(t, _resnet_like(t), arch="torchvision:alexnet"),
        "not a torchvision:alexnet",
    ),
    ("convert-weights-trunk-missing", lambda t: _convert(t, _resnet_like(t)), "resnet18"),
    ("convert-num-classes-zero", lambda t: _convert(t, _resnet_like(t), "--num-classes", "0"), "--num-classes 0"),
    ("convert-num-classes-negative", lambda t: _convert(t, _resnet_like(t), "--num-classes", "-3"), "--num-classes -3"),
    ("convert-out-is-file", lambda t: _convert(t, _resnet_like(t), out=bad.garbage(t.p("ck.bin"))), "existing file"),
    (
        "convert-out-user-folder",
        lambda t: _convert(t, _resnet_like(t), out=bad.user_folder(t.p("mine"))),
        "did not write",
    ),
    (
        "convert-out-user-folder-overwrite",
        lambda t: _convert(t, _resnet_like(t), "--overwrite", out=bad.user_folder(t.p("mine"))),
        "did not write",
    ),
    ("convert-out-checkpoint-no-overwrite", lambda t: _convert(t, _resnet_like(t), out=_ckpt(t)), "--overwrite"),
    (
        "convert-out-checkpoint-plus-user-file",
        lambda t: _convert(t, _resnet_like(t), "--overwrite", out=(lambda c: (bad.user_folder(c), c)[1])(_ckpt(t))),
        "did not write",
    ),
    ("convert-out-read-only", lambda t: _convert(t, _resnet_like(t), out=_need_ro(t) / "conv"), "not writable"),
]
