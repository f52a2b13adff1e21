"""Each experiment end to end at tiny settings: the files, the keys, and the numbers in summary.md
are those of results.json; the downsampling variants differ as claimed."""

import json

import pytest
import torch
from torch import nn

from fcnkit.experiments import class_balance, downsampling, sampling
from fcnkit.experiments.runner import fmt_mean_std

pytestmark = pytest.mark.slow

TINY_CANVAS = {"data_options": {"count": 8}, "val_data_options": {"count": 4}, "batch_size": 2}


def _files(out):
    results = json.loads((out / "results.json").read_text())
    summary = (out / "summary.md").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs, "at least one plot"
    for png in pngs:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp*")), "no temporary files left behind"
    return results, summary, pngs


def test_sampling_end_to_end(tmp_path):
    out = tmp_path / "sampling"
    lines = []
    returned = sampling.run(
        out,
        seeds=1,
        steps=3,
        datasets=["digit-canvas"],
        device="cpu",
        overrides={"digit-canvas": TINY_CANVAS},
        progress=lines.append,
    )
    results, summary, pngs = _files(out)
    assert pngs == ["sampling.png"]
    assert set(results) >= {"experiment", "seeds", "steps", "arms", "settings", "machine", "datasets", "patch_size"}
    assert set(results["machine"]) >= {"device", "torch", "threads", "date", "load_average"}
    assert results["datasets"]["digit-canvas"]["arms"].keys() == sampling.ARMS.keys()
    assert returned["steps"] == results["steps"] == 3 and len(lines) == 4
    arms = results["datasets"]["digit-canvas"]["arms"]
    # 2 images per iteration; loss sampling ceil(2 / p); patchwise 2 images, 4 crops each
    images = {arm: a["images_per_iteration"]["mean"] for arm, a in arms.items()}
    assert images == {"whole": 2, "loss-sampling p=0.5": 4, "loss-sampling p=0.25": 8, "patchwise": 2}
    for arm, a in arms.items():
        run = a["runs"][0]
        assert a["iterations"] == 3 and [r["iteration"] for r in run["train"]] == [1, 2, 3]
        assert run["val"][-1]["iteration"] == 3, "every run is scored at its last iteration"
        assert run["train"][-1]["seconds"] == pytest.approx(run["train_seconds"])
        assert a["final_mean_iu"]["mean"] == pytest.approx(run["final"]["mean_iu"])
        # the table row of this arm shows the numbers of results.json
        row = next(line for line in summary.splitlines() if line.startswith(f"| {arm} |"))
        assert fmt_mean_std(a["final_mean_iu"]) in row and fmt_mean_std(a["final_loss"]) in row
    assert f"N = {results['patch_size']} px" in summary and "## Verdict" in summary


def test_class_balance_end_to_end(tmp_path):
    out = tmp_path / "cb"
    class_balance.run(
        out, seeds=1, steps=2, datasets=["digit-canvas"], device="cpu", overrides={"digit-canvas": TINY_CANVAS}
    )
    results, summary, pngs = _files(out)
    assert pngs == ["scores.png"]
    arms = results["datasets"]["digit-canvas"]["arms"]
    assert list(arms) == list(class_balance.ARMS)
    none = arms["none"]["runs"][0]["final"]
    for arm, a in arms.items():
        final = a["runs"][0]["final"]
        for key in class_balance.SCORES:
            assert a["scores"][key]["mean"] == pytest.approx(final[key])
            assert a["change_vs_none_pp"][key]["mean"] == pytest.approx(100 * (final[key] - none[key]))
        row = next(line for line in summary.splitlines() if line.startswith(f"| {arm} |"))
        assert all(fmt_mean_std(a["scores"][k]) in row for k in class_balance.SCORES)
    # class-balanced sampling drops cells from the loss; weighting keeps every labelled cell
    assert arms["sampling"]["cells_per_iteration"]["mean"] < arms["none"]["cells_per_iteration"]["mean"]
    assert arms["inverse"]["cells_per_iteration"]["mean"] == arms["none"]["cells_per_iteration"]["mean"]
    assert "class_weights: median" in (out / "runs/digit-canvas/median/seed0/config.yaml").read_text()
    assert "name: class-balanced" in (out / "runs/digit-canvas/sampling/seed0/config.yaml").read_text()


def test_downsampling_segmentation_end_to_end(tmp_path):
    from fcnkit.models import build_model

    out = tmp_path / "ds"
    downsampling.run(
        out,
        seeds=1,
        datasets=["digit-canvas"],
        device="cpu",
        overrides={"digit-canvas": {**TINY_CANVAS, "max_steps": 2}},
    )
    results, summary, pngs = _files(out)
    assert pngs == ["scores.png", "time.png"]
    block = results["datasets"]["digit-canvas"]
    assert list(block["variants"]) == list(downsampling.VARIANTS) and block["score"] == "mean_iu"
    options = results["settings"]["digit-canvas"]["model_options"]
    for variant, v in block["variants"].items():
        model = build_model("allconv", num_classes=11, in_channels=1, **options, downsample=variant)
        assert v["parameters"] == sum(p.numel() for p in model.parameters())
        assert v["trainable_parameters"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert v["score"]["mean"] == pytest.approx(v["runs"][0]["final"]["mean_iu"])
        row = next(line for line in summary.splitlines() if line.startswith(f"| {variant} |"))
        assert fmt_mean_std(v["score"]) in row and f"{v['trainable_parameters']:,}" in row
    p = {k: v["trainable_parameters"] for k, v in block["variants"].items()}
    assert p["maxpool"] == p["avgpool"] == p["strided-only"] < p["strided"]


def test_downsampling_classification_end_to_end(tmp_path):
    out = tmp_path / "ds"
    downsampling.run(
        out, seeds=1, datasets=["digits"], device="cpu", overrides={"digits": {"max_steps": 2, "batch_size": 4}}
    )
    results, summary, _ = _files(out)
    block = results["datasets"]["digits"]
    assert block["score"] == "accuracy" and list(block["variants"]) == list(downsampling.VARIANTS)
    for variant, v in block["variants"].items():
        assert 0.0 <= v["score"]["mean"] <= 1.0
        assert v["score"]["mean"] == pytest.approx(v["runs"][0]["final"]["accuracy"])
        assert "task: classification" in (out / f"runs/digits/{variant}/seed0/config.yaml").read_text()


def test_sampling_verdict_says_which_way_loss_sampling_differs():
    from fcnkit.experiments.sampling_report import verdict

    def arm(loss, std=0.001, t=1.0):
        return {"final_loss": {"mean": loss, "std": std}, "time_to_target": {"reached": 3, "of": 3, "mean": t}}

    block = {
        "arms": {"whole": arm(0.10), "loss-sampling p=0.5": arm(0.105, t=2.0), "loss-sampling p=0.25": arm(0.05, t=3.0)}
    }
    v = verdict(block, tolerance=0.10)
    assert v["same_per_iteration"] == {"loss-sampling p=0.5": True, "loss-sampling p=0.25": False}
    assert v["sampled_direction"] == "lower" and v["whole_fastest"] is True and v["holds"] == (False, True)
    block["arms"]["loss-sampling p=0.25"] = arm(0.2, t=0.5)
    v = verdict(block, tolerance=0.10)
    assert v["sampled_direction"] == "higher" and v["whole_fastest"] is False


@pytest.mark.parametrize("task,name", [("segmentation", "allconv"), ("classification", "allconv_cls")])
def test_downsampling_variants_differ_as_claimed(task, name):
    from fcnkit.models import build_model

    opts = dict(downsampling.DEFAULTS["digits" if task == "classification" else "digit-canvas"]["model_options"])
    models = {v: build_model(name, num_classes=10, in_channels=1, **opts, downsample=v) for v in downsampling.VARIANTS}
    kinds = {v: {type(m) for m in model.modules()} for v, model in models.items()}
    assert nn.MaxPool2d in kinds["maxpool"] and nn.AvgPool2d in kinds["avgpool"]
    for v in ("strided", "strided-only"):
        assert not kinds[v] & {nn.MaxPool2d, nn.AvgPool2d}, f"{v} has a pooling layer"
    convs = {
        v: [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
        for v, model in models.items()
    }
    assert not convs["maxpool"] and not convs["avgpool"]
    n_down = opts["stages"]
    assert len(convs["strided"]) == len(convs["strided-only"]) == n_down
    # strided-only has the conv count of maxpool (the pool is gone, a conv took its stride)
    count = {v: sum(isinstance(m, nn.Conv2d) for m in model.features.modules()) for v, model in models.items()}
    assert count["strided-only"] == count["maxpool"] == count["strided"] - n_down
    x = torch.randn(1, 1, 32, 32)
    shapes = {v: tuple(model.eval()(x).shape) for v, model in models.items()}
    assert len(set(shapes.values())) == 1, "same output contract for every variant"
