"""Where a checkpoint's training data is: the absolute folder it was trained on, else the same
folder relative to the run (a project moved as a whole), else the name as written (built-ins)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["training_data"]


def training_data(train: dict[str, Any], checkpoint_dir: str | os.PathLike) -> str | None:
    """``train["data"]`` if it exists (or is a built-in name), else the run folder + ``data_relative``.

    ``checkpoint_dir`` is a checkpoint folder (``RUN/best``) or the run folder itself; the relative
    form is relative to the run folder (where ``config.yaml`` lives).
    """
    data = train.get("data")
    if data is None or not Path(str(data)).is_absolute() or Path(str(data)).exists():
        return data
    relative = train.get("data_relative")
    ckpt = Path(checkpoint_dir)
    for run in (ckpt.parent, ckpt):
        if relative and (run / relative).exists():
            return str((run / relative).resolve())
    return data


def data_summary(data_name: str, train_set, val_set, val_split: str = "val") -> tuple[str, list[str]]:
    """``(line, warnings)`` said when training starts: the classes and where they came from, the
    split sizes; warnings for a validation (or test) split too small to score."""
    from fcnkit.data.layouts import MIN_SCORED_IMAGES, small_split_warnings

    info = train_set.info
    names = list(info.class_names)
    shown = ", ".join(names[:8]) + (f", ... ({len(names) - 8} more)" if len(names) > 8 else "")
    source = f" from {info.class_source}" if getattr(info, "class_source", "") else ""
    layout = getattr(train_set, "layout", None)
    if layout is not None:
        sizes = ", ".join(f"{s} {len(p)}" for s, p in layout.splits.items())
        warnings = small_split_warnings(layout, (val_split, "test") if val_split != "test" else ("test",))
    else:
        sizes = f"train {len(train_set)}, {val_split} {len(val_set)}"
        n = len(val_set)
        warnings = (
            [
                f"data '{data_name}': the {val_split} split has only {n} images, too few to score "
                f"(fewer than {MIN_SCORED_IMAGES})"
            ]
            if 0 < n < MIN_SCORED_IMAGES
            else []
        )
    line = f"data {data_name}: {info.num_classes} classes ({shown}){source}; {sizes}"
    return line, warnings
