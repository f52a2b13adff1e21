"""fcnkit.utils.outputs: never delete or write into what fcnkit did not write; --overwrite removes
only fcnkit's own artifacts; a folder made by a failed job goes again."""

from __future__ import annotations

import errno
import json

import pytest

from fcnkit.errors import InputError
from fcnkit.utils.outputs import MARKER, check_output, os_error_message, output_folder, prepare_output


def test_new_and_empty_folders_are_accepted_and_marked(tmp_path):
    assert check_output(tmp_path / "new", "run") is False
    assert not (tmp_path / "new").exists()  # checking writes nothing
    (tmp_path / "empty").mkdir()
    prepare_output(tmp_path / "empty", "predictions")
    assert json.loads((tmp_path / "empty" / MARKER).read_text()) == {"kind": "predictions"}


def test_a_folder_of_user_files_is_refused_even_with_overwrite(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x")
    for kind in ("run", "checkpoint", "predictions", "experiment"):
        with pytest.raises(InputError, match="thesis.tex"):
            prepare_output(mine, kind, overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


def test_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="existing file"):
        check_output(tmp_path / "f", "run", overwrite=True)
    assert (tmp_path / "f").read_text() == "x"


def test_overwrite_removes_only_the_runs_artifacts(tmp_path):
    run = prepare_output(tmp_path / "run", "run")
    for name in ("best", "last", "logs"):
        (run / name).mkdir()
        (run / name / "f").write_text("old")
    (run / "trainer.ckpt").write_text("old")
    (run / "notes.md").write_text("mine")  # a user's file in a folder fcnkit marked as its run
    with pytest.raises(InputError, match="already holds a run; continue it with --resume"):
        prepare_output(run, "run")
    prepare_output(run, "run", overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == [MARKER, "notes.md"]


def test_unmarked_runs_from_before_the_marker_are_recognised(tmp_path):
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "config.yaml").write_text("epochs: 1\n")
    with pytest.raises(InputError, match="already holds a run"):
        check_output(run, "run")
    prepare_output(run, "run", overwrite=True)
    assert [p.name for p in run.iterdir()] == [MARKER]


def test_another_kind_is_refused(tmp_path):
    prepare_output(tmp_path / "p", "predictions")
    with pytest.raises(InputError, match="not a run"):
        check_output(tmp_path / "p", "run", overwrite=True)


def test_output_folder_removes_the_folder_it_made_when_the_job_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with output_folder(tmp_path / "a" / "b", "predictions"):
            raise RuntimeError("bad input")
    assert not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with output_folder(tmp_path / "kept", "predictions") as out:
            (out / "x_mask.png").write_bytes(b"")
            raise RuntimeError("second image failed")
    assert (tmp_path / "kept" / "x_mask.png").exists()  # the first image's outputs stay


def test_disk_errors_are_one_line_with_the_path(tmp_path):
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.npy"))
    line = os_error_message(full, needed=3 << 20)
    assert line.startswith(f"{tmp_path / 'x.npy'}: cannot write, no space left") and "needs 3.0 MB" in line
    assert "read-only" in os_error_message(OSError(errno.EROFS, "Read-only file system"), tmp_path)
    assert os_error_message(OSError(errno.ENOENT, "No such file")) is None  # not a refused write
    assert os_error_message(ValueError("x")) is None


def test_convert_never_deletes_an_existing_folder(tmp_path, capsys):
    """The bug of issue 10: convert --out DIR deleted DIR with the user's files and exited 0."""
    import torch

    from fcnkit.cli.main import main

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    torch.save({"fc.weight": torch.zeros(3, 512)}, tmp_path / "w.pth")
    for extra in ([], ["--overwrite"]):
        rc = main(
            [
                "convert",
                "--arch",
                "torchvision:resnet18",
                "--weights",
                str(tmp_path / "w.pth"),
                "--out",
                str(mine),
                *extra,
            ]
        )
        assert rc == 2 and "did not write" in capsys.readouterr().err
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_a_users_config_yaml_in_an_unmarked_folder_is_theirs(tmp_path):
    """`fcnkit train --config RUN/config.yaml --out RUN`: fcnkit would rewrite that file, so refuse."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("epochs: 3\n")
    with pytest.raises(InputError, match="config.yaml"):
        prepare_output(run, "run", overwrite=True)
    assert (run / "config.yaml").read_text() == "epochs: 3\n"
