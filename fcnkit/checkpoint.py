"""Checkpoints: a folder with ``model.safetensors`` (weights) and ``config.json`` (everything else).

Nothing is ever unpickled, so a checkpoint from anywhere is safe to open. The config names the
model by its registry name and keyword arguments; loading rebuilds it with ``build_model`` and
loads the weights strictly, so a checkpoint of another architecture is a clear error.

config.json is one :class:`CheckpointConfig` (the single definition of its keys)::

    format, version, model {name, kwargs}, task, num_classes, in_channels, classes, palette,
    normalization {mean, std}, plus optional geometry, train, metrics, converted_from, input.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcnkit.errors import InputError, MissingFileError
from fcnkit.utils.atomic import atomic_dir

__all__ = ["CheckpointConfig", "save_checkpoint", "load_checkpoint", "read_config", "resolve_checkpoint"]

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT = "fcnkit-checkpoint"
VERSION = 1


@dataclasses.dataclass
class CheckpointConfig:
    """What a checkpoint's config.json holds besides the weights; ``to_dict()`` is the JSON.

    ``model`` is the registry spec ``{"name", "kwargs"}`` (``build_model(name, **kwargs)``);
    ``normalization`` the training set's ``{"mean": [C], "std": [C]}``; ``palette`` one RGB
    triple per class. ``train`` (the resolved train config), ``metrics`` (validation scores of the
    checkpoint's epoch), ``geometry`` and ``converted_from`` are optional.
    """

    model: dict[str, Any]
    task: str
    num_classes: int
    in_channels: int
    classes: list[str]
    palette: list[list[int]]
    normalization: dict[str, list[float]]
    train: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    geometry: dict[str, list] | None = None
    converted_from: dict[str, Any] | None = None
    #: what the training images were like: {dtype, p1, p99 (after dtype scaling), size [H, W], images}
    input: dict[str, Any] | None = None

    @classmethod
    def from_info(cls, model: dict[str, Any], info: Any, **extra: Any) -> CheckpointConfig:
        """From a dataset's ``DatasetInfo`` (classes, palette, normalisation of the training set)."""
        return cls(
            model=model,
            task=str(info.task),
            num_classes=int(info.num_classes),
            in_channels=int(info.in_channels),
            classes=[str(c) for c in info.class_names],
            palette=[[int(v) for v in c] for c in info.palette],
            normalization={"mean": [float(v) for v in info.mean], "std": [float(v) for v in info.std]},
            **extra,
        )

    @staticmethod
    def validate(config: Any, where: str | os.PathLike) -> None:
        """Refuse a config.json whose fields have the wrong type or disagree with each other (model
        spec vs num_classes/in_channels, mean/std length vs in_channels, class names vs num_classes):
        one :class:`~fcnkit.errors.InputError` naming ``where`` and the field."""
        fix = "re-save the checkpoint with fcnkit (it was edited or written by something else)"

        def bad(what: str) -> InputError:
            return InputError(f"{where}: {what}; {fix}")

        if not isinstance(config, dict):
            raise bad(f"holds a JSON {type(config).__name__}, not an object")
        model = config.get("model")
        if (
            not isinstance(model, dict)
            or not isinstance(model.get("name"), str)
            or not isinstance(model.get("kwargs", {}), dict)
        ):
            raise bad(f'\'model\' must be {{"name": str, "kwargs": {{...}}}}, got {model!r:.60}')
        kwargs = model.get("kwargs", {})
        for key in ("num_classes", "in_channels"):  # optional in a hand-made config: the model spec has them
            value = config.get(key, kwargs.get(key))
            if value is None and key not in config:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(f"'{key}' must be a positive integer, got {value!r:.40}")
            if key in kwargs and kwargs[key] != value:
                raise bad(f"'{key}' is {value} but the model spec says {kwargs[key]!r:.40}")
        norm = config.get("normalization") or {}
        if not isinstance(norm, dict):
            raise bad(f'\'normalization\' must be {{"mean": [...], "std": [...]}}, got {norm!r:.60}')
        for key in ("mean", "std"):
            values = norm.get(key)
            if values is None:
                continue
            if not isinstance(values, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
            ):
                raise bad(f"normalization {key} must be a list of finite numbers, got {values!r:.60}")
            channels = config.get("in_channels", kwargs.get("in_channels"))
            if channels is not None and len(values) != channels:
                raise bad(f"normalization {key} has {len(values)} values but in_channels is {channels}")
            if key == "std" and any(v <= 0 for v in values):
                raise bad(f"normalization std must be > 0, got {values}")
        classes, k = config.get("classes"), config.get("num_classes", kwargs.get("num_classes"))
        if classes is not None and (not isinstance(classes, list) or (k is not None and len(classes) != k)):
            raise bad(f"'classes' must list {k} names (num_classes), got {classes!r:.60}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (optional fields left out when unset)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def model_spec(model: nn.Module) -> dict:
    """The ``{"name", "kwargs"}`` that ``build_model`` attached to ``model``."""
    spec = getattr(model, "fcnkit_spec", None)
    if spec is None:
        raise InputError(
            f"{type(model).__name__} was not built by fcnkit.build_model; pass config={{'model': "
            "{'name': ..., 'kwargs': {...}}} to save_checkpoint so it can be rebuilt"
        )
    return spec


def save_checkpoint(
    directory: str | os.PathLike, model: nn.Module, config: CheckpointConfig | dict[str, Any] | None = None
) -> Path:
    """Write ``model`` and ``config`` to the folder ``directory`` atomically (temp folder + rename).

    ``config["model"]`` defaults to the spec that ``build_model`` attached to the model.
    Returns the folder's path.
    """
    from safetensors.torch import save_file

    config = config.to_dict() if isinstance(config, CheckpointConfig) else dict(config or {})
    config.setdefault("model", model_spec(model))
    config["format"], config["version"] = FORMAT, VERSION
    # safetensors refuses shared/non-contiguous storage: store an independent copy of each tensor
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_dir(directory) as tmp:
        _save_weights(save_file, state, tmp / WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=_json_default))
    return Path(directory)


def _save_weights(save_file, state: dict, path: Path) -> None:
    """safetensors' writer reports a full disk as ``SafetensorError('... (os error 28)')``: made an
    OSError again, so it is answered like every other refused write."""
    import re

    from safetensors import SafetensorError

    try:
        save_file(state, str(path), metadata={"format": "pt"})
    except SafetensorError as exc:
        code = re.search(r"os error (\d+)", str(exc))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """Accept a checkpoint folder or a run folder (then its ``best/``, else ``last/``)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(
            f"{path}: no such run or checkpoint folder; give a run folder made by 'fcnkit train' or a checkpoint folder"
        )
    if (path / CONFIG).is_file() and (path / WEIGHTS).is_file():
        return path
    for sub in ("best", "last"):
        if (path / sub / CONFIG).is_file() and (path / sub / WEIGHTS).is_file():
            return path / sub
    raise MissingFileError(
        f"{path}: no checkpoint here (expected {CONFIG} + {WEIGHTS}, or best/ or last/ holding them); "
        "train one with 'fcnkit train --out RUN_DIR' or point at a checkpoint folder"
    )


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config.json of a checkpoint or run folder, validated."""
    ckpt = resolve_checkpoint(path)
    try:
        config = json.loads((ckpt / CONFIG).read_text())
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise InputError(f"{ckpt / CONFIG}: unreadable checkpoint config ({first}); re-save the checkpoint") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or "model" not in config:
        raise InputError(f"{ckpt / CONFIG}: not an fcnkit checkpoint config; point at a folder written by fcnkit")
    CheckpointConfig.validate(config, ckpt / CONFIG)
    return config


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", expect_model: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint (or run) folder and load its weights; returns ``(model, config)``.

    The model is in eval mode. ``expect_model`` (a registry name) guards against loading a
    checkpoint of another architecture where one is expected.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from fcnkit.models.registry import build_model
    from fcnkit.utils.device import resolve_device

    map_location = resolve_device(map_location)  # a bad --device is named as such, not as bad weights
    ckpt = resolve_checkpoint(path)
    config = read_config(ckpt)
    spec = config["model"]
    if expect_model is not None and spec["name"] != expect_model:
        raise InputError(
            f"{ckpt}: checkpoint is a '{spec['name']}' model, not '{expect_model}'; "
            f"use --model {spec['name']} or another checkpoint"
        )
    model = build_model(spec["name"], **spec.get("kwargs", {}))
    try:
        state = load_file(str(ckpt / WEIGHTS), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{ckpt / WEIGHTS}: corrupt or truncated weights ({exc}); re-train or re-save it") from None
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise InputError(
            f"{ckpt / WEIGHTS}: {len(broken)} tensor(s) hold NaN/inf (e.g. '{broken[0]}'), so the model "
            "diverged or the file was damaged; use an earlier checkpoint or re-train"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "shape mismatch"
        raise InputError(
            f"{ckpt}: weights do not fit a '{spec['name']}' model built with {spec.get('kwargs', {})} "
            f"({first}); the checkpoint belongs to another architecture, rebuild with its config"
        ) from None
    model.to(map_location).eval()
    return model, config


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (Path,)):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "tolist"):  # numpy scalars/arrays
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"config value of type {type(obj).__name__} is not JSON-serialisable")
