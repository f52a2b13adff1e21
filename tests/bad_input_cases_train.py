"""The bad-input corpus, part 2: train, data, rf, models, experiment and demo cases
(builders in tests/bad_input_cases.py)."""

from __future__ import annotations

import bad_input_files as bad
import numpy as np
import pytest
import torch
from bad_input_cases import _RGB, _WRONG_SIZE, _ckpt, _data, _image, _mask, _need_ro, _set, _train

_LABEL_1000 = np.where(np.eye(16, dtype=bool), 1000, 0).astype(np.uint16)
_LABEL_7 = np.where(np.eye(16, dtype=bool), 7, 0).astype(np.uint8)

CASES = [
    # --- train: config and flags -------------------------------------------------------------------
    (
        "train-config-missing",
        lambda t: {**_train(t), "argv": ["train", "--config", str(t.p("none.yaml")), "--out", str(t.p("run"))]},
        "config file not found",
    ),
    ("train-config-binary", lambda t: _train(t, "--config", bad.garbage(t.p("c.yaml"))), "not a text file"),
    (
        "train-config-invalid-yaml",
        lambda t: (t.p("c.yaml").write_text("epochs: [1, 2\n"), _train(t, "--config", t.p("c.yaml")))[1],
        "not valid YAML",
    ),
    (
        "train-config-list",
        lambda t: (t.p("c.yaml").write_text("- 1\n- 2\n"), _train(t, "--config", t.p("c.yaml")))[1],
        "expected a mapping",
    ),
    (
        "train-config-unknown-key",
        lambda t: (t.p("c.yaml").write_text("epoch: 3\n"), _train(t, "--config", t.p("c.yaml")))[1],
        "epoch",
    ),
    ("train-epochs-zero", lambda t: _train(t, "--epochs", "0"), "epochs"),
    ("train-epochs-word", lambda t: _train(t, "--epochs", "ten"), "epochs"),
    ("train-lr-negative", lambda t: _train(t, "--lr", "-1"), "lr"),
    ("train-optimizer-bogus", lambda t: _train(t, "--optimizer", "adamw2"), "optimizer"),
    ("train-precision-bogus", lambda t: _train(t, "--precision", "8"), "precision"),
    ("train-precision-16-on-cpu", lambda t: _train(t, "--precision", "16-mixed"), "16-mixed"),
    ("train-device-bogus", lambda t: _train(t, "--device", "bogus"), "device"),
    (
        "train-device-cuda-missing",
        lambda t: _train(t, "--device", "cuda") if not torch.cuda.is_available() else pytest.skip("a GPU is visible"),
        "cuda",
    ),
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
    (
        "train-label-1000-16bit",
        lambda t: _train(
            t, data=_data(t, lambda f: ((f / "classes.txt").unlink(), _mask("s0", _LABEL_1000, suffix=".tif")(f)))
        ),
        "label 1000",
    ),
    ("train-label-outside-classes-in-val", lambda t: _train(t, data=_data(t, _mask("s3", _LABEL_7))), "labels 7"),
    ("train-label-outside-classes-in-train", lambda t: _train(t, data=_data(t, _mask("s1", _LABEL_7))), "labels 7"),
    ("train-mask-size-mismatch-val", lambda t: _train(t, data=_data(t, _mask("s2", _WRONG_SIZE))), "8x8"),
    ("train-mask-rgb", lambda t: _train(t, data=_data(t, _mask("s3", _RGB))), "mode RGB"),
    (
        "train-mask-garbage",
        lambda t: _train(t, data=_data(t, lambda f: bad.garbage(f / "masks" / "s3.png"))),
        "cannot decode mask",
    ),
    (
        "train-image-garbage",
        lambda t: _train(t, data=_data(t, lambda f: bad.garbage(f / "images" / "s3.png"))),
        "cannot decode",
    ),
    (
        "train-image-nan-tiff",
        lambda t: _train(t, data=_data(t, _image("s3", lambda d, s: bad.float_tiff(d / f"{s}.tif", float("nan"))))),
        "NaN or inf",
    ),
    (
        "train-image-symlink-loop",
        lambda t: _train(t, data=_data(t, _image("s3", lambda d, s: bad.symlink_loop(d, f"{s}.png")))),
        "symlink loop",
    ),
    (
        "train-image-without-mask",
        lambda t: _train(t, data=_data(t, lambda f: (f / "masks" / "s3.png").unlink())),
        "has no mask",
    ),
    (
        "train-empty-train-split",
        lambda t: _train(t, data=_data(t, lambda f: (f / "train.txt").write_text(""))),
        "empty",
    ),
    (
        "train-classes-txt-one-name",
        lambda t: _train(t, data=_data(t, lambda f: (f / "classes.txt").write_text("only\n"))),
        "class name",
    ),
    # --- train: output folder and resume --------------------------------------------------------------
    ("train-out-is-file", lambda t: _train(t, out=bad.garbage(t.p("run.txt"))), "existing file"),
    ("train-out-user-folder", lambda t: _train(t, out=bad.user_folder(t.p("mine"))), "did not write"),
    (
        "train-out-user-folder-overwrite",
        lambda t: _train(t, "--overwrite", out=bad.user_folder(t.p("mine"))),
        "did not write",
    ),
    ("train-out-holds-run", lambda t: _train(t, out=t.a.run_with(t.p("r"))), "already holds a run"),
    ("train-out-read-only", lambda t: _train(t, out=_need_ro(t) / "run"), "not writable"),
    (
        "train-out-predictions",
        lambda t: _train(
            t, out=(t.p("pr").mkdir(), (t.p("pr") / ".fcnkit").write_text('{"kind": "predictions"}'), t.p("pr"))[2]
        ),
        "not a run",
    ),
    (
        "train-resume-missing",
        lambda t: dict(argv=["train", "--resume", str(t.p("nope"))], out=t.p("nope")),
        "no run to resume",
    ),
    (
        "train-resume-user-folder",
        lambda t: dict(argv=["train", "--resume", str(bad.user_folder(t.p("u")))], out=t.p("u")),
        "no run to resume",
    ),
    (
        "train-resume-truncated-state",
        lambda t: (lambda r: dict(argv=["train", "--resume", str(r)], out=r))(
            t.a.run_with(t.p("r"), trainer_bytes=(t.a.run / "trainer.ckpt").read_bytes()[:300])
        ),
        "cannot read the trainer state",
    ),
    (
        "train-resume-garbage-state",
        lambda t: (lambda r: dict(argv=["train", "--resume", str(r)], out=r))(
            t.a.run_with(t.p("r"), trainer_bytes=b"\x80\x04garbage")
        ),
        "cannot read the trainer state",
    ),
    (
        "train-resume-malicious-state",
        lambda t: (lambda r: dict(argv=["train", "--resume", str(r)], out=r))(
            t.a.run_with(t.p("r"), trainer_obj={"state_dict": {}, "x": bad.Evil(t.p("pwned"))})
        ),
        "cannot read the trainer state",
    ),
    (
        "train-resume-not-a-state",
        lambda t: (lambda r: dict(argv=["train", "--resume", str(r)], out=r))(
            t.a.run_with(t.p("r"), trainer_obj=[1, 2, 3])
        ),
        "not a Lightning trainer state",
    ),
    (
        "train-resume-binary-config",
        lambda t: (lambda r: (bad.garbage(r / "config.yaml"), dict(argv=["train", "--resume", str(r)], out=r))[1])(
            t.a.run_with(t.p("r"))
        ),
        "not a text file",
    ),
    # --- data ---------------------------------------------------------------------------------------
    ("data-info-missing", lambda t: dict(argv=["data", "info", str(t.p("nodata"))], out=None), "not found"),
    ("data-info-unknown", lambda t: dict(argv=["data", "info", "nucleus"], out=None), "nucleus"),
    (
        "data-info-bad-layout",
        lambda t: dict(argv=["data", "info", str(bad.user_folder(t.p("u")))], out=None),
        "unknown dataset layout",
    ),
    (
        "data-check-num-classes-word",
        lambda t: dict(argv=["data", "check", str(t.a.data), "--num-classes", "two"], out=None),
        "invalid int",
    ),
    # --- rf, models, experiment, demo --------------------------------------------------------------------
    ("rf-model-unknown", lambda t: dict(argv=["rf", "allconvv"], out=None), "allconvv"),
    (
        "rf-run-broken",
        lambda t: dict(argv=["rf", str(_ckpt(t, _set("model", "allconv")))], out=None),
        "'model' must be",
    ),
    ("rf-input-size-word", lambda t: dict(argv=["rf", "allconv", "--input-size", "a", "b"], out=None), "invalid int"),
    ("models-task-bogus", lambda t: dict(argv=["models", "--task", "detection"], out=None), "invalid choice"),
    (
        "experiment-unknown",
        lambda t: dict(argv=["experiment", "samplingg", "--out", str(t.p("ex"))], out=t.p("ex")),
        "samplingg",
    ),
    (
        "experiment-out-is-file",
        lambda t: dict(argv=["experiment", "sampling", "--out", str(bad.garbage(t.p("ex.txt")))], out=t.p("ex.txt")),
        "existing file",
    ),
    (
        "experiment-out-user-folder",
        lambda t: dict(argv=["experiment", "sampling", "--out", str(bad.user_folder(t.p("ex")))], out=t.p("ex")),
        "did not write",
    ),
    (
        "experiment-out-read-only",
        lambda t: dict(argv=["experiment", "sampling", "--out", str(_need_ro(t) / "ex")], out=None),
        "not writable",
    ),
    (
        "experiment-device-cuda-missing",
        lambda t: (
            dict(argv=["experiment", "sampling", "--device", "cuda", "--out", str(t.p("ex"))], out=t.p("ex"))
            if not torch.cuda.is_available()
            else pytest.skip("a GPU is visible")
        ),
        "cuda",
    ),
    (
        "experiment-datasets-grad-eq",
        lambda t: dict(
            argv=["experiment", "gradient-equivalence", "--datasets", "x", "--out", str(t.p("ex"))], out=t.p("ex")
        ),
        "--datasets",
    ),
    (
        "demo-config-missing",
        lambda t: dict(argv=["demo", "--config", str(t.p("none.yaml")), "--out", str(t.p("demo"))], out=t.p("demo")),
        "not found",
    ),
    (
        "demo-config-binary",
        lambda t: dict(
            argv=["demo", "--config", str(bad.garbage(t.p("c.yaml"))), "--out", str(t.p("demo"))], out=t.p("demo")
        ),
        "not a text file",
    ),
    (
        "demo-out-user-folder",
        lambda t: dict(argv=["demo", "--out", str(bad.user_folder(t.p("demo"))), "--device", "cpu"], out=t.p("demo")),
        "did not write",
    ),
    (
        "demo-device-bogus",
        lambda t: dict(argv=["demo", "--device", "bogus", "--out", str(t.p("demo"))], out=t.p("demo")),
        "device",
    ),
    ("unknown-command", lambda t: dict(argv=["segment", "x"], out=None), "invalid choice"),
]
