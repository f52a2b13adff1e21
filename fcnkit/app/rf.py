"""``fcnkit rf``'s library side: resolve a registry name or a run folder and describe its geometry."""

from __future__ import annotations

from pathlib import Path

from fcnkit.errors import InputError, did_you_mean

__all__ = ["resolve_model", "describe"]


def resolve_model(name_or_dir: str, in_channels: int | None = None, kwargs: dict | None = None):
    """``(model, in_channels, label)`` for a run/checkpoint folder, a registry name (num_classes=21)
    or ``package.module:builder`` (any model: ``builder(**kwargs)``, e.g.
    ``torchvision.models.segmentation:fcn_resnet50`` with ``{"weights_backbone": null}``)."""
    path = Path(name_or_dir)
    if not path.exists() and ":" in name_or_dir:
        return _external(name_or_dir, kwargs or {}), in_channels or 3, name_or_dir
    if path.exists():
        from fcnkit.checkpoint import load_checkpoint

        model, config = load_checkpoint(path)
        return model, in_channels or int(config.get("in_channels", 3)), f"{config['model']['name']} ({path})"
    from fcnkit.models.registry import build_model, list_models, model_info

    try:
        model_info(name_or_dir)  # imports only the model modules up to the one defining it
    except InputError:
        names = list(list_models())
        raise InputError(
            f"'{name_or_dir}' is neither a run folder nor a registry model{did_you_mean(name_or_dir, names)}; "
            "see 'fcnkit models' for names"
        ) from None
    channels = in_channels or 3
    return build_model(name_or_dir, num_classes=21, in_channels=channels).eval(), channels, name_or_dir


def _external(spec: str, kwargs: dict):
    import importlib

    module, _, attr = spec.partition(":")
    try:
        builder = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(
            f"'{spec}': cannot import it ({exc}); give package.module:function of an installed package"
        ) from None
    try:
        model = builder(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a third-party builder: report its first line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(
            f"'{spec}' with {kwargs} failed ({first}); pass --kwargs JSON it accepts, "
            "with weights that need no download (e.g. weights_backbone: null)"
        ) from None
    if not hasattr(model, "eval"):
        raise InputError(f"'{spec}' returned a {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def describe(
    name_or_dir: str, input_size=None, in_channels: int | None = None, probe: bool = False, kwargs: dict | None = None
) -> str:
    """The per-layer table and summary of ``fcnkit rf`` (and the probe's summary with ``probe``)."""
    from fcnkit.geometry import receptive_field

    model, channels, label = resolve_model(name_or_dir, in_channels, kwargs)
    g = receptive_field(model, in_channels=channels, input_size=tuple(input_size) if input_size else None)
    text = f"{label}: in_channels {channels}\n\n{g.table()}"
    if probe:
        p = receptive_field(model, in_channels=channels, method="probe")
        same = (p.size, p.stride, p.offset) == (g.size, g.stride, g.offset)
        text += (
            f"\nprobe            size {p.size}, stride {p.stride}, offset {p.offset}"
            f" ({'agrees' if same else 'DIFFERS'})"
        )
    return text
