"""Atomic writes: write to a temporary sibling, then rename, so readers (and a crash) never see
half-written files or checkpoint folders."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_dir", "atomic_write_text", "atomic_write_bytes"]


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
    """Yield a temporary folder; on success it becomes ``path`` (an old ``path`` is replaced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        _publish(tmp, directory=True)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _name(exc, path, tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
