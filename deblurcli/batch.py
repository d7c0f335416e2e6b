"""Which files to process and where each output goes.

Two steps, both pure (nothing is written; nothing is read but directory listings and the header of a file
named like a ``--compare`` strip):

* :func:`find_inputs` turns the paths on the command line into a deterministic list of photos, skipping
  hidden/system files and our own temporary files, surviving symlink loops, ignoring anything under an
  excluded folder (an output folder inside an input folder) and our own ``--compare`` strips (recognised by
  the marker written into them, never by their name alone), and reporting paths that do not exist as
  problems instead of crashing.
* :func:`plan_jobs` maps every input to its output path and checks the whole plan *before* anything is
  written: two inputs landing on the same output, or an output landing on an input, is an error that names
  both files.

Output naming: an explicit output file (``-o sharp.jpg``, one input file) is used as given; with
``-o DIR`` each output keeps its input's name (sub-folders mirrored); with no ``-o``, ``photo.jpg``
becomes ``photo_deblurred.jpg`` beside it and a folder ``dir/`` becomes a sibling ``dir_deblurred/``.
HEIC/HEIF inputs (which we read but cannot write) get a ``.jpg`` output name. ``--suffix`` replaces
``_deblurred`` (and adds itself to the names kept under ``-o DIR``); ``--format`` gives every output one
extension. An ``-o`` whose suffix names an image format we cannot write is refused before anything is
made (it used to become a folder called ``y.gif``), as is, with ``-r``, an output folder inside (or equal to)
an input folder, whose outputs the next run would take for inputs.

Sharding (``--shard I/N``, for SLURM/Kubernetes job arrays): :func:`shard` keeps the items whose relative
path hashes to shard I. A hash rather than "every N-th file" so that a file keeps its shard when others
are added or removed (a re-run after new photos arrive redoes nothing that is done), and so that every
task computes its share on its own, with no coordinator; the price is that small folders split unevenly.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from deblurcli.atomic import is_temp_file
from deblurcli.errors import DeblurError
from deblurcli.photo import SUPPORTED_SUFFIXES, WRITABLE_SUFFIXES

__all__ = [
    "COMPARE_MARKER",
    "FORMAT_SUFFIXES",
    "InputFile",
    "Job",
    "OutputCollisionError",
    "PlanError",
    "check_output",
    "find_inputs",
    "is_compare_strip",
    "output_is_file",
    "parse_shard",
    "photos_below",
    "plan_jobs",
    "shard",
]

#: Files that operating systems and photo managers drop into folders; never photos.
SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r"})
#: Folders that hold system data or other programs' thumbnails (Synology, Windows, macOS archives).
SYSTEM_DIRS = frozenset({"@eadir", "$recycle.bin", "system volume information", "__macosx", "#recycle"})
#: Input suffixes we can read but not write: their outputs are named with this suffix instead.
_REWRITE_SUFFIX = {".heic": ".jpg", ".heif": ".jpg"}
#: ``--format`` choices and the extension each gives its outputs.
FORMAT_SUFFIXES = {"jpg": ".jpg", "png": ".png", "webp": ".webp", "tif": ".tif"}
#: Written into every ``--compare`` strip (a JPEG comment), so that a later run over the folder holding it
#: knows it for ours and leaves it alone, without refusing a photo of the user's that happens to be called
#: ``holiday_compare.jpg``.
COMPARE_MARKER = b"deblurcli compare strip"
#: Suffixes of image formats we cannot write, beyond those Pillow knows (camera RAW, JPEG XL, SVG): an ``-o``
#: ending in one is a mistake to report, not a folder to create.
_OTHER_IMAGE_SUFFIXES = frozenset({
    ".jxl", ".svg", ".heic", ".heif", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng",
    ".raf", ".orf", ".rw2", ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".mef", ".mos", ".kdc", ".rwl",
})


class PlanError(DeblurError):
    """The requested outputs cannot be planned (ambiguous -o, output over an input, ...)."""


class OutputCollisionError(PlanError):
    """Two inputs would be written to the same output file."""


@dataclass(frozen=True)
class InputFile:
    """A photo to process. ``rel`` is its path relative to the input root it was found under (just the
    file name for a file named on the command line); ``root`` is that folder, None for a named file."""

    path: Path
    rel: Path
    root: Path | None = None


@dataclass(frozen=True)
class Job:
    """One photo to process: read ``src``, write ``dst``."""

    src: Path
    dst: Path
    rel: Path


def _is_hidden_or_system(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_FILES or is_temp_file(name)


def _is_photo_name(name: str) -> bool:
    return not _is_hidden_or_system(name) and os.path.splitext(name)[1].lower() in SUPPORTED_SUFFIXES


def _under(path: str, folders: Sequence[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


def find_inputs(
    paths: Sequence[Path],
    *,
    recursive: bool,
    exclude: Sequence[Path] = (),
) -> tuple[list[InputFile], list[tuple[Path, str]]]:
    """Expand command-line paths into photos: ``(inputs, problems)``.

    Folders are scanned for supported suffixes (case-insensitive), only at their top level unless
    ``recursive``; hidden and system files and folders are skipped; symlinked folders are followed once
    (a loop is walked at most once); anything under an ``exclude`` folder is skipped. A file named
    explicitly is taken if its suffix is supported. Missing paths, unsupported named files and unreadable
    folders become ``problems`` (path, reason). ``--compare`` strips (:func:`is_compare_strip`) are never
    inputs, not even when named. Order: the command line's order, each folder sorted; a file reached twice
    is listed once.
    """
    excluded = [os.path.realpath(p) for p in exclude]
    inputs: list[InputFile] = []
    problems: list[tuple[Path, str]] = []
    seen: set[str] = set()

    def add(item: InputFile) -> None:
        real = os.path.realpath(item.path)
        if real not in seen and not _under(real, excluded) and not is_compare_strip(item.path):
            seen.add(real)
            inputs.append(item)

    for given in map(Path, paths):
        if not os.path.lexists(given):
            problems.append((given, "no such file or folder"))
        elif not given.exists():
            problems.append((given, "broken symbolic link"))
        elif given.is_dir():
            found, trouble = _scan(given, recursive=recursive, excluded=excluded)
            for item in found:
                add(item)
            problems += trouble
        elif given.suffix.lower() in SUPPORTED_SUFFIXES:
            add(InputFile(given, Path(given.name), None))
        else:
            problems.append((given, f"unsupported file type '{given.suffix or given.name}' "
                                    f"(supported: {' '.join(SUPPORTED_SUFFIXES)})"))
    return inputs, problems


def _scan(root: Path, *, recursive: bool, excluded: list[str]) -> tuple[list[InputFile], list[tuple[Path, str]]]:
    """Photos under one folder, sorted by their path relative to it.

    Walked with an explicit stack rather than ``os.walk``, which recurses once per level (before Python
    3.12) and so stopped a 1,100-level tree with a RecursionError. Excluded folders are recognised by
    their device and inode, which each folder's ``stat`` gives for free, since resolving each folder's
    real path costs one ``lstat`` per level above it (minutes in such a tree).
    """
    excluded_ids = set()
    for folder in excluded:
        with contextlib.suppress(OSError):
            st = os.stat(folder)
            excluded_ids.add((st.st_dev, st.st_ino))
    found: list[InputFile] = []
    problems: list[tuple[Path, str]] = []
    visited: set[tuple[int, int]] = set()

    def on_error(err: OSError, folder: str) -> None:
        problems.append((Path(err.filename or folder), f"cannot list folder: {err.strerror or err}"))

    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            key = (st.st_dev, st.st_ino)
            if key in visited or key in excluded_ids:
                continue  # a symlink loop, a folder reached twice, or our own output folder
            visited.add(key)
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError as e:
            on_error(e, folder)
            continue
        subfolders = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows symlinks: a linked folder is walked (once, by its inode)
            except OSError:
                is_dir = False
            if is_dir:
                if recursive and not entry.name.startswith(".") and entry.name.lower() not in SYSTEM_DIRS:
                    subfolders.append(entry.path)
            elif _is_photo_name(entry.name) and os.path.isfile(entry.path):
                path = Path(entry.path)
                found.append(InputFile(path, path.relative_to(root), root))
        stack += sorted(subfolders, reverse=True)
    found.sort(key=lambda item: item.rel.parts)
    return found, problems


def is_compare_strip(path: Path) -> bool:
    """Whether ``path`` is a ``--compare`` strip written by deblurcli: named ``*_compare.jpg`` and carrying
    :data:`COMPARE_MARKER` as its JPEG comment. Only files with that name are opened (their header only)."""
    if not path.name.lower().endswith("_compare.jpg"):
        return False
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the markers before the image data, not the pixels
            return bool(im.info.get("comment", b"").startswith(COMPARE_MARKER))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return False


def photos_below(folder: Path, *, exclude: Sequence[Path] = (), budget: int = 256) -> bool:
    """Whether a sub-folder of ``folder`` (at any depth) holds a photo that a scan without ``-r`` leaves out.

    For the hint that ``-r`` goes into them. The walk stops at the first photo, and after ``budget`` folder
    listings (a huge tree costs no more than a glance); hidden, system and ``exclude`` folders are not
    entered, as the recursive scan would not enter them either.
    """
    excluded = {os.path.realpath(p) for p in exclude}
    stack = [entry.path for entry in _subfolders(str(folder))]
    while stack and budget > 0:
        budget -= 1
        current = stack.pop()
        if os.path.realpath(current) in excluded:
            continue
        try:
            with os.scandir(current) as listing:
                entries = list(listing)
        except OSError:
            continue
        if any(_is_photo_name(e.name) and not _entry_is_dir(e) for e in entries):
            return True
        stack += [e.path for e in entries if _entry_is_dir(e) and _enterable(e.name)]
    return False


def _entry_is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _enterable(name: str) -> bool:
    """A folder the recursive scan goes into (not hidden, not a system folder)."""
    return not name.startswith(".") and name.lower() not in SYSTEM_DIRS


def _subfolders(folder: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as listing:
            return [e for e in listing if _entry_is_dir(e) and _enterable(e.name)]
    except OSError:
        return []


def check_output(output: Path | None, folders: Sequence[Path], *, recursive: bool) -> None:
    """Refuse an ``-o`` that cannot work before anything is read or made (:class:`PlanError`, a usage error).

    * a suffix of an image format we cannot write (``-o y.gif``, ``-o y.heic``; ``-o y.avif`` where Pillow
      has no AVIF writer) -- it is no folder name either, so it would have become a folder called
      ``y.gif``. An existing folder of that name is fine.
    * with ``recursive``, a folder equal to or inside one of the input ``folders``: the next ``-r`` run
      would find this run's outputs among its inputs (and this one writes into the tree it walks).
    """
    if output is None or str(output) == "-":
        return
    suffix = output.suffix.lower()
    if suffix and not output.is_dir():
        from PIL import features

        # AVIF is written only where Pillow has it: better said now than once per photo after the model ran
        no_avif = suffix == ".avif" and not features.check("avif")
        if no_avif or (suffix not in WRITABLE_SUFFIXES and suffix in _image_suffixes()):
            formats = ", ".join(s for s in WRITABLE_SUFFIXES if s != ".jpe" and (s != ".avif" or features.check("avif")))
            raise PlanError(f"-o '{output}': cannot write '{suffix}' files; give a file ending in one of {formats}, or a folder")
    if recursive:
        out = os.path.realpath(output)
        for folder in folders:
            if os.path.isdir(folder) and _under(out, [os.path.realpath(folder)]):
                where = "is the input folder" if out == os.path.realpath(folder) else "is inside the input folder"
                raise PlanError(
                    f"-o '{output}' {where} '{folder}': with -r this run would walk into its own outputs "
                    "and the next run would take them for inputs; write them outside it"
                )


def _image_suffixes() -> frozenset[str]:
    """Every suffix of an image format we know of: Pillow's (GIF, BMP, ICO, PSD, ...) and :data:`_OTHER_IMAGE_SUFFIXES`."""
    from PIL import Image

    return frozenset(Image.registered_extensions()) | _OTHER_IMAGE_SUFFIXES | frozenset(SUPPORTED_SUFFIXES)


def _output_name(name: str, suffix: str = "", extension: str | None = None) -> str:
    stem, ext = os.path.splitext(name)
    return stem + suffix + (extension or _REWRITE_SUFFIX.get(ext.lower(), ext))


def _key(path: Path) -> str:
    """Comparison key for output paths: absolute and case-folded, since macOS and Windows file systems
    treat A.jpg and a.jpg as the same file (a false alarm on Linux is better than a silent overwrite)."""
    return os.path.normpath(os.path.abspath(path)).casefold()


def output_is_file(output: Path) -> bool:
    """Whether ``-o OUTPUT`` names one output file (a photo suffix, and not an existing folder) or a folder."""
    return output.suffix.lower() in WRITABLE_SUFFIXES and not output.is_dir()


def plan_jobs(
    inputs: Sequence[InputFile],
    output: Path | None,
    *,
    in_place: bool = False,
    suffix: str | None = None,
    extension: str | None = None,
    extras: Sequence[tuple[str, Callable[[Path], Path]]] = (),
) -> list[Job]:
    """Map inputs to outputs following the naming rules, and validate the whole plan before any write.

    Raises :class:`PlanError` for an ``-o`` that names a file while several photos (or a folder) are
    given, for a derived output folder that cannot be named (``/``), and for an output that would replace
    an input without ``in_place``; :class:`OutputCollisionError` when two inputs map to the same output.
    A file named ``x_deblurred.jpg`` next to ``x.jpg`` (or ``x.png``: ``--format`` may have changed the
    extension) in the same run is taken to be an earlier run's output, and is not planned again (without
    ``-o``).

    ``suffix`` is added to output names beside the inputs (default ``_deblurred``) and, when given, to the
    names kept under ``-o DIR``; ``extension`` (``--format``) replaces every output's extension.

    ``extras`` are the files written beside each output, as (option, path of the extra for an output):
    ``--compare``'s strip, ``--save-kernel``'s picture. They are checked like outputs, so that
    ``--in-place --compare`` never writes ``a_compare.jpg`` over an input of that name, and no extra lands
    on another photo's output.
    """
    if in_place and output is not None:
        raise PlanError("--in-place writes over the inputs, so it cannot be combined with -o")
    output = Path(output) if output is not None else None
    as_file = output is not None and output_is_file(output)
    beside = "_deblurred" if suffix is None else suffix
    # No inputs: the reason (a missing or unsupported file) is said already; "-o names a file but 0 photos
    # were found" would be a second, misleading error about the same mistake.
    if as_file and (len(inputs) > 1 or (inputs and inputs[0].root is not None)):
        what = f"{len(inputs)} photos were found" if len(inputs) != 1 else "the input is a folder"
        raise PlanError(f"-o '{output}' names a file but {what}; give a folder instead")

    stems = {_key(i.path.with_suffix("")) for i in inputs}
    jobs: list[Job] = []
    for item in inputs:
        if in_place:
            dst = item.path
        elif as_file:
            assert output is not None
            dst = output
        elif output is not None:
            dst = output / item.rel.with_name(_output_name(item.rel.name, suffix or "", extension))
        elif item.root is None:
            stem = item.path.stem
            if len(stem) > len(beside) > 0 and stem.endswith(beside) and _key(item.path.with_name(stem[: -len(beside)])) in stems:
                continue  # an earlier run's output sitting beside its original
            dst = item.path.with_name(_output_name(item.path.name, beside, extension))
        else:
            root = item.root if item.root.name else item.root.resolve()
            if not root.name:
                raise PlanError(f"cannot name an output folder beside '{item.root}'; pass -o DIR")
            dst = root.parent / (root.name + beside) / item.rel.with_name(_output_name(item.rel.name, "", extension))
        jobs.append(Job(item.path, dst, item.rel))

    _check(jobs, in_place=in_place)
    _check_extras(jobs, extras)
    return jobs


def _check_extras(jobs: Sequence[Job], extras: Sequence[tuple[str, Callable[[Path], Path]]]) -> None:
    """No extra file (compare strip, kernel picture) may replace an input or another photo's output."""
    if not extras:
        return
    sources = {_key(j.src): j.src for j in jobs}
    outputs = {_key(j.dst): j for j in jobs}
    for job in jobs:
        for option, extra_of in extras:
            extra = extra_of(job.dst)
            key = _key(extra)
            if key in sources:
                raise PlanError(f"{option} would write '{extra}' over the input '{sources[key]}'; rename it or use -o DIR")
            other = outputs.get(key)
            if other is not None:
                raise OutputCollisionError(
                    f"{option} would write '{extra}' (for '{job.src}'), which is the output of '{other.src}'; "
                    "rename one of them"
                )


def _check(jobs: Sequence[Job], *, in_place: bool) -> None:
    sources = {_key(j.src): j.src for j in jobs}
    claimed: dict[str, Path] = {}
    for job in jobs:
        dst_key = _key(job.dst)
        if not in_place:
            same_file = os.path.exists(job.dst) and os.path.samefile(job.src, job.dst)  # e.g. via a symlink
            if dst_key == _key(job.src) or same_file:
                raise PlanError(f"output '{job.dst}' would overwrite its input; pass --in-place to allow that")
            if dst_key in sources:
                raise PlanError(f"output for '{job.src}' would overwrite the input '{sources[dst_key]}'")
        other = claimed.get(dst_key)
        if other is not None:
            raise OutputCollisionError(
                f"'{other}' and '{job.src}' would both be written to '{job.dst}'; "
                "rename one or write them to different folders"
            )
        claimed[dst_key] = job.src


T = TypeVar("T")
_SHARD_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(spec: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``: shard I of N, 1-based. Raises ValueError with a one-line reason."""
    match = _SHARD_SPEC.fullmatch(spec)
    if match is None:
        raise ValueError(f"expected I/N such as 2/4 (shard I of N, counting from 1), got '{spec}'")
    index, count = int(match[1]), int(match[2])
    if count < 1:
        raise ValueError(f"the number of shards must be at least 1, got '{spec}'")
    if not 1 <= index <= count:
        raise ValueError(f"shard {index} does not exist: shards are numbered 1 to {count} (got '{spec}')")
    return index, count


def shard_key(item: object) -> str:
    """What decides an item's shard: its path relative to its input root (``InputFile``/``Job``), as
    POSIX text, so that the same file lands in the same shard on every node, wherever the data set is
    mounted; for other items, their string form."""
    rel = getattr(item, "rel", None)
    return rel.as_posix() if isinstance(rel, Path) else str(item)


def shard_of(key: str, count: int) -> int:
    """The 1-based shard of ``key`` among ``count``: a fixed hash (not Python's salted ``hash``), so every
    process and machine agrees."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count + 1


def shard(items: Sequence[T], index: int, count: int, *, key: Callable[[T], str] = shard_key) -> list[T]:
    """The items of shard ``index`` of ``count`` (1-based), in their original order.

    Deterministic and stable: an item's shard depends only on its key, so the ``count`` shards together
    hold every item exactly once, and adding or removing items moves no other item between shards.
    """
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count} does not exist: shards are numbered 1 to {count}")
    return [item for item in items if shard_of(key(item), count) == index]
