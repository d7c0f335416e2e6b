"""Atomic file writing: a file appears complete at its path, or not at all.

Outputs (photos, weights, checkpoints, evaluation reports) are written to a hidden temporary file in the
destination folder, fsynced and renamed; any failure (disk full, read-only folder, Ctrl-C) removes the
temporary file, and an existing file is replaced only when ``overwrite`` is asked for. A process killed
outright (SIGKILL, power loss) cannot clean up: its leftover is hidden, skipped by input scans
(:func:`is_temp_file`), and removed by the next run through :func:`remove_stale_temp_files`, which tells
leftovers from live writes by the writer's flock.

Kept apart from :mod:`deblurcli.photo` so that weights, checkpoints and evaluation can write files without
importing Pillow or numpy.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from deblurcli.errors import DiskFullError, OutputExistsError, PhotoError

try:
    import fcntl
except ImportError:  # Windows: no flock, so stale temporary files are never removed automatically
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "STALE_TEMP_AGE_S",
    "TEMP_TAG",
    "atomic_output",
    "atomic_write_bytes",
    "is_temp_file",
    "remove_stale_temp_files",
]

#: Marker in the names of our temporary files (hidden: they also start with a dot), so that input scans
#: can skip them and a crashed run's leftovers are recognisable.
TEMP_TAG = ".deblurcli-tmp-"

_UMASK_LOCK = threading.Lock()


def is_temp_file(name: str) -> bool:
    """Whether a file name is one of our temporary output files (left by a killed process)."""
    return name.startswith(".") and TEMP_TAG in name


#: A temporary file younger than this is never taken for a killed run's leftover: its writer may not have
#: locked it yet (it locks right after creating it).
STALE_TEMP_AGE_S = 60.0


def _lock_temp(fd: int) -> int:
    """Hold an exclusive flock on a temporary file for as long as the returned descriptor stays open.

    The lock marks the file as live for :func:`remove_stale_temp_files`. It is taken on a duplicate
    descriptor (same open file description) so that it outlives the write handle and covers the rename.
    Returns -1 where flock is unavailable or refused (the file is then protected by its age only).
    """
    if fcntl is None:
        return -1
    lock_fd = os.dup(fd)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock_fd)
        return -1
    return lock_fd


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed processes (SIGKILL, power loss) left in ``folder``.

    Only our own names (:func:`is_temp_file`) are considered, and only those no process is writing: a
    live one is flock-ed by its writer for the whole write (see :func:`atomic_output`), and one younger
    than :data:`STALE_TEMP_AGE_S` is left alone as well, so a second ``deblur`` writing into the same folder
    is never disturbed. Not recursive. Without flock (Windows) nothing is removed. Returns what was removed;
    never raises for a folder that is missing or unreadable.
    """
    if fcntl is None:
        return []
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    now = time.time()
    for entry in entries:
        if not is_temp_file(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < STALE_TEMP_AGE_S:
                continue
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer is alive
            if os.fstat(fd).st_ino == st.st_ino:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _current_umask() -> int:
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_EDQUOT = getattr(errno, "EDQUOT", -1)  # absent on Windows


def _write_error(e: OSError, path: Path) -> PhotoError:
    reason = {
        errno.ENOSPC: "no space left on device",
        errno.EROFS: "the folder is on a read-only file system",
        errno.EACCES: "permission denied (the folder is not writable)",
        errno.EPERM: "operation not permitted",
        errno.ENOENT: "the folder does not exist",
    }.get(e.errno or 0, e.strerror or str(e))
    if e.errno == _EDQUOT:
        reason = "disk quota exceeded"
    cls = DiskFullError if e.errno in (errno.ENOSPC, _EDQUOT) else PhotoError
    return cls(f"cannot write '{path.name}': {reason}")


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file whose content appears at ``path`` only if the block completes.

    The data go to a hidden temporary file in the same folder (``.<name>.deblurcli-tmp-XXXX``), are
    fsynced, and the file is renamed over ``path`` (or, without ``overwrite``, hard-linked so that a file
    that appeared meanwhile is never clobbered). On any exception, KeyboardInterrupt included, the
    temporary file is removed. The temporary file is flock-ed until then, so that
    :func:`remove_stale_temp_files` can tell a live write from a killed process's leftover. Missing parent
    folders are created. OSErrors become :class:`PhotoError` (:class:`DiskFullError` for a full disk) with
    a one-line reason.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PhotoError(f"cannot create folder '{folder}': {e.strerror or e}") from None
    tmp = folder / f".{path.name}{TEMP_TAG}{secrets.token_hex(4)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    except OSError as e:
        raise _write_error(e, path) from None
    lock_fd = -1
    try:
        lock_fd = _lock_temp(fd)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            mode = 0o666 & ~_current_umask()
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputExistsError(f"'{path.name}' already exists; pass --overwrite to replace it") from None
            except OSError as e:  # no hard links on this file system (FAT, some network shares)
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                if path.exists():
                    raise OutputExistsError(f"'{path.name}' already exists; pass --overwrite to replace it") from None
                os.replace(tmp, path)
        _fsync_dir(folder)
    except OSError as e:
        raise _write_error(e, path) from None
    finally:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:  # already renamed away (FileNotFoundError), or nothing more can be done
            pass
        if lock_fd >= 0:
            os.close(lock_fd)  # only now: the lock covered the rename and the clean-up


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, overwrite=overwrite) as fh:
        fh.write(data)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; not possible on every platform, so best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

