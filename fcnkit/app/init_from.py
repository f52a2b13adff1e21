"""``init_from``: start a model from the weights of any fcnkit checkpoint, where they fit.

Every tensor of the checkpoint (``model.safetensors``, never pickle) whose NAME and SHAPE match
a tensor of the model is copied in; the rest of the model keeps its fresh initialisation::

    checkpoint (allconv_cls, 10 classes)     model (allconv, 11 classes)
    features.stage0.0.0.weight  [16,1,3,3] -> features.stage0.0.0.weight  [16,1,3,3]   loaded
    ...                                       ...                                     loaded
    score.weight             [10,128,1,1]  x  score.weight             [11,128,1,1]   skipped (shape)
                                              skip_scores.0.weight ...                kept (not in checkpoint)

Class-indexed tensors (the score layers) of another class list are matched by CLASS NAME when
``classes`` (the model's class names) is given and the checkpoint records its own: the rows of
the classes both lists hold are copied, the other rows keep their initialisation. So a digit
classifier's ``score`` (classes 0-9) fills rows 1-10 of a digit-canvas segmenter's (background,
0-9) and only the background row starts fresh. A tensor counts as class-indexed when its first
dimension is the checkpoint's class count, the model's is the model's class count, and the
other dimensions agree.

Names line up by construction, not by renaming: ``allconv`` and ``allconv_cls`` build the same
body (``features.stage{i}`` / ``features.down{i}``) and 1x1 ``score`` conv from the same
``width``/``depth``/``stem_depth``/``stages``/``downsample``/``padding``/``norm``, so a classifier
trunk drops into the segmenter built with the same options. A checkpoint that shares no learned
tensor with the model is an :class:`~fcnkit.errors.InputError` naming the options to change.

Unlike ``resume`` (which continues a run: epoch, optimizer, best score), this only sets the
initial weights of a new run.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from fcnkit.errors import InputError

__all__ = ["InitReport", "init_from_checkpoint"]


@dataclass
class InitReport:
    """What :func:`init_from_checkpoint` did: ``loaded`` model tensors, ``skipped`` checkpoint
    tensors with the reason, ``kept`` model tensors left at their initialisation."""

    source: str
    source_model: str
    loaded: list[str] = field(default_factory=list)
    by_class: dict[str, str] = field(default_factory=dict)  # name -> "10 of 11 rows (classes matched by name)"
    skipped: list[tuple[str, str]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line, e.g. ``26 tensors loaded from RUN/best (allconv_cls); skipped: score.weight (...)``."""
        text = f"init from {self.source} ({self.source_model}): {len(self.loaded)} tensors loaded"
        if self.by_class:
            text += f" ({len(self.by_class)} of them by class name: {next(iter(self.by_class.values()))})"
        if self.skipped:
            shown = "; ".join(f"{name} ({why})" for name, why in self.skipped[:4])
            more = f"; and {len(self.skipped) - 4} more" if len(self.skipped) > 4 else ""
            text += f", {len(self.skipped)} skipped: {shown}{more}"
        if self.kept:
            text += f"; {len(self.kept)} left at their initialisation"
        return text

    def to_dict(self) -> dict:
        return asdict(self)


def init_from_checkpoint(model: nn.Module, path: str | os.PathLike, classes: list[str] | None = None) -> InitReport:
    """Copy into ``model`` (in place) the tensors of the checkpoint or run folder ``path`` whose
    names and shapes match, and, given the model's ``classes``, the rows of class-indexed tensors
    whose class names match (module docstring); returns the :class:`InitReport`.

    Raises :class:`~fcnkit.errors.MissingFileError` for a missing checkpoint and
    :class:`~fcnkit.errors.InputError` when no learned tensor matches (the message names the
    model options that differ from the checkpoint's, when there are such).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from fcnkit.checkpoint import WEIGHTS, read_config, resolve_checkpoint

    ckpt = resolve_checkpoint(path)
    config = read_config(ckpt)
    spec = config.get("model") or {}
    try:
        state = load_file(str(ckpt / WEIGHTS), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(
            f"{ckpt / WEIGHTS}: corrupt or truncated weights ({exc}); re-save the checkpoint or drop --init-from"
        ) from None
    target = model.state_dict()
    report = InitReport(source=str(ckpt), source_model=str(spec.get("name", "?")))
    rows = _class_rows(config.get("classes"), classes)
    matched = {}
    for name, tensor in state.items():
        if name not in target:
            report.skipped.append((name, "not in the model"))
        elif tuple(tensor.shape) == tuple(target[name].shape):
            matched[name] = tensor
        elif rows and _class_indexed(tensor, target[name], rows):
            merged = target[name].clone()
            merged[rows[1]] = tensor[rows[0]].to(merged.dtype)
            matched[name] = merged
            report.by_class[name] = f"{len(rows[0])} of {rows[3]} rows (classes matched by name)"
        else:
            report.skipped.append((name, f"shape {list(tensor.shape)} vs the model's {list(target[name].shape)}"))
    report.loaded = [n for n in target if n in matched]
    report.kept = [n for n in target if n not in matched]
    learned = {n for n, p in model.named_parameters() if p.requires_grad}
    if not learned & set(matched):
        raise InputError(
            f"--init-from {ckpt}: its '{report.source_model}' weights share no learned tensor (same name and "
            f"shape) with model '{_name(model)}'; {_fix(model, spec)}"
        )
    with torch.no_grad():
        for name, tensor in matched.items():
            target[name].copy_(tensor)  # state_dict tensors share storage with the model's
    return report


def _class_rows(source: list | None, mine: list | None):
    """``(checkpoint rows, model rows, checkpoint classes, model classes)`` for the class names
    both lists hold, or None."""
    if not source or not mine or list(source) == list(mine):
        return None
    common = [c for c in source if c in mine]
    if not common:
        return None
    return (
        torch.tensor([list(source).index(c) for c in common]),
        torch.tensor([list(mine).index(c) for c in common]),
        len(source),
        len(mine),
    )


def _class_indexed(tensor: torch.Tensor, target: torch.Tensor, rows) -> bool:
    n_source, n_mine = rows[2], rows[3]
    return (
        tensor.ndim >= 1
        and tensor.ndim == target.ndim
        and tensor.shape[0] == n_source
        and target.shape[0] == n_mine
        and tuple(tensor.shape[1:]) == tuple(target.shape[1:])
    )


def _name(model: nn.Module) -> str:
    return (getattr(model, "fcnkit_spec", None) or {}).get("name", type(model).__name__)


def _fix(model: nn.Module, spec: dict) -> str:
    """The model options to set so the architectures line up, or the general advice."""
    from fcnkit.models.registry import model_info

    mine = getattr(model, "fcnkit_spec", None)
    theirs = spec.get("kwargs") or {}
    if mine is not None:
        params = model_info(mine["name"])["defaults"]
        differ = {
            k: v
            for k, v in theirs.items()
            if k in params and k not in ("num_classes", "in_channels") and mine["kwargs"].get(k) != v
        }
        if differ:
            flags = " ".join(f"--model-option {k}={v}" for k, v in differ.items())
            return f"build the model like the checkpoint: {flags}"
        if theirs.get("in_channels") not in (None, mine["kwargs"].get("in_channels")):
            return (
                f"the checkpoint takes {theirs['in_channels']} input channels, "
                f"the data {mine['kwargs'].get('in_channels')}; use matching data"
            )
    return (
        "initialise from a checkpoint of the same family "
        "(e.g. allconv_cls -> allconv with the same width/depth/stages) or drop --init-from"
    )
