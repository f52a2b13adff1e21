"""Arguments that several commands share (one definition each): the checkpoint to use and the tile size."""

from __future__ import annotations

import argparse

__all__ = ["add_run_dir", "tile_size"]


def add_run_dir(parser: argparse.ArgumentParser) -> None:
    """The ``RUN_DIR`` positional of the commands that load a trained model (``args.run_dir``)."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder (uses best/, then last/) or checkpoint folder")


def tile_size(text: str):
    """argparse type of --tile: an int, 'auto' or 'none' (the whole image)."""
    if text in ("auto", "none", "None"):
        return None if text.lower() == "none" else "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a tile size; give an int, 'auto' or 'none'") from None
