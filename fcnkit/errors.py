"""Errors for bad user input.

Every message names the file or argument at fault *and* the fix, in one line, because the CLI
prints it as is (exit code 2, no traceback). Programming errors stay ordinary exceptions.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["FcnkitError", "InputError", "MissingFileError", "did_you_mean"]


class FcnkitError(Exception):
    """Base class: a problem with what the user gave us, with the fix in the message."""


class InputError(FcnkitError, ValueError):
    """A bad value, argument, image, mask or config key."""


class MissingFileError(FcnkitError, FileNotFoundError):
    """A file or folder the user named does not exist (or lacks the expected content)."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the nearest choice, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""
