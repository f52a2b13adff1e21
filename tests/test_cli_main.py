"""The CLI shell: user errors are one line on stderr with exit 2; --help works."""

import pytest

from fcnkit.cli import main as cli
from fcnkit.errors import InputError, did_you_mean


def test_did_you_mean():
    assert did_you_mean("fcn8", ["fcn8s", "fcn16s", "allconv"]) == " (did you mean 'fcn8s'?)"
    assert did_you_mean("zzz", ["fcn8s"]) == ""


def test_user_error_is_one_line_exit_2(monkeypatch, capsys):
    parser = cli.build_parser()

    def boom(args):
        raise InputError("img.png: cannot decode image; re-export it")

    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    sub = next(a for a in parser._actions if a.dest == "command")
    p = sub.add_parser("boom")
    p.set_defaults(func=boom)
    assert cli.main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err == "fcnkit: img.png: cannot decode image; re-export it\n"


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-command"])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert "fcnkit" in capsys.readouterr().out
