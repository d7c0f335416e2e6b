"""Atomic file writing: a file appears complete at its path, or not at all.

Outputs (photos, weights, checkpoints, evaluation reports) are written to a hidden temporary file in the
destination folder, fsynced and renamed; any failure (disk full, read-only folder, Ctrl-C) removes the
temporary file, and an existing file is replaced only when ``overwrite`` is asked for. A process killed
outright (SIGKILL, power loss) cannot clean up: its leftover is hidden, skipped by input scans
(:func:`is_temp_file`), and removed by the next run through :func:`remove_stale_temp_files`, which tells
leftovers from live writes by the writer's flock.

Claims (:func:`claim_output`) keep two runs from doing the same photo's work: a run creates a hidden claim
file next to an output (``O_EXCL``) and flocks it before the model starts on that photo; another run finds
it held and moves on. A claim whose holder was killed is free again (the kernel drops a dead process's
flock), so nothing is ever stuck behind a crashed run.

Hidden names stay short enough for any output name: a name that would push them over the 255 bytes a file
name may have uses a hash of the output's name instead.

Kept apart from :mod:`deblurcli.photo` so that weights, checkpoints and evaluation can write files without
importing Pillow or numpy.
"""

from __future__ import annotations

import errno
import hashlib
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
    "CLAIM_TAG",
    "STALE_TEMP_AGE_S",
    "TEMP_TAG",
    "Claim",
    "atomic_output",
    "atomic_write_bytes",
    "claim_output",
    "hidden_name",
    "is_temp_file",
    "make_folders",
    "remove_stale_temp_files",
]

#: Marker in the names of our temporary files (hidden: they also start with a dot), so that input scans
#: can skip them and a crashed run's leftovers are recognisable.
TEMP_TAG = ".deblurcli-tmp-"
#: Marker in the names of claim files (:func:`claim_output`), hidden and skipped by scans like temp files.
CLAIM_TAG = ".deblurcli-claim"
#: The most bytes a file name may have on the file systems we write to (ext4, XFS, APFS, NTFS in UTF-16).
NAME_MAX = 255

_UMASK_LOCK = threading.Lock()


def is_temp_file(name: str) -> bool:
    """Whether a file name is one of our hidden working files (a temporary output or a claim)."""
    return name.startswith(".") and (TEMP_TAG in name or name.endswith(CLAIM_TAG))


def hidden_name(name: str, tag: str, extra: int = 0) -> str:
    """``.<name><tag>``, the hidden working-file name for an output called ``name``, leaving room for
    ``extra`` more bytes; where that would not fit in :data:`NAME_MAX` bytes, ``name`` is replaced by a hash
    of it (32 hex digits), so a 255-byte output name still gets its temporary file and claim.

    Deterministic, so that two runs compute the same claim name for the same output.
    """
    encoded = os.fsencode(name)
    if 1 + len(encoded) + len(tag) + extra <= NAME_MAX:
        return f".{name}{tag}"
    return f".{hashlib.blake2b(encoded, digest_size=16).hexdigest()}{tag}"


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


def remove_stale_temp_files(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """Delete the temporary files and claims that killed processes (SIGKILL, power loss) left in ``folder``
    (and, if ``recursive``, in the folders under it).

    Only our own names (:func:`is_temp_file`) are considered, and only those no process holds: a live one
    is flock-ed by its writer or claimer the whole time (see :func:`atomic_output`, :func:`claim_output`),
    and one younger than :data:`STALE_TEMP_AGE_S` is left alone as well, so a second ``deblur`` writing into
    the same folder is never disturbed. The recursive walk is a loop that follows no symbolic link and
    skips hidden folders (we never write into those). Without flock (Windows) nothing is removed. Returns
    what was removed; never raises for a folder that is missing or unreadable.
    """
    if fcntl is None:
        return []
    removed: list[Path] = []
    pending = [os.fspath(folder)]
    while pending:
        here = pending.pop()
        try:
            entries = list(os.scandir(here))
        except OSError:
            continue
        if recursive:
            pending += [e.path for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
        removed += _remove_stale(entries)
    return removed


def _remove_stale(entries: list[os.DirEntry[str]]) -> list[Path]:
    """The stale working files among one folder's ``entries``, removed (see :func:`remove_stale_temp_files`)."""
    assert fcntl is not None
    removed: list[Path] = []
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


def make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents (``PhotoError`` with the reason otherwise); returns the
    folders this call created, deepest first.

    A loop, not ``Path.mkdir(parents=True)`` or ``os.makedirs``, which recurse once per missing level and
    so failed to mirror a 1,100-level input tree.
    """
    folder = folder if str(folder) else Path(".")
    missing: list[Path] = []
    here = folder
    while not os.path.lexists(here) and here != here.parent:  # a file in the way fails below, as ENOTDIR
        missing.append(here)
        here = here.parent
    created: list[Path] = []
    try:
        for level in reversed(missing):
            try:
                os.mkdir(level)
                created.append(level)
            except FileExistsError:
                if not level.is_dir():
                    raise
    except OSError as e:
        raise PhotoError(f"cannot create folder '{folder}': {e.strerror or e}") from None
    return created[::-1]


class Claim:
    """This process's claim on one output (see :func:`claim_output`); :meth:`release` when done with it."""

    def __init__(self, path: Path | None, fd: int, created: list[Path] | None = None) -> None:
        self.path, self.fd = path, fd
        #: folders made for this claim, deepest first: removed again if they stay empty (the photo failed)
        self.created = created or []

    def release(self) -> None:
        """Remove the claim file and drop its lock (in that order, so no other run sees it free and ours),
        then the folders made for the claim if nothing was written into them."""
        if self.fd < 0:
            return
        try:
            if self.path is not None and os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except OSError:  # already gone; nothing more to do
            pass
        finally:
            os.close(self.fd)
            self.fd = -1
        for folder in self.created:
            try:
                os.rmdir(folder)  # fails, as it should, once anything is in it (or another run's claim)
            except OSError:
                break


def claim_output(path: str | os.PathLike[str]) -> Claim | None:
    """Claim ``path`` for this process before any work on it; None when another live run holds it.

    The claim is a hidden file next to ``path`` (:func:`hidden_name` with :data:`CLAIM_TAG`), created with
    ``O_EXCL`` and flocked for as long as the claim is held: the process holding the flock owns it. A claim
    file whose flock is free was left by a run that was killed (the kernel releases a dead process's locks)
    and is taken over. Folders are created as for a write, and removed on release if they are still empty
    (a photo that failed leaves no empty mirrored folder). Where flock does not exist (Windows) every claim
    succeeds (runs then only avoid each other's finished outputs). Raises :class:`PhotoError` when the
    folder cannot be created or written.
    """
    path = Path(path)
    if fcntl is None:
        return Claim(None, -1)
    folder = path.parent if str(path.parent) else Path(".")
    claim = folder / hidden_name(path.name, CLAIM_TAG)
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0)
    created: list[Path] = []
    # A few attempts: the claim file can be released (removed) between our two opens, and an empty folder
    # another run made for its own claim can be removed between our mkdir and our open.
    for _attempt in range(3):
        created += make_folders(folder)
        try:
            fd = os.open(claim, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:
            continue
        except FileExistsError:
            try:
                fd = os.open(claim, flags)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise _write_error(e, path) from None
        except OSError as e:
            raise _write_error(e, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None  # a live run holds it
        try:
            ours = os.stat(claim, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except OSError:
            ours = False
        if ours:
            return Claim(claim, fd, created)
        os.close(fd)  # we locked a claim file its holder had just removed: start again
    return None


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

    The data go to a hidden temporary file in the same folder (``.<name>.deblurcli-tmp-XXXX``, see
    :func:`hidden_name`), are
    fsynced, and the file is renamed over ``path`` (or, without ``overwrite``, hard-linked so that a file
    that appeared meanwhile is never clobbered). On any exception, KeyboardInterrupt included, the
    temporary file is removed. The temporary file is flock-ed until then, so that
    :func:`remove_stale_temp_files` can tell a live write from a killed process's leftover. Missing parent
    folders are created. OSErrors become :class:`PhotoError` (:class:`DiskFullError` for a full disk) with
    a one-line reason.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    make_folders(folder)
    tmp = folder / (hidden_name(path.name, TEMP_TAG, extra=8) + secrets.token_hex(4))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    except OSError as e:
        raise _write_error(e, path) from None
    lock_fd = -1
    try:
        lock_fd = _lock_temp(fd)
        try:
            replaced: os.stat_result | None = os.stat(path)
        except OSError:
            replaced = None
        if replaced is not None and overwrite:
            _keep_owner(fd, replaced, path)
        mode = stat.S_IMODE(replaced.st_mode) if replaced is not None else 0o666 & ~_current_umask()
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
                raise _exists_error(path) from None
            except OSError as e:  # no hard links on this file system (FAT, some network shares)
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                if os.path.lexists(path):
                    raise _exists_error(path) from None
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


def _exists_error(path: Path) -> PhotoError:
    """Why a file could not be written at ``path`` without ``overwrite``: it exists, or a link that points
    nowhere is in the way (not "already exists": the user looking for the file would not find one)."""
    if os.path.islink(path) and not os.path.exists(path):
        return PhotoError(broken_link_reason(path))
    return OutputExistsError(f"'{path.name}' already exists; pass --overwrite to replace it")


def broken_link_reason(path: Path) -> str:
    """The one line for an output path taken by a symbolic link to nothing."""
    try:
        target = f" (to '{os.readlink(path)}')"
    except OSError:
        target = ""
    return f"'{path.name}' is a broken symbolic link{target}; remove it, or pass --overwrite to replace the link"


def _keep_owner(fd: int, replaced: os.stat_result, path: Path) -> None:
    """Give the temporary file ``fd`` the owner and group of the file it will replace, or refuse.

    A rename puts a new file in place: without this, ``--in-place`` or ``--overwrite`` run as root would
    hand a user's photo to root, and one run by a group member would take the group away. Where the owner
    cannot be kept (not root, someone else's file), the file is not replaced.
    """
    if not hasattr(os, "fchown"):
        return
    mine = os.fstat(fd)
    if (mine.st_uid, mine.st_gid) == (replaced.st_uid, replaced.st_gid):
        return
    try:
        os.fchown(fd, replaced.st_uid, replaced.st_gid)
    except PermissionError:
        raise PhotoError(
            f"cannot replace '{path.name}' and keep its owner (uid {replaced.st_uid}, gid {replaced.st_gid}); "
            "it was left as it was"
        ) from None


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

