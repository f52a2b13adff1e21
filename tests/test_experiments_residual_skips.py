"""Experiment residual-skips end to end at tiny settings: files, per-step gradient norms logged
during training, and the numbers in summary.md are those of results.json."""

import json
import math

import pytest

from fcnkit.errors import InputError
from fcnkit.experiments import residual_skips
from fcnkit.experiments.registry import EXPERIMENTS
from fcnkit.experiments.runner import fmt_mean_std

pytestmark = pytest.mark.slow

TINY = {
    "digit-canvas": {
        "data_options": {"count": 8},
        "val_data_options": {"count": 4},
        "batch_size": 2,
        "max_steps": 3,
        "model_options": {"width": 4, "stages": 2},
    },
    "digits": {"batch_size": 4, "max_steps": 3, "model_options": {"width": 4, "stages": 2}},
}


def test_residual_skips_end_to_end(tmp_path):
    out = tmp_path / "rs"
    lines = []
    residual_skips.run(out, seeds=1, depths=[1, 2], device="cpu", overrides=TINY, progress=lines.append)
    results = json.loads((out / "results.json").read_text())
    summary = (out / "summary.md").read_text()
    assert sorted(p.name for p in out.glob("*.png")) == ["gradients.png", "scores.png"]
    assert (out / "gradients.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(lines) == 2 * 2 * 3 and "residual-skips" in EXPERIMENTS
    for name in residual_skips.DATASETS:
        block = results["datasets"][name]
        assert list(block["depths"]) == ["1", "2"]
        for depth, variants in block["depths"].items():
            assert list(variants) == list(residual_skips.VARIANTS)
            for variant, v in variants.items():
                run = v["runs"][0]
                last = out / "runs" / name / f"{variant}-depth-{depth}" / "seed0" / "last"
                kwargs = json.loads((last / "config.json").read_text())["model"]["kwargs"]
                assert kwargs["skip_downsample"] == variant and kwargs["depth"] == int(depth)
                # one gradient measurement per optimizer step, logged by the callback during training
                assert [r["iteration"] for r in run["train"]] == [1, 2, 3]
                for r in run["train"]:
                    assert r["grad_first"] > 0 and r["grad_last"] > 0
                    assert r["grad_ratio"] == pytest.approx(r["grad_first"] / r["grad_last"], rel=1e-5)
                ratios = sorted(r["grad_ratio"] for r in run["train"])
                assert v["grad_ratio"]["mean"] == pytest.approx(ratios[1])  # the median of 3 steps
                assert v["grad_ratio_early"]["mean"] == pytest.approx(run["train"][0]["grad_ratio"])
                section = summary.split(f"## {name} ")[1].split("\n## ")[0]
                row = next(line for line in section.splitlines() if line.startswith(f"| {depth} | {variant} |"))
                assert fmt_mean_std(v["score"]) in row and f"{v['trainable_parameters']:,}" in row
            params = {k: variants[k]["trainable_parameters"] for k in variants}
            assert params["pool-concat"] < params["pool"] < params["conv1x1"]
    assert "held in" in summary
    assert not math.isnan(results["datasets"]["digits"]["depths"]["1"]["pool"]["score"]["mean"])


def test_bad_depths():
    with pytest.raises(InputError, match="depths"):
        residual_skips.run("unused", depths=[0])
