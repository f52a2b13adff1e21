"""Registry models: tiled == whole-image logits (<= 1e-5, fp32) at awkward sizes; the CLIs on a
real checkpoint."""

import numpy as np
import pytest
import torch
from _predict_helpers import save_abc_run
from PIL import Image

from fcnkit import predict, receptive_field
from fcnkit.cli import main as cli
from fcnkit.models import registry  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def build(name, **kw):
    torch.manual_seed(0)
    model = registry.build_model(name, num_classes=3, **kw)
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def check_tiled_equals_whole(model, size, extra=16):
    g = receptive_field(model)
    tile = 2 * max(g.halo()) + max(extra, max(g.align))
    x = torch.randn(3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(x[None])[0]
    tiled = predict(model, x, tile=tile, batch_size=2)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max().item() <= 1e-5
    return tile


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("output", ["dense", "coarse"])
def test_allconv_tiled_equals_whole(padding, output):
    model = build("allconv", width=8, padding=padding, output=output)
    tile = check_tiled_equals_whole(model, (131, 203))
    assert tile < 131  # really tiled along both axes


@pytest.mark.parametrize("name", ["fcn8s", "fcn32s"])
def test_fcn_heads_tiled_equal_whole(name):
    # FCN pads to a multiple of 32 inside: tiles start at multiples of 32 so the padding lines up
    model = build(name)
    tile = check_tiled_equals_whole(model, (450, 470), extra=32)
    assert tile < 450


def _checkpoint(tmp_path):
    return save_abc_run(tmp_path, build("allconv", width=4, stages=2), [0.5] * 3, [0.25] * 3)


def test_cli_predict_tiled_equals_whole_on_a_checkpoint(tmp_path, capsys):
    run = _checkpoint(tmp_path)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (150, 170, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    assert cli.main(["predict", str(run), str(tmp_path / "img.png"), "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    assert (
        cli.main(
            [
                "predict",
                str(run),
                str(tmp_path / "img.png"),
                "--out",
                str(tmp_path / "tiled"),
                "--quiet",
                "--tile",
                "64",
                "--probabilities",
            ]
        )
        == 0
    )
    assert "tiles" in capsys.readouterr().out
    a, b = (np.asarray(Image.open(tmp_path / d / "img_mask.png")) for d in ("whole", "tiled"))
    assert a.shape == (150, 170)
    np.testing.assert_array_equal(a, b)
    assert np.load(tmp_path / "tiled" / "img_prob.npy").shape == (3, 150, 170)


def test_cli_rf_on_a_name_and_a_run(tmp_path, capsys):
    assert cli.main(["rf", "allconv", "--input-size", "64", "80"]) == 0
    out = capsys.readouterr().out
    g = receptive_field(registry.build_model("allconv", num_classes=21).eval())
    assert f"receptive field  {g.size[0]}\n" in out and f"tile alignment   {g.align[0]} " in out
    assert "conv2d" in out and "64x80" in out  # the table, with its out column at the traced size
    run = _checkpoint(tmp_path)
    assert cli.main(["rf", str(run), "--probe"]) == 0
    out = capsys.readouterr().out
    assert "allconv" in out and "agrees" in out
    assert cli.main(["rf", "alconv"]) == 2
    assert "did you mean 'allconv'" in capsys.readouterr().err
