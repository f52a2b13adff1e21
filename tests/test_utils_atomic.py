"""Atomic writes: a failure leaves neither a half-written target nor temp litter."""

import pytest

from fcnkit.utils.atomic import atomic_dir, atomic_path, atomic_write_text


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_dir_swaps_whole_folder(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError("crash")
    assert (target / "a").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_atomic_outputs_have_normal_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "a").write_text("1")
            (tmp / "a").chmod(0o600)  # as safetensors leaves its file
    finally:
        os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "d" / "a").stat().st_mode & 0o777 == 0o644


def test_atomic_dir_swaps_an_old_folder_without_a_moment_of_absence(tmp_path):
    import threading

    from fcnkit.utils.atomic import atomic_dir

    target = tmp_path / "last"
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("0")
    missing, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            if not target.is_dir():
                missing.append(1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(1, 40):
            with atomic_dir(target) as tmp:
                (tmp / "v").write_text(str(i))
    finally:
        stop.set()
        watcher.join()
    assert (target / "v").read_text() == "39" and not missing
    assert [p.name for p in tmp_path.iterdir()] == ["last"]  # the old copies were removed


def test_atomic_dir_falls_back_to_two_renames(tmp_path, monkeypatch):
    import fcnkit.utils.atomic as atomic

    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    for i in range(2):
        with atomic.atomic_dir(tmp_path / "last") as tmp:
            (tmp / "v").write_text(str(i))
    assert (tmp_path / "last" / "v").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["last"]


def test_stale_temps_of_a_dead_process_are_removed_and_a_lost_folder_put_back(tmp_path):
    from fcnkit.utils.atomic import remove_stale_temps

    (tmp_path / ".trainer.ckpt.abc123.ckpt").write_bytes(b"half")
    (tmp_path / ".best.tmp-xyz").mkdir()
    (tmp_path / ".last.old-4242").mkdir()  # killed between the two renames: last/ is missing
    (tmp_path / ".last.old-4242" / "v").write_text("old")
    (tmp_path / ".hidden-user-file").write_text("mine")
    removed = remove_stale_temps(tmp_path, ("trainer.ckpt", "best", "last"))
    assert sorted(p.name for p in removed) == [".best.tmp-xyz", ".trainer.ckpt.abc123.ckpt"]
    assert (tmp_path / "last" / "v").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden-user-file", "last"]


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    # Linux renameat2(RENAME_EXCHANGE): what keeps last/ present (CI runs on Linux, glibc >= 2.28)
    from fcnkit.utils.atomic import _exchange

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "v").write_text(name)
    assert _exchange(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a" / "v").read_text() == "b" and (tmp_path / "b" / "v").read_text() == "a"
