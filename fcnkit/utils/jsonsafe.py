"""JSON output that stays strict (NaN/inf -> null), written atomically."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from fcnkit.utils.atomic import atomic_write_text

__all__ = ["json_safe", "write_json"]


def write_json(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the scores (NaN as null) atomically."""

    atomic_write_text(path, json.dumps(json_safe(result), indent=2) + "\n")
    return Path(path)


def json_safe(value: Any) -> Any:
    """NaN/inf -> None (recursively), so JSON output stays strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
