"""``fcnkit`` command line: parsing and printing only; every command calls a library function.

Each subcommand lives in ``fcnkit/cli/<name>.py`` with ``add_parser(subparsers)`` that registers
itself and sets ``func``. Bad input (:class:`fcnkit.errors.FcnkitError`) and a write the disk refused
(full, read-only, permission denied) become one line on stderr and exit code 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fcnkit import __version__
from fcnkit.errors import FcnkitError
from fcnkit.utils.outputs import os_error_message

# order = order in `fcnkit --help`
COMMANDS = ["demo", "train", "evaluate", "predict", "export", "models", "data", "rf", "convert", "experiment", "serve"]


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line too (exit 2, as argparse does)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fcnkit", description="Fully convolutional networks: train, predict, convert, measure.")
    parser.add_argument("--version", action="version", version=f"fcnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"fcnkit.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except FcnkitError as exc:
        print(f"fcnkit: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the disk refused a write (full, read-only, permission): one line, not a bug
        message = os_error_message(exc, getattr(args, "out", None) or getattr(args, "json", None))
        if message is None:
            raise
        print(f"fcnkit: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fcnkit: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
