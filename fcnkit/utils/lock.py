"""An OS lock on a run folder while a process trains into it.

``RUN/.lock`` is locked with a POSIX record lock (``fcntl.lockf``: exclusive, non-blocking) and
holds the PID of the holder. The kernel drops the lock when the holder exits, however it exits
(kill -9 included), so a stale ``.lock`` file of a dead process never blocks: the next process
locks it and writes its own PID. Not ``fcntl.flock``: a flock belongs to the open file, which
forked children (DataLoader workers, ``ddp_fork`` processes) share, so a killed trainer's
orphaned workers kept its lock for seconds (measured: the resume right after a kill -9 was
refused); a POSIX lock belongs to the process alone. Its one trap -- closing any descriptor of
the file drops the process's lock -- is why the holder never opens the file a second time and
one process cannot take the same lock twice. A clean exit removes the file (while holding the
lock; a process that locked the removed file notices and locks the new one, see
:meth:`RunLock.acquire`).
"""

from __future__ import annotations

import os
from pathlib import Path

from fcnkit.errors import InputError

__all__ = ["RunLock", "LOCK_FILE", "RunLockedError"]

LOCK_FILE = ".lock"
_HELD: set[str] = set()  # lock files this process holds


class RunLockedError(InputError):
    """Another live process holds the run folder's lock."""

    def __init__(self, run: Path, pid: int | None):
        who = f"process {pid}" if pid else "another process"
        super().__init__(
            f"{run} is locked by {who}, which is training into it; wait for it to finish, "
            "stop it, or pick another --out"
        )
        self.pid = pid


class RunLock:
    """``with RunLock(run):`` holds the lock of ``run`` (created if missing) or raises
    :class:`RunLockedError` naming the holder's PID. Not re-entrant; POSIX only."""

    def __init__(self, run: str | os.PathLike):
        self.run = Path(run)
        self._fd: int | None = None
        self._key = ""

    def acquire(self) -> RunLock:
        import fcntl

        self.run.mkdir(parents=True, exist_ok=True)
        path = self.run / LOCK_FILE
        key = str(path.resolve())
        if key in _HELD:  # POSIX locks do not conflict within a process: refuse here
            raise RunLockedError(self.run, os.getpid())
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except (BlockingIOError, PermissionError):
                pid = _read_pid(fd)
                os.close(fd)
                raise RunLockedError(self.run, pid) from None
            except BaseException:
                os.close(fd)
                raise
            # the holder before us may have removed the file between our open and our lock:
            # then we locked a file no one else will open; lock the one at the path instead
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd, self._key = fd, key
        _HELD.add(key)
        return self

    def release(self) -> None:
        """Remove the lock file (while still holding it, see :meth:`acquire`) and unlock."""
        if self._fd is not None:
            (self.run / LOCK_FILE).unlink(missing_ok=True)
            os.close(self._fd)  # drops the lock
            _HELD.discard(self._key)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
