"""``fcnkit export``: ONNX and TorchScript round trips at three sizes (one odd, one a batch of two),
metadata travels, ``predict --backend onnx`` gives the same masks, bad exports leave nothing behind."""

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from torch import nn

import fcnkit
from fcnkit.app.export import export_checkpoint, export_model
from fcnkit.cli import main as cli
from fcnkit.errors import InputError
from fcnkit.inference.onnx_model import OnnxModel

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
]

CONFIG = {
    "task": "segmentation",
    "num_classes": 3,
    "in_channels": 3,
    "classes": ["bg", "cell", "edge"],
    "palette": [[0, 0, 0], [200, 0, 0], [0, 200, 0]],
    "normalization": {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]},
}


def _randomised(model):
    torch.manual_seed(0)
    with torch.no_grad():  # non-trivial weights and BatchNorm statistics (the defaults give flat logits)
        for p in model.parameters():
            p.normal_(0, 0.2)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2)
            elif name.endswith("running_mean"):
                b.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model = _randomised(fcnkit.build_model("allconv", num_classes=3, width=8, learn_upsampling=False))
    return fcnkit.save_checkpoint(tmp_path_factory.mktemp("run") / "ckpt", model, CONFIG)


@pytest.mark.parametrize("kwargs", [{}, {"padding": "valid", "learn_upsampling": True}])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_round_trip_at_three_sizes(tmp_path, fmt, kwargs):
    model = _randomised(fcnkit.build_model("allconv", num_classes=3, width=8, **kwargs))
    r = export_model(model, tmp_path / f"m.{fmt}", fmt, config=CONFIG)
    assert len(r["sizes"]) == 3 and any(s[2] % 2 for s in r["sizes"]) and any(s[0] == 2 for s in r["sizes"])
    assert r["max_diff"] <= 1e-5 and r["scale"] > 0.1
    # independently: the file at yet another odd size, batch 3
    x = torch.randn(3, 3, 131, 77)
    exported = OnnxModel(r["path"]) if fmt == "onnx" else torch.jit.load(str(r["path"]))
    with torch.no_grad():
        assert (exported(x) - model(x)).abs().max().item() <= 1e-5


def test_metadata_travels_in_the_onnx_and_torchscript_files(ckpt, tmp_path):
    r = export_checkpoint(ckpt, "onnx")
    assert r["path"] == ckpt / "model.onnx"
    props = {p.key: p.value for p in onnx.load(str(r["path"])).metadata_props}
    meta = json.loads(props["fcnkit"])
    assert meta["config"]["classes"] == CONFIG["classes"] and meta["config"]["normalization"] == CONFIG["normalization"]
    assert meta["config"]["palette"] == CONFIG["palette"]
    g = OnnxModel(r["path"]).fcnkit_geometry
    assert (g.size, g.stride, g.align) == (
        (lambda h: (h.size, h.stride, h.align))(fcnkit.receptive_field(fcnkit.load_checkpoint(ckpt)[0]))
    )
    ts = export_checkpoint(ckpt, "torchscript", out=tmp_path / "m.pt")
    files = {"fcnkit.json": ""}
    torch.jit.load(str(ts["path"]), _extra_files=files)
    assert json.loads(files["fcnkit.json"])["config"]["classes"] == CONFIG["classes"]


def test_predict_with_onnx_backend_gives_the_same_masks(ckpt, tmp_path, capsys):
    assert cli.main(["export", str(ckpt), "--opset", "17"]) == 0
    assert "max difference" in capsys.readouterr().out
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (150, 203, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    for backend in ("torch", "onnx"):
        args = [
            "predict",
            str(ckpt),
            str(tmp_path / "a.png"),
            "--out",
            str(tmp_path / backend),
            "--tile",
            "96",
            "--quiet",
            "--probabilities",
        ]
        assert cli.main(args + ["--backend", backend]) == 0
    torch_mask = np.asarray(Image.open(tmp_path / "torch" / "a_mask.png"))
    onnx_mask = np.asarray(Image.open(tmp_path / "onnx" / "a_mask.png"))
    np.testing.assert_array_equal(onnx_mask, torch_mask)
    torch_prob, onnx_prob = (np.load(tmp_path / b / "a_prob.npy") for b in ("torch", "onnx"))
    assert torch_prob.std() > 1e-3  # not a constant map
    np.testing.assert_allclose(onnx_prob, torch_prob, atol=1e-6)
    # Python API: fcnkit.predict on the onnxruntime session, tiled, equals PyTorch whole-image logits
    model = fcnkit.load_checkpoint(ckpt)[0]
    x = torch.randn(3, 150, 203)
    np.testing.assert_allclose(
        fcnkit.predict(OnnxModel(ckpt / "model.onnx"), x, tile=96).numpy(), fcnkit.predict(model, x).numpy(), atol=1e-5
    )


class SizeBranch(nn.Module):
    """Python control flow on the input size: a tracer freezes the branch it saw."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y * 3 if x.shape[-1] % 2 else y


def test_an_export_that_does_not_match_fails_and_leaves_nothing(tmp_path):
    with pytest.raises(InputError, match="differs from PyTorch|gives"):
        export_model(SizeBranch(), tmp_path / "m.onnx", "onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_one_line_exit_2(ckpt, tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "nope")]) == 2
    assert cli.main(["export", str(ckpt), "--out", str(tmp_path / "no" / "m.onnx")]) == 2
    assert cli.main(["export", str(ckpt), "--opset", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("fcnkit: ") for line in err)
