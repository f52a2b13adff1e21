"""Atomic writes: write to a temporary sibling, then rename, so readers (and a crash) never see
half-written files or checkpoint folders."""

from __future__ import annotations

import contextlib
import errno
import functools
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_dir", "atomic_write_text", "atomic_write_bytes", "remove_stale_temps"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: Path, directory: bool) -> None:
    """mkstemp/mkdtemp (and some writers, e.g. safetensors) create 0600/0700 entries; give the
    result, and for a folder everything in it, the permissions a plain open()/mkdir() would."""
    mask = _umask()
    if directory:
        for sub in tmp.rglob("*"):
            os.chmod(sub, (0o777 if sub.is_dir() else 0o666) & ~mask)
    os.chmod(tmp, (0o777 if directory else 0o666) & ~mask)


def _name(exc: BaseException, path: Path, tmp: Path | None = None) -> None:
    """A write error names the destination, not the temporary (which is gone), and one without a
    file name (a full disk while a library writes) gets it too, so the one-line message can say
    where (:func:`fcnkit.utils.outputs.os_error_message`)."""
    if not isinstance(exc, OSError):
        return
    if not exc.filename or str(exc.filename) == str(tmp):
        exc.filename = str(path)
    elif tmp is not None and str(exc.filename).startswith(str(tmp)):
        exc.filename = str(path) + str(exc.filename)[len(str(tmp)) :]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    ``suffix`` keeps the extension for writers that infer the format from it (PIL, matplotlib).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _publish(tmp, directory=False)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        _name(exc, path, Path(tmp))
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes ``path``. An old ``path`` is swapped out in
    one step where the OS can (``renameat2``), so ``path`` is never missing once it existed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        _publish(tmp, directory=True)
        if path.exists() and _exchange(tmp, path):
            pass  # path now holds the new folder, tmp the old one (removed below)
        elif path.exists():  # no atomic exchange here: a reader may find path missing for a moment
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            tmp = old
        else:
            os.replace(tmp, path)
            return
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _name(exc, path, tmp)
        raise
    shutil.rmtree(tmp, ignore_errors=True)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``, glibc >= 2.28); False
    where the platform or file system cannot, so the caller falls back to two renames."""
    import ctypes

    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@functools.cache
def _renameat2():
    import ctypes
    import ctypes.util

    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


def remove_stale_temps(folder: str | os.PathLike, names: tuple[str, ...]) -> list[Path]:
    """Remove the temp files/folders that :func:`atomic_path`/:func:`atomic_dir` leave behind when
    their process dies (``.NAME.*``: ``.NAME.tmp-*``, ``.NAME.old-PID``, ``.NAME.XXXX.ext``) for
    each of ``names`` in ``folder``; a ``NAME`` folder lost between two renames is put back from
    its ``.NAME.old-PID``. Call it only while no other process writes there (e.g. under a
    :class:`fcnkit.utils.lock.RunLock`). Returns what was removed."""
    folder = Path(folder)
    removed = []
    for name in names:
        for stale in sorted(folder.glob(f".{glob.escape(name)}.*")):
            if ".old-" in stale.name and stale.is_dir() and not (folder / name).exists():
                os.replace(stale, folder / name)  # killed between the two renames: the old one is whole
                continue
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
