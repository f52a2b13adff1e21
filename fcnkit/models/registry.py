"""The model registry: a dict from name to a keyword-only builder function (timm style).

    @register("allconv", task="segmentation", description="small all-convolutional segmenter")
    def allconv(*, num_classes, in_channels=3, width=32, ...): ...

    build_model("allconv", num_classes=11, width=16)   # -> nn.Module with .fcnkit_spec

Model modules are imported lazily, on the first call that needs the registry, from
``_MODEL_MODULES``; so this module imports none of them and there are no import cycles. A helper
that adds a family of models appends its module name to that list.

``build_model`` checks every keyword against the builder's signature and attaches
``model.fcnkit_spec = {"name", "kwargs"}``: every argument with its effective value (defaults
included), JSON-normalised, so ``build_model(spec["name"], **spec["kwargs"])`` rebuilds the same
architecture even if a default changes later. Arguments that only say where initial weights come
from (``init_only``, e.g. ``backbone_weights``) are left out of the spec: a checkpoint carries its
own weights and must not depend on a file that may be gone.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fcnkit.errors import InputError, did_you_mean

__all__ = [
    "register",
    "list_models",
    "model_info",
    "build_model",
    "count_parameters",
    "model_table",
    "check_choice",
    "check_int",
    "check_bool",
]

TASKS = ("segmentation", "classification")

# Modules that define registered models; imported on first use (see module docstring).
_MODEL_MODULES = ["fcnkit.models.allconv", "fcnkit.models.residual", "fcnkit.models.fcn", "fcnkit.convert.segmenter"]
_loaded: set[str] = set()


@dataclass(frozen=True)
class _Entry:
    name: str
    builder: Callable[..., nn.Module]
    task: str
    description: str
    init_only: tuple[str, ...] = field(default=())


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, *, task: str, description: str, init_only: Iterable[str] = ()):
    """Decorator registering a keyword-only builder ``fn(*, num_classes, in_channels=3, **opts)``.

    ``init_only`` names arguments that only choose initial weights (file paths); they are not
    kept in ``fcnkit_spec``.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        params = inspect.signature(fn).parameters
        positional = [p.name for p in params.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        if positional or "num_classes" not in params or "in_channels" not in params:
            raise TypeError(f"model builder {fn.__name__} must be keyword-only with num_classes and in_channels")
        old = _REGISTRY.get(name)
        same = old is not None and (old.builder.__module__, old.builder.__qualname__) == (
            fn.__module__,
            fn.__qualname__,
        )
        if old is not None and not same:  # a reloaded module may register its own builder again
            raise ValueError(f"model name {name!r} is registered twice ({old.builder.__module__} and {fn.__module__})")
        _REGISTRY[name] = _Entry(name, fn, task, description, tuple(init_only))
        return fn

    return decorate


def _ensure_loaded(until: str | None = None) -> None:
    """Import the model modules in order; stop early once ``until`` is registered (so building an
    allconv model does not import torchvision, whose import also loads ``torch._dynamo``)."""
    # every family module exists: a missing one is a packaging bug and must fail loudly
    for module in _MODEL_MODULES:
        if until is not None and until in _REGISTRY:
            return
        if module not in _loaded:
            importlib.import_module(module)
            _loaded.add(module)


def _entry(name: str) -> _Entry:
    _ensure_loaded(until=name)
    if name not in _REGISTRY:
        names = sorted(_REGISTRY)
        raise InputError(
            f"unknown model '{name}'{did_you_mean(name, names)}; available models: {', '.join(names)} "
            "(see 'fcnkit models')"
        )
    return _REGISTRY[name]


def list_models(task: str | None = None) -> list[str]:
    """Registered model names (sorted), optionally only those of one ``task``."""
    _ensure_loaded()
    if task is not None and task not in TASKS:
        raise InputError(
            f"task '{task}' is not a model task{did_you_mean(task, TASKS)}; use one of: {', '.join(TASKS)}"
        )
    return sorted(n for n, e in _REGISTRY.items() if task is None or e.task == task)


def model_info(name: str) -> dict[str, Any]:
    """``{"name", "task", "description", "defaults"}`` of a registered model (defaults: kwarg -> value)."""
    entry = _entry(name)
    defaults = {
        p.name: p.default
        for p in inspect.signature(entry.builder).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    return {"name": name, "task": entry.task, "description": entry.description, "defaults": defaults}


def build_model(name: str, *, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` and attach ``model.fcnkit_spec`` (see module docstring).

    Unknown names and keywords raise :class:`~fcnkit.errors.InputError` with the nearest valid
    name; invalid values raise it from the builder, naming the argument and its valid values.
    """
    entry = _entry(name)
    _check_count("num_classes", num_classes)
    _check_count("in_channels", in_channels)
    signature = inspect.signature(entry.builder)
    valid = [p for p in signature.parameters if p not in ("num_classes", "in_channels")]
    for key in kwargs:
        if key not in valid:
            raise InputError(
                f"model '{name}' has no argument '{key}'{did_you_mean(key, valid)}; "
                f"valid arguments: {', '.join(valid) or '(none)'}"
            )
    bound = signature.bind(num_classes=num_classes, in_channels=in_channels, **kwargs)
    bound.apply_defaults()
    try:
        model = entry.builder(**bound.arguments)
    except InputError as exc:
        raise InputError(f"model '{name}': {exc}") from None
    spec_kwargs = {k: v for k, v in bound.arguments.items() if k not in entry.init_only}
    try:
        spec_kwargs = json.loads(json.dumps(spec_kwargs))
    except (TypeError, ValueError):
        bad = [k for k, v in spec_kwargs.items() if not _json_ok(v)]
        raise InputError(
            f"model '{name}': argument(s) {', '.join(bad)} must be plain numbers, strings, booleans or lists "
            "so the checkpoint config can rebuild the model"
        ) from None
    model.fcnkit_spec = {"name": name, "kwargs": spec_kwargs}  # type: ignore[assignment]  # a plain attribute
    return model


def count_parameters(name: str, *, num_classes: int = 21, in_channels: int = 3, **kwargs: Any) -> int:
    """Number of trainable parameters of a model, built on the "meta" device (no memory, no init).

    Fixed layers (a frozen bilinear upsampling) are not counted: they are not learned.
    """
    with torch.device("meta"):
        model = build_model(name, num_classes=num_classes, in_channels=in_channels, **kwargs)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def model_table(task: str | None = None, *, num_classes: int = 21, in_channels: int = 3) -> list[dict[str, Any]]:
    """One row per model: ``{"name", "task", "params", "description"}`` (params for default kwargs)."""
    rows = []
    for name in list_models(task):
        entry = _REGISTRY[name]
        params = count_parameters(name, num_classes=num_classes, in_channels=in_channels)
        rows.append(
            {
                "name": name,
                "task": entry.task,
                "params": params,
                "description": entry.description,
                "backbone": _default_backbone(entry),
            }
        )
    return rows


def _default_backbone(entry) -> str | None:
    """The default of a builder's ``backbone`` keyword (None for models without one)."""
    import inspect

    builder = getattr(entry, "builder", None) or getattr(entry, "fn", None)
    if builder is None:
        return None
    param = inspect.signature(builder).parameters.get("backbone")
    return None if param is None or param.default is inspect.Parameter.empty else str(param.default)


def check_choice(argument: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise InputError naming the argument and the fix."""
    choices = list(choices)
    if value not in choices:
        raise InputError(
            f"{argument}={value!r} is not valid{did_you_mean(str(value), choices)}; "
            f"use one of: {', '.join(repr(c) for c in choices)}"
        )
    return value


def check_int(argument: str, value: Any, minimum: int = 0) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise InputError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{argument}={value!r} is not valid; use an integer >= {minimum}")
    return value


def check_bool(argument: str, value: Any) -> bool:
    """Return ``value`` if it is a bool, else raise InputError naming the argument."""
    if not isinstance(value, bool):
        raise InputError(f"{argument}={value!r} is not valid; use true or false")
    return value


def _check_count(argument: str, value: Any) -> None:
    check_int(argument, value, minimum=1)


def _json_ok(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
