"""The ``fcnkit export RUN_DIR --format onnx|torchscript`` job: one file that runs without fcnkit.

The model is traced once (``torch.jit.trace``; ONNX through PyTorch's TorchScript-based exporter)
at an odd size, with batch, height and width dynamic. The export is then verified: onnxruntime
(or the reloaded TorchScript module) against PyTorch at three sizes, one of them odd and one a
batch of two; a difference above ``tolerance`` (relative to the logits' scale) fails the job and
nothing is left behind. The checkpoint's config (classes, palette, normalisation, model spec) and
the receptive-field geometry travel inside the file: ONNX ``metadata_props["fcnkit"]``, TorchScript
``_extra_files["fcnkit.json"]``, both the JSON ``{"config": ..., "geometry": ...}``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from fcnkit.errors import InputError

__all__ = ["export_checkpoint", "export_model", "FORMATS", "DEFAULT_OPSET"]

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
DEFAULT_OPSET = 17
TOLERANCE = 1e-4  # max |export - pytorch| / max(1, max |pytorch|)


def export_checkpoint(run_dir, fmt: str = "onnx", out=None, opset: int = DEFAULT_OPSET) -> dict:
    """Export the checkpoint in ``run_dir`` (default file: ``<checkpoint>/model.onnx`` or ``model.pt``)."""
    from fcnkit.checkpoint import load_checkpoint, resolve_checkpoint

    _check_format(fmt)
    ckpt = resolve_checkpoint(run_dir)
    model, config = load_checkpoint(ckpt)
    out = Path(out) if out is not None else ckpt / f"model{SUFFIX[fmt]}"
    return export_model(model, out, fmt, opset=opset, config=config, in_channels=int(config.get("in_channels", 3)))


def export_model(
    model: nn.Module,
    out,
    fmt: str = "onnx",
    *,
    opset: int = DEFAULT_OPSET,
    config: dict | None = None,
    in_channels: int = 3,
) -> dict:
    """Export any segmentation ``model`` to ``out`` and verify it; returns ``{"path", "format",
    "sizes", "max_diff", "scale"}`` (``max_diff``: largest |export - PyTorch| over the three sizes)."""
    from fcnkit.geometry import receptive_field
    from fcnkit.inference.onnx_model import geometry_to_json
    from fcnkit.utils.atomic import atomic_path

    _check_format(fmt)
    if not isinstance(opset, int) or not 11 <= opset <= 23:
        raise InputError(
            f"opset={opset!r} is not supported; use an ONNX opset between 11 and 23 (default {DEFAULT_OPSET})"
        )
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out}: is a folder; give the output file, e.g. {out / ('model' + SUFFIX[fmt])}")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: no such folder for the exported file; create it first")
    model = model.eval().to("cpu")
    geometry = receptive_field(model, in_channels=in_channels)
    meta = json.dumps({"config": config or {}, "geometry": geometry_to_json(geometry)}, default=_plain)
    sizes = _sizes(geometry, in_channels)
    example = torch.randn(*sizes[0], generator=torch.Generator().manual_seed(0))
    with atomic_path(out, suffix=SUFFIX[fmt]) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's warnings are about branches it cannot see; verified below
            if fmt == "onnx":
                _write_onnx(model, example, tmp, opset, meta)
            else:
                _write_torchscript(model, example, tmp, meta)
        max_diff, scale = _verify(model, tmp, fmt, sizes[1:])
        if max_diff > TOLERANCE * max(1.0, scale):
            raise InputError(
                f"{type(model).__name__}: the {fmt} export differs from PyTorch by {max_diff:.3g} "
                f"(logits up to {scale:.3g}); the model has size-dependent Python code the tracer "
                "cannot follow: report it with the model's name"
            )
    return {
        "path": out,
        "format": fmt,
        "sizes": sizes[1:],
        "max_diff": max_diff,
        "scale": scale,
        "opset": opset if fmt == "onnx" else None,
    }


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise InputError(f"format {fmt!r} is not known; use one of {', '.join(FORMATS)}")


def _sizes(geometry, channels: int) -> list[tuple[int, ...]]:
    """Trace size, then the three verification sizes: odd, a batch of two, larger and odd."""
    m = max(geometry.input_multiple)
    base = max(64, int(max(geometry.size)) // 2)
    if m > 1:  # models that only take multiples of m (resized outputs)
        base = -(-base // m) * m
        return [
            (1, channels, base + m, base + 2 * m),
            (1, channels, base + 3 * m, base + m),
            (2, channels, base, base + 2 * m),
            (1, channels, 2 * base + m, base + 5 * m),
        ]
    return [
        (1, channels, base + 33, base + 67),
        (1, channels, base + 1, base + 35),
        (2, channels, base, base + 16),
        (1, channels, 2 * base + 45, base + 99),
    ]


def _write_onnx(model, example, tmp: Path, opset: int, meta: str) -> None:
    try:
        import onnx
    except ImportError:
        raise InputError("ONNX export needs the onnx and onnxruntime packages; pip install 'fcnkit[onnx]'") from None
    axes = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(
        _Logits(model).eval(),
        (example,),
        str(tmp),
        dynamo=False,
        opset_version=opset,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": axes, "logits": {0: "batch", 2: "out_height", 3: "out_width"}},
    )
    proto = onnx.load(str(tmp))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "fcnkit", meta
    onnx.save(proto, str(tmp))


def _write_torchscript(model, example, tmp: Path, meta: str) -> None:
    traced = torch.jit.trace(_Logits(model).eval(), (example,), strict=False, check_trace=False)
    torch.jit.save(traced, str(tmp), _extra_files={"fcnkit.json": meta})


def _verify(model, path: Path, fmt: str, sizes) -> tuple[float, float]:
    if fmt == "onnx":
        from fcnkit.inference.onnx_model import OnnxModel

        exported = OnnxModel(path, providers=["CPUExecutionProvider"])
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            exported = torch.jit.load(str(path), map_location="cpu")
    wrapped = _Logits(model).eval()
    max_diff = scale = 0.0
    gen = torch.Generator().manual_seed(1)
    for size in sizes:
        x = torch.randn(*size, generator=gen)
        with torch.no_grad():
            ref, got = wrapped(x), exported(x)
        if tuple(got.shape) != tuple(ref.shape):
            raise InputError(
                f"{type(model).__name__}: the {fmt} export gives {tuple(got.shape)} for {tuple(size)}, "
                f"PyTorch {tuple(ref.shape)}; the model has size-dependent code the tracer cannot follow"
            )
        max_diff = max(max_diff, float((got - ref).abs().max()))
        scale = max(scale, float(ref.abs().max()))
    return max_diff, scale


class _Logits(nn.Module):
    """The model's score map only (a dict's ``"out"``, a tuple's first item)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        from fcnkit.geometry.analytic import select_output

        return select_output(self.model(x))


def _plain(obj):
    if isinstance(obj, (Path, os.PathLike)):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")
