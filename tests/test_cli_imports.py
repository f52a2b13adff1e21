"""CLI start-up: ``fcnkit --help``, ``data check``, ``rf`` and ``predict`` with an allconv run import
neither Lightning, nor torchvision's models, nor ``torch._dynamo`` (each costs 1.5-2.5 s per call).
Each command runs in a fresh interpreter, which then lists the heavy modules it imported."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fcnkit

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("lightning", "pytorch_lightning", "torchvision.models", "torch._dynamo", "onnxruntime", "matplotlib")
PROBE = """
import json, sys
from fcnkit.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def _imports(*args) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def allconv_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("startup")
    model = fcnkit.build_model("allconv", num_classes=3, width=8)
    fcnkit.save_checkpoint(root / "run", model, {"task": "segmentation", "num_classes": 3, "in_channels": 3})
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(root / "a.png")
    (root / "data" / "images").mkdir(parents=True)
    (root / "data" / "masks").mkdir()
    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 1
    for i in range(2):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "data" / "images" / f"x{i}.png")
        Image.fromarray(mask).save(root / "data" / "masks" / f"x{i}.png")
    return root


@pytest.mark.parametrize("command", ["help", "data", "rf", "predict"])
def test_light_commands_import_no_lightning_torchvision_models_or_dynamo(allconv_run, tmp_path, command):
    args = {
        "help": ["--help"],
        "data": ["data", "check", str(allconv_run / "data")],
        "rf": ["rf", str(allconv_run / "run")],  # builds the model through the registry
        "predict": ["predict", str(allconv_run / "run"), str(allconv_run / "a.png"), "--out", str(tmp_path), "--quiet"],
    }[command]
    result = _imports(*args)
    assert result["code"] == 0, result
    assert result["heavy"] == [], result
