"""Every command of fcnkit's CLI is registered: a missing command module fails, never disappears."""

import importlib

import pytest

from fcnkit.cli import main as cli


def test_every_listed_command_is_in_the_parser():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == cli.COMMANDS


def test_a_missing_command_module_is_an_error(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + ["not_written_yet"])
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()
    assert importlib.import_module("fcnkit.cli.train")
