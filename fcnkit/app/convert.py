"""``fcnkit convert``: a torchvision classifier's weights file -> a convolutionalized checkpoint
folder that ``fcnkit predict`` and ``fcnkit train --init-from`` read like any other.

Weights come from local files only (no download): a torchvision state dict saved with
``torch.save`` (read with ``weights_only=True``: nothing is unpickled) or a ``.safetensors`` file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fcnkit.errors import InputError, MissingFileError

__all__ = ["convert_classifier", "Conversion", "read_state_dict"]


@dataclass
class Conversion:
    """What :func:`convert_classifier` wrote: the folder, the model, its config, and notes for the user."""

    path: Path
    model: nn.Module
    config: dict
    notes: list[str] = field(default_factory=list)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"{path}: no such weights file; give a local .pth/.pt/.safetensors state dict (nothing is downloaded)"
        )
    state: object  # whatever the file holds, checked below
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # unpickling refused, truncated file, not a zip/pickle at all, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(
            f"{path}: cannot read a state dict from it ({first}); "
            "save model.state_dict() with torch.save or safetensors"
        ) from None
    for key in ("state_dict", "model"):  # common wrappers {"state_dict": {...}, "epoch": ...}
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(
            f"{path}: not a state dict (name -> tensor); save model.state_dict() with torch.save or safetensors"
        )
    return state


def _last_linear(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise InputError(f"{type(model).__name__} has no Linear classifier layer; it cannot be convolutionalized")
    return names[-1]


def convert_classifier(
    arch: str,
    weights: str | os.PathLike,
    out: str | os.PathLike,
    *,
    num_classes: int | None = None,
    input_size: int = 224,
    pool: str = "window",
    output: str = "dense",
    overwrite: bool = False,
) -> Conversion:
    """Load ``weights`` into ``arch`` (e.g. ``"torchvision:vgg16"``), convolutionalize it, and write
    a checkpoint folder ``out`` (``model.safetensors`` + ``config.json`` with geometry).

    ``num_classes`` defaults to the weights file's. When it differs, the trunk and all but the last
    Linear keep their weights and the last layer is re-initialised (torchvision's init for that
    arch); the returned ``notes`` say so. The model spec is ``convolutionalized`` with ``arch``,
    ``num_classes``, ``input_size``, ``pool``, ``output``; normalization is ImageNet's.
    """
    from fcnkit.checkpoint import CheckpointConfig, save_checkpoint
    from fcnkit.convert.segmenter import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        build_torchvision_classifier,
        from_classifier,
    )
    from fcnkit.data.io import voc_palette
    from fcnkit.utils.outputs import check_output

    if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) < 1):
        raise InputError(
            f"--num-classes {num_classes}: give a positive number of classes (or leave it out for the weights file's)"
        )
    check_output(out, "checkpoint", overwrite)
    path = Path(weights)
    state = read_state_dict(path)
    with torch.device("meta"):  # free: only to find the classifier layer's name
        head = _last_linear(build_torchvision_classifier(arch, 1))
    if f"{head}.weight" not in state:
        raise InputError(
            f"{path}: no '{head}.weight' in it, so it is not a {arch} state dict; "
            "pass the --arch the weights were saved from"
        )
    file_classes = int(state[f"{head}.weight"].shape[0])
    num_classes = int(num_classes if num_classes is not None else file_classes)
    classifier = build_torchvision_classifier(arch, num_classes)
    notes = []
    if num_classes != file_classes:
        state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
        notes.append(
            f"re-initialised the last layer '{head}' for {num_classes} classes "
            f"(the weights file has {file_classes}); trunk weights kept"
        )
    _load(
        classifier,
        state,
        path,
        arch,
        allowed_missing={k for k in classifier.state_dict() if k.startswith(f"{head}.")} if notes else set(),
    )
    model = from_classifier(classifier.eval(), input_size, pool, output)
    kwargs = {"arch": arch, "num_classes": num_classes, "input_size": input_size, "pool": pool, "output": output}
    spec = {"name": "convolutionalized", "kwargs": kwargs}
    model.fcnkit_spec = spec  # type: ignore[assignment]  # a plain attribute (nn.Module's setattr is typed)
    assert model.geometry is not None  # from_classifier measures it
    config = CheckpointConfig(
        model=spec,
        task="segmentation",
        num_classes=num_classes,
        in_channels=3,
        classes=[f"class_{i}" for i in range(num_classes)],
        palette=voc_palette(num_classes),
        normalization={"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        geometry={k: list(v) for k, v in model.geometry.items()},
        converted_from={"arch": arch, "weights": path.name, "reinitialised": [head] if notes else []},
    ).to_dict()
    save_checkpoint(out, model, config)
    return Conversion(Path(out), model, config, notes)


def _load(model: nn.Module, state: dict, path: Path, arch: str, allowed_missing: set[str]) -> None:
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = next(
            (line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc).splitlines()[0]
        )
        raise InputError(
            f"{path}: does not fit {arch} ({detail}); pass the --arch the weights were saved from"
        ) from None
    missing = [k for k in result.missing_keys if k not in allowed_missing]
    if missing or result.unexpected_keys:
        what = f"missing '{missing[0]}'" if missing else f"unexpected '{result.unexpected_keys[0]}'"
        count = len(missing) + len(result.unexpected_keys)
        raise InputError(
            f"{path}: not a {arch} state dict ({what}, {count} key(s) differ); "
            "pass the --arch the weights were saved from"
        )
