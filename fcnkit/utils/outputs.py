"""Where fcnkit writes: the ONE rule for every ``--out`` (train, convert, predict, experiment) and
``evaluate --json``, and the one-line answer when the disk refuses a write.

The rule: fcnkit never deletes or overwrites what it did not write.

- ``--out`` may be new, an empty folder, or a folder fcnkit wrote before: it holds the marker
  file ``.fcnkit`` (JSON ``{"kind": ...}``, written when fcnkit creates or adopts the folder), or,
  for folders from before the marker, nothing but the known artifacts of its kind.
- Anything else (a file, a folder with the user's files, a folder of another kind) is refused
  with one line naming the path and the fix, before anything is read or written.
- ``overwrite`` removes only the artifacts of its kind (a run's ``best/``, ``last/``, ...); other
  files in a folder fcnkit marked stay.
- :func:`output_folder` also removes a folder it created if the job fails before writing anything.

Disk full, read-only and permission errors become one line with the destination's path and, where
known, the space needed (:func:`os_error_message`; the CLI prints it, exit 2); memory-mapped outputs
reserve their blocks first (:func:`preallocate`), so a full disk is that error, not a SIGBUS.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from fcnkit.errors import FcnkitError, InputError
from fcnkit.utils.lock import LOCK_FILE

__all__ = [
    "OutputKind",
    "KINDS",
    "MARKER",
    "OutputError",
    "check_output",
    "prepare_output",
    "output_folder",
    "check_output_file",
    "os_error_message",
    "preallocate",
    "remove_artifacts",
]

MARKER = ".fcnkit"


class OutputError(FcnkitError):
    """A write the disk refused (full, read-only, no permission): one line with the path and the fix."""


@dataclass(frozen=True)
class OutputKind:
    """What one job writes into its folder: ``artifacts`` are glob patterns of its own entries
    (``overwrite`` removes these and nothing else); ``needs_overwrite``: an existing output of this
    kind is replaced only with ``overwrite`` (a run, a checkpoint), else outputs are replaced by name.
    ``weak``: artifact names a user may well have written themselves (a run's ``config.yaml``): in a
    folder without the marker they count as fcnkit's only next to a real output (``best/``, ...)."""

    name: str
    what: str
    artifacts: tuple[str, ...]
    needs_overwrite: bool
    flag: str = "--out"
    fix: str = "pick another --out"
    weak: tuple[str, ...] = ()


KINDS = {
    k.name: k
    for k in (
        OutputKind(
            "run",
            "a run",
            (
                "best",
                "last",
                "trainer.ckpt",
                "logs",
                "metrics.csv",
                "config.yaml",
                "curves.png",
                "report.md",
                "confusion.png",
                "predictions.png",
                "predictions",
                "init_from.json",
                ".trainer.ckpt.*",
                ".best.*",
                ".last.*",
                ".config.yaml.*",
                ".metrics.csv.*",
                ".report.md.*",
                ".*.png",
                "scores_*.json",
                "*.lock",
                ".lock",
                "lock",
                "train.log",
            ),
            needs_overwrite=True,
            fix="continue it with --resume {path}, start over with --overwrite, or pick another --out",
            weak=("config.yaml", "report.md", "metrics.csv"),
        ),
        OutputKind(
            "checkpoint",
            "a checkpoint",
            ("model.safetensors", "config.json"),
            needs_overwrite=True,
            fix="replace it with --overwrite, or pick another --out",
        ),
        OutputKind(
            "predictions",
            "predictions",
            (
                "*_mask.png",
                "*_mask.tif",
                "*_mask.ome.zarr",
                "*_logits.zarr",
                ".*.partial",
                "*_overlay.png",
                "*_prob.npy",
                ".*.npy",
                ".*_mask.*",
                ".*_overlay.*",
                ".*_prob.*",
            ),
            needs_overwrite=False,
        ),
        OutputKind(
            "experiment",
            "an experiment",
            (
                "results.json",
                "summary.md",
                "*.png",
                "runs",
                "classifier",
                "finetuned",
                "scratch",
                ".results.json.*",
                ".summary.md.*",
                ".*.png",
            ),
            needs_overwrite=False,
        ),
    )
}


def _kind(kind: str | OutputKind) -> OutputKind:
    return kind if isinstance(kind, OutputKind) else KINDS[kind]


def _marker_kind(path: Path) -> str | None:
    try:
        return str(json.loads((path / MARKER).read_text()).get("kind"))
    except (OSError, ValueError, AttributeError):
        return None


def _is_artifact(name: str, kind: OutputKind) -> bool:
    return name == MARKER or any(fnmatch(name, pattern) for pattern in kind.artifacts)


def _holds_output(path: Path, kind: OutputKind) -> bool:
    if kind.name == "checkpoint":
        return (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    if kind.name == "run":
        return any((path / n).exists() for n in ("best", "last", "trainer.ckpt"))
    return any(_is_artifact(p.name, kind) and p.name != MARKER for p in path.iterdir())


def check_output(path: str | os.PathLike, kind: str | OutputKind, overwrite: bool = False) -> bool:
    """Refuse ``path`` as the output folder of ``kind`` unless it is new, empty or fcnkit's own of that
    kind (and, for a run or a checkpoint, ``overwrite`` is given). Returns whether it holds an output.

    Nothing is written. Raises :class:`~fcnkit.errors.InputError` naming the path and the fix.
    """
    kind, path = _kind(kind), Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(
            f"{kind.flag} {path}: is an existing file, not a folder; {kind.fix.format(path=path)} "
            "(fcnkit does not delete what it did not write)"
        )
    if not path.exists():
        _check_writable(_existing_parent(path), path, kind)
        return False
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        _check_writable(path, path, kind)
        return False
    marked = _marker_kind(path)
    if marked is not None and marked != kind.name:
        raise InputError(
            f"{kind.flag} {path}: holds {KINDS[marked].what if marked in KINDS else marked} written by "
            f"fcnkit, not {kind.what}; pick another --out"
        )
    if marked is None or kind.name == "checkpoint":  # a checkpoint folder is replaced as a whole
        holds_output = _holds_output(path, kind)
        foreign = [n for n in entries if not _is_artifact(n, kind) or (n in kind.weak and not holds_output)]
        if foreign:
            raise InputError(
                f"{kind.flag} {path}: folder holds files fcnkit did not write (e.g. '{foreign[0]}'); "
                "pick a new or empty --out folder (fcnkit never deletes what it did not write)"
            )
    holds = _holds_output(path, kind)
    if holds and kind.needs_overwrite and not overwrite:
        raise InputError(f"{kind.flag} {path}: already holds {kind.what}; {kind.fix.format(path=path)}")
    _check_writable(path, path, kind)
    return holds


def remove_artifacts(path: str | os.PathLike, kind: str | OutputKind) -> list[str]:
    """Remove ``kind``'s artifacts from the folder ``path`` (never anything else); returns their names."""
    kind, path = _kind(kind), Path(path)
    removed = []
    for entry in sorted(path.iterdir()) if path.is_dir() else []:
        # the lock is held by the caller while it overwrites: removing it would let a second
        # process lock a new file and train into the same folder
        if entry.name not in (MARKER, LOCK_FILE) and _is_artifact(entry.name, kind):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry.name)
    return removed


def prepare_output(path: str | os.PathLike, kind: str | OutputKind, overwrite: bool = False) -> Path:
    """:func:`check_output`, then (with ``overwrite``) remove the old artifacts, create the folder and
    mark it as fcnkit's. Returns the folder."""
    kind, path = _kind(kind), Path(path)
    holds = check_output(path, kind, overwrite)
    try:
        if holds and overwrite:
            remove_artifacts(path, kind)
        path.mkdir(parents=True, exist_ok=True)
        if _marker_kind(path) != kind.name:
            (path / MARKER).write_text(json.dumps({"kind": kind.name}) + "\n")
    except OSError as exc:
        raise OutputError(os_error_message(exc, path) or f"{path}: cannot write ({exc})") from None
    return path


@contextlib.contextmanager
def output_folder(path: str | os.PathLike, kind: str | OutputKind, overwrite: bool = False) -> Iterator[Path]:
    """:func:`prepare_output` for a job; if the job fails, a folder this call created goes again
    when the job left nothing but the marker in it (so bad input leaves nothing behind)."""
    path = Path(path)
    created = [p for p in [path, *path.parents] if not p.exists()]
    folder = prepare_output(path, kind, overwrite)
    try:
        yield folder
    except BaseException:
        with contextlib.suppress(OSError):
            if [p.name for p in folder.iterdir()] == [MARKER]:
                (folder / MARKER).unlink()
            for p in created:  # deepest first; rmdir only removes empty folders
                p.rmdir()
        raise


def check_output_file(path: str | os.PathLike, flag: str, looks_like_ours) -> Path:
    """Refuse an output file path that is a folder, or an existing file that ``looks_like_ours(path)``
    does not recognise as fcnkit's; checks the folder it goes into is writable."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path}: is a folder; give a file path such as {path / 'scores.json'}")
    if path.exists() and not looks_like_ours(path):
        raise InputError(
            f"{flag} {path}: the file exists and was not written by fcnkit; give a new file name "
            "(fcnkit does not overwrite what it did not write)"
        )
    parent = _existing_parent(path)
    if not parent.is_dir():
        raise InputError(f"{flag} {path}: {parent} is a file, not a folder; give a path in a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(
            f"{flag} {path}: {parent} is not writable (read-only or permission denied); "
            "give a path in a writable folder"
        )
    return path


def _existing_parent(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path("/")


def _check_writable(folder: Path, path: Path, kind: OutputKind) -> None:
    if not folder.is_dir():
        raise InputError(f"{kind.flag} {path}: {folder} is a file, not a folder; pick another --out")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(
            f"{kind.flag} {path}: {folder} is not writable (read-only or permission denied); "
            "pick a writable --out folder"
        )


_DISK = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "file too large for the file system",
}


def os_error_message(
    exc: BaseException, path: str | os.PathLike | None = None, needed: int | None = None
) -> str | None:
    """One line for a write the disk refused (full, quota, read-only, permission), else ``None``."""
    if not isinstance(exc, OSError) or exc.errno not in _DISK:
        return None
    where = exc.filename or path or "output"
    needed = needed or getattr(exc, "needed", None)
    free = _free_bytes(Path(where))
    space = ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        parts = ([f"needs {_size(needed)}"] if needed else []) + ([f"{_size(free)} free"] if free is not None else [])
        space = f" ({', '.join(parts)})" if parts else ""
        fix = "free some space or write to another disk"
    else:
        fix = "write to a folder you can write to"
    return f"{where}: cannot write, {_DISK[exc.errno]}{space}; {fix}; nothing half-written was left"


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(_existing_parent(path / "x") if path.is_dir() else _existing_parent(path)).free
    except OSError:
        return None


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def preallocate(path: str | os.PathLike, nbytes: int) -> None:
    """Reserve ``nbytes`` for the file ``path`` (``posix_fallocate``), so a memory-mapped write into it
    cannot hit a full disk later (which is SIGBUS, not an error). Raises the OSError (ENOSPC) with
    ``needed`` set, which :func:`os_error_message` puts in its line."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, int(nbytes))
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
            return  # a file system without fallocate: nothing to reserve with
        exc.filename = exc.filename or str(path)
        exc.needed = int(nbytes)  # type: ignore[attr-defined]  # for os_error_message, once the path is final
        raise
    finally:
        os.close(fd)
