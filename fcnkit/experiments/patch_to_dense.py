"""Patch-to-dense: a digit classifier trained on 28x28 crops, used as a dense segmenter of
digit canvases zero-shot, then fine-tuned fully convolutionally (FCN paper, Sec. 3.1 and 4.1).

::

    1. train allconv_cls on digits (28x28 crops, 10 classes)          fcnkit train --task classification
    2. "convolutionalize": allconv_cls is convolutions + a 1x1 head + global average pooling, so
       there is no Linear layer to recast; its score map before the pooling (forward_dense) IS the
       FCN. dense_from_classifier() loads the classifier's tensors into allconv(skips=False) with
       the same body options - the same trunk and head, plus the geometry-aligned bilinear
       upsampling of the score grid (cell i centred on input pixel S*i + (S - 1)/2) to H x W
    3. zero-shot on digit-canvas: arg-max digit per pixel, background where the input is dark
    4. fine-tune allconv (same body, 11 classes) on digit-canvas, init_from = the classifier
    5. the same training from scratch, for comparison; all three scored on the same split

The zero-shot rule. The classifier has no background class, so something else must say where
the digits are. Used here: background wherever the input intensity is <= 0.5, the dataset's own
labelling rule (a pixel is labelled with its digit where that digit's intensity is > 0.5), else
the classifier's arg-max digit. So the zero-shot baseline gets the digit/background boundary for
free and is scored only on WHICH digit each stroke pixel belongs to; the fine-tuned net must learn
both. (The alternative, an 11th class trained on blank and off-centre crops, would test the crop
sampling as much as the classifier; the threshold isolates what the classifier itself brings.)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcnkit.errors import InputError

__all__ = ["dense_from_classifier", "zero_shot_scores", "patch_to_dense", "BODY_OPTIONS", "DEFAULTS"]

# the options that define the allconv body (shared by allconv and allconv_cls; resallconv: + skip_downsample)
BODY_OPTIONS = ("width", "depth", "stem_depth", "stages", "downsample", "skip_downsample", "padding", "norm")
# classifier -> the segmenter with the same body (same tensor names)
DENSE_OF = {"allconv_cls": "allconv", "resallconv_cls": "resallconv"}
# sized for a few minutes on a 2-core CPU (see docs/recipes/patch_to_dense.md for the numbers)
DEFAULTS: dict[str, Any] = {
    "body": {"width": 16, "depth": 1, "stages": 3},
    # a classifier trained at several sizes transfers better to dense use (zero-shot 0.58 vs 0.52 at 28 only)
    "classifier_epochs": 3,
    "classifier_sizes": [24, 28, 32],
    "classifier_lr": 3e-3,
    "classifier_batch_size": 32,
    # small batches: more steps for the same compute (3 epochs: fine-tuned 0.65 with batches of 16, 0.74 of 4)
    "canvas_count": 2000,
    "val_count": 300,
    "canvas_size": None,
    "finetune_epochs": 3,
    "batch_size": 4,
    "lr": 5e-3,
    "split": "test",
    "scratch": True,
    "threads": 1,
    "seed": 0,
}


def dense_from_classifier(checkpoint: str | os.PathLike, output: str = "dense"):
    """The classifier of ``checkpoint`` (an ``allconv_cls`` or ``resallconv_cls`` checkpoint or run) as a dense net.

    Returns ``(model, config)``: ``allconv(num_classes=K, skips=False, output=output)`` (``resallconv``
    for a residual classifier) with the
    classifier's body options and ALL its tensors, in eval mode, and the classifier's checkpoint
    config. ``output="coarse"`` gives exactly ``classifier.forward_dense`` (tested), whose global
    average is the classifier's logits; ``"dense"`` upsamples it to the input size.
    """
    from fcnkit.app.init_from import init_from_checkpoint
    from fcnkit.checkpoint import read_config
    from fcnkit.models.registry import build_model

    config = read_config(checkpoint)
    spec = config["model"]
    if spec["name"] not in DENSE_OF:
        raise InputError(
            f"{checkpoint}: a '{spec['name']}' checkpoint; dense_from_classifier takes an allconv_cls "
            "classifier (train one with fcnkit train --task classification --model allconv_cls)"
        )
    kwargs = spec["kwargs"]
    body = {k: kwargs[k] for k in BODY_OPTIONS if k in kwargs}
    model = build_model(
        DENSE_OF[spec["name"]],
        num_classes=kwargs["num_classes"],
        in_channels=kwargs["in_channels"],
        skips=False,
        output=output,
        **body,
    )
    report = init_from_checkpoint(model, checkpoint)
    if report.skipped or any(not n.startswith("upsample.") for n in report.kept):
        raise RuntimeError(f"classifier tensors did not all fit the dense net: {report.summary()}")  # a bug
    return model.eval(), config


def zero_shot_scores(
    checkpoint: str | os.PathLike,
    data: str = "digit-canvas",
    split: str = "test",
    data_options: dict | None = None,
    threshold: float = 0.5,
    batch_size: int = 16,
    device: str = "cpu",
) -> dict[str, Any]:
    """Segmentation scores of the classifier used densely (module docstring for the rule).

    Each image is normalised with the CLASSIFIER's mean/std (what it was trained on); pixels
    whose unit intensity is <= ``threshold`` are background, the others take the arg-max digit,
    mapped to the dataset's classes by name. Returns :func:`fcnkit.metrics.scores` plus
    ``confusion_matrix``, ``classes``, ``images`` and ``rule``.
    """
    from fcnkit.data import load_dataset
    from fcnkit.data.io import to_model_input, to_unit_float
    from fcnkit.metrics import confusion_matrix, scores

    model, config = dense_from_classifier(checkpoint)
    model.to(device)
    dataset = load_dataset(data, split=split, **(data_options or {}))
    names, info = list(dataset.info.class_names), dataset.info
    if "background" not in names or not set(config["classes"]) <= set(names):
        raise InputError(
            f"data '{data}' classes {names} do not hold 'background' and the classifier's {config['classes']}; "
            "use segmentation data labelled with the classifier's class names (e.g. digit-canvas)"
        )
    to_data = torch.tensor([names.index(c) for c in config["classes"]])
    mean, std = config["normalization"]["mean"], config["normalization"]["std"]
    cm = torch.zeros(info.num_classes, info.num_classes, dtype=torch.int64)
    for start in range(0, len(dataset), batch_size):
        raws = [dataset.raw(i) for i in range(start, min(start + batch_size, len(dataset)))]
        by_size: dict[tuple, list] = {}
        for image, mask in raws:  # one forward per image size (digit-canvas: all one size)
            by_size.setdefault(image.shape[:2], []).append((image, mask))
        for group in by_size.values():
            x = torch.stack([to_model_input(im, int(config["in_channels"]), mean, std) for im, _ in group]).to(device)
            with torch.no_grad():
                digit = to_data[model(x).argmax(1).cpu()]
            bright = torch.from_numpy(np.stack([_brightness(to_unit_float(im)) for im, _ in group]) > threshold)
            pred = torch.where(bright, digit, names.index("background"))
            cm += confusion_matrix(
                pred, torch.from_numpy(np.stack([m for _, m in group]).astype(np.int64)), info.num_classes
            )
    result = scores(cm)
    result.update(
        confusion_matrix=cm.tolist(),
        classes=names,
        images=len(dataset),
        data=str(data),
        split=split,
        rule=f"background where intensity <= {threshold}, else the classifier's arg-max digit",
    )
    return result


def _brightness(unit: np.ndarray) -> np.ndarray:
    return unit if unit.ndim == 2 else unit.max(axis=-1)


def patch_to_dense(
    out: str | os.PathLike = "runs/patch-to-dense", device: str = "cpu", **settings: Any
) -> dict[str, Any]:
    """Run the whole recipe (module docstring) into ``out``; returns and writes ``out/results.json``.

    ``settings`` override :data:`DEFAULTS` (e.g. ``canvas_count=64`` for a quick check). Runs:
    ``out/classifier``, ``out/finetuned`` and (``scratch=True``) ``out/scratch``; the three mean
    IUs are scored on ``split`` of digit-canvas (the checkpoints are picked on ``val``).
    """
    from fcnkit.app.evaluate import evaluate
    from fcnkit.app.train import train
    from fcnkit.engine.config import TrainConfig

    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise InputError(f"patch_to_dense: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(DEFAULTS)}")
    s = {**DEFAULTS, **settings}
    out, start = Path(out), time.perf_counter()
    common = dict(
        device=device,
        threads=s["threads"],
        seed=s["seed"],
        overwrite=True,
        optimizer="adam",
        lr_schedule="cosine",
        log_every_n_steps=50,
    )
    classifier = train(
        TrainConfig(
            task="classification",
            data="digits",
            model="allconv_cls",
            model_options=dict(s["body"]),
            epochs=s["classifier_epochs"],
            sizes=s["classifier_sizes"],
            lr=s["classifier_lr"],
            batch_size=s["classifier_batch_size"],
            out=str(out / "classifier"),
            **common,
        )
    )
    size = {"size": list(s["canvas_size"])} if s["canvas_size"] else {}  # None: digit-canvas' own 64 x 84
    canvas = dict(
        data="digit-canvas",
        model="allconv",
        model_options=dict(s["body"]),
        epochs=s["finetune_epochs"],
        data_options={"count": s["canvas_count"], **size},
        val_data_options={"count": s["val_count"]},
        lr=s["lr"],
        batch_size=s["batch_size"],
        **common,
    )
    split_options = {"count": s["val_count"], **size}
    zero_shot = zero_shot_scores(classifier, split=s["split"], data_options=split_options, device=device)
    finetuned = train(TrainConfig(init_from=str(classifier), out=str(out / "finetuned"), **canvas))
    runs = {"classifier": classifier, "finetuned": finetuned}
    if s["scratch"]:
        runs["scratch"] = train(TrainConfig(out=str(out / "scratch"), **canvas))
    results: dict[str, Any] = {
        "classifier_accuracy": evaluate(classifier, split=s["split"], device=device)["accuracy"],
        "zero_shot_mean_iu": zero_shot["mean_iu"],
        "zero_shot": _brief(zero_shot),
    }
    for name in ("finetuned", "scratch"):
        if name in runs:
            scored = evaluate(runs[name], split=s["split"], device=device, data_options=split_options)
            results[f"{name}_mean_iu"], results[name] = scored["mean_iu"], _brief(scored)
    results.update(
        init_from=json.loads((finetuned / "init_from.json").read_text()),
        settings=s,
        split=s["split"],
        runs={k: str(v) for k, v in runs.items()},
        seconds=round(time.perf_counter() - start, 1),
    )
    from fcnkit.utils.jsonsafe import write_json

    write_json(results, out / "results.json")
    return results


def _brief(result: dict) -> dict:
    return {k: result[k] for k in ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu", "iu") if k in result}


def main(argv: list[str] | None = None) -> int:
    """``python -m fcnkit.experiments.patch_to_dense [--out DIR] [--quick]``: run and print the numbers."""
    import argparse

    p = argparse.ArgumentParser(description="patch-to-dense recipe (docs/recipes/patch_to_dense.md)")
    p.add_argument("--out", default="runs/patch-to-dense")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting (YAML value)")
    args = p.parse_args(argv)
    import yaml

    overrides = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    r = patch_to_dense(args.out, device=args.device, **overrides)
    print(json.dumps({k: r[k] for k in r if k.endswith(("_mean_iu", "_accuracy")) or k == "seconds"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
