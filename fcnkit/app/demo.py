"""``run_demo()``: the whole job in one call, on the built-in ``digit-canvas`` data.

train (configs/demo.yaml) -> evaluate on val and test -> predict a few validation images into
``RUN/predictions/`` (palette PNG masks + overlays) -> report.md. Sized to finish in a few
minutes on a 2-core CPU; uses the GPU when one is present.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from fcnkit.errors import FcnkitError, MissingFileError

__all__ = ["run_demo", "demo_config_path", "predict_examples"]


def demo_config_path() -> Path:
    """``configs/demo.yaml`` of the source tree (fcnkit is installed editable by ``make``)."""
    return Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def run_demo(
    out: str | os.PathLike = "runs/demo",
    device: str = "auto",
    config: str | os.PathLike | None = None,
    examples: int = 8,
) -> dict[str, Any]:
    """Train, evaluate and predict; returns ``{"run", "report", "val", "test", "predictions", "seconds"}``.

    A previous demo run in ``out`` is replaced (only run artifacts are removed).
    """
    from fcnkit.app.evaluate import evaluate
    from fcnkit.app.train import train
    from fcnkit.data import load_dataset
    from fcnkit.engine.config import load_config
    from fcnkit.utils.jsonsafe import write_json

    path = Path(config) if config is not None else demo_config_path()
    if not path.is_file():
        raise MissingFileError(f"{path}: demo config not found; run from the source tree or pass --config FILE")
    start = time.perf_counter()
    cfg = load_config(path, {"out": str(out), "device": device, "overwrite": True})
    run = train(cfg)
    train_seconds = time.perf_counter() - start
    results: dict[str, dict[str, Any] | None] = {"val": evaluate(run, split="val", device=device)}
    try:
        results["test"] = evaluate(run, split="test", device=device)
    except FcnkitError:  # another --config's dataset may have no test split
        results["test"] = None
    for split, result in results.items():
        if result is not None:
            write_json(result, run / f"scores_{split}.json")
    assert cfg.data is not None  # train() refused a config without data
    dataset = load_dataset(cfg.data, split=cfg.val_split, **{**cfg.data_options, **cfg.val_data_options})
    predictions = predict_examples(run, dataset, run / "predictions", count=examples, device=device)
    return {
        "run": run,
        "report": run / "report.md",
        **results,
        "predictions": predictions,
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - start,
    }


def predict_examples(
    run: str | os.PathLike, dataset, folder: str | os.PathLike, count: int = 8, device: str = "auto"
) -> list[Path]:
    """Predict the first ``count`` items of ``dataset`` with the run's best checkpoint.

    Writes ``<name>_mask.png`` (palette PNG of class indices) and ``<name>_overlay.png``
    (prediction over the image) per item; returns the mask paths.
    """
    import numpy as np
    import torch
    from PIL import Image

    from fcnkit.checkpoint import load_checkpoint
    from fcnkit.data.io import overlay, save_label_png
    from fcnkit.utils.atomic import atomic_path
    from fcnkit.utils.device import resolve_device

    dev = resolve_device(device)
    model, config = load_checkpoint(run, map_location=dev)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(min(count, len(dataset))):
        item = dataset[i]
        with torch.no_grad():
            logits = _predict(model, item["image"].to(dev))
        labels = logits.argmax(0).cpu().numpy().astype(np.uint8)
        name = _safe_name(item.get("meta", {}).get("name"), i)
        save_label_png(folder / f"{name}_mask.png", labels, config["palette"])
        image, _ = dataset.raw(i)
        with atomic_path(folder / f"{name}_overlay.png", suffix=".png") as tmp:
            Image.fromarray(overlay(image, labels, config["palette"])).save(tmp, format="PNG")
        written.append(folder / f"{name}_mask.png")
    return written


def _predict(model, image):
    """``fcnkit.inference.predict`` when it exists (tiling for big images), else one forward pass."""
    try:
        from fcnkit.inference.predict import predict
    except ImportError:
        return model(image[None])[0]
    return predict(model, image)


def _safe_name(name, index: int) -> str:
    text = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name or ""))
    return text or f"{index:04d}"
