"""The per-file work of a deblurring run, shared by the CLI and the Ray runner.

One photo goes through three stages: **read** (decode, metadata kept aside), **model** (the tiled engine,
then ``--strength``) and **write** (atomic save with the metadata, the optional compare strip). Each
caller -- ``deblur PATH...``, :mod:`deblurcli.ray`, benchmarks -- goes through :func:`process` or
:func:`run_jobs`, so "writes outputs exactly like the CLI" holds by construction, not by imitation.

:func:`run_jobs` overlaps the stages: while the model works on photo *k* on the calling thread, one
reader thread decodes photo *k+1* and one writer thread encodes and saves photo *k-1*. Decoding and
encoding (Pillow, zlib, numpy) release the GIL, so on a GPU -- or a CPU with spare cores -- a folder runs
at the model's speed instead of model + codec time. The overlap changes nothing in the bytes written:
each stage runs the same functions on the same data as the sequential path. Memory stays bounded, which
matters with 24-megapixel photos: at most one photo is decoded ahead and at most one is being written
(the model waits for the writer rather than queueing more), so about three photos are held at once.

Before a photo's work starts, its output is claimed (:func:`deblurcli.atomic.claim_output`), so that two runs
on one folder -- or two ``--in-place`` runs -- share the photos instead of both deblurring each one: a photo
another live run has claimed, or whose output changed since this run started, is skipped.

Failures stay per file: an exception in any stage becomes that file's failed :class:`Outcome`, reported
in input order. Two things stop the run instead: a full disk (every later write would fail too) and
Ctrl-C; in both cases the write already handed to the writer is finished first (its model work is done and
the write is short), so every reported output is complete and nothing half-written is left behind.
"""

from __future__ import annotations

import functools
import json
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from deblurcli.errors import DeblurError, OutputExistsError, PhotoError

if TYPE_CHECKING:
    from deblurcli.atomic import Claim
    from deblurcli.batch import Job
    from deblurcli.photo import Photo
    from deblurcli.session import Result, Session

__all__ = [
    "Outcome",
    "Settings",
    "compare_path",
    "complete_extras",
    "describe_failure",
    "failure_outcome",
    "label_band_height",
    "method_label",
    "model_stage",
    "process",
    "read_stage",
    "run_jobs",
    "write_compare",
    "write_stage",
]

#: Reason given when another run (a second process, another array task) wrote the output meanwhile.
WRITTEN_BY_OTHER_RUN = "output exists (written by another run)"
#: Reason given when another live run has claimed the photo and is working on it.
CLAIMED_BY_OTHER_RUN = "another run is working on it"

#: What identifies the file at a path (device, inode, mtime, size), or None where there is none.
Stamp = tuple[int, int, int, int] | None

ProgressFn = Callable[[int, int], None]
#: How :func:`run_jobs` ended: every job handled, stopped by a full disk, or stopped by Ctrl-C.
RunEnd = Literal["completed", "disk_full", "interrupted"]


@dataclass
class Settings:
    """What a run does with each file around the deblurring itself (which the :class:`~deblurcli.session.Session`
    owns): the compare strip and kernel picture, replacing outputs, reading huge photos, JPEG/WebP quality."""

    compare: bool = False
    overwrite: bool = False
    in_place: bool = False
    allow_huge: bool = False
    quality: int = 95
    save_kernel: bool = False

    @property
    def replaces(self) -> bool:
        """Whether existing outputs are replaced (``--overwrite`` or ``--in-place``) rather than skipped."""
        return self.overwrite or self.in_place

    def existing(self, job: Job, reason: str = "output exists") -> Outcome | None:
        """The skip outcome for ``job`` if its output exists and is not to be replaced, else None.

        The one place the "existing outputs are skipped" rule is decided: the CLI and the Ray driver ask
        before a run (to avoid loading a model for nothing), the runner again when a photo's turn comes
        (another run may have written it meanwhile); the atomic writer enforces it at the final rename.
        A symbolic link to nothing at the output path is a failure, said as such before any work: it is
        neither an output to skip nor one the writer may replace without ``--overwrite``.
        """
        from deblurcli.atomic import broken_link_reason

        if self.replaces:
            return None
        if job.dst.exists():
            return Outcome(job.src, job.dst, "skipped", reason)
        if job.dst.is_symlink():
            return Outcome(job.src, job.dst, "failed", broken_link_reason(job.dst))
        return None


@dataclass
class Outcome:
    """What happened to one input; becomes a ``--json`` line, a Ray result row, and feeds the summary.

    ``seconds`` is the work spent on this photo (read + model + write), ``model_seconds`` the model's share:
    with overlapped stages, their sum over a folder exceeds the wall time, which is the point.
    ``exception`` keeps the original error of a failure for a ``-v`` traceback; it is not serialised.
    """

    input: Path
    output: Path | None
    status: str  #: "done", "skipped", "failed" (or "planned" in a dry run)
    reason: str | None = None
    megapixels: float = 0.0
    seconds: float = 0.0
    compare: Path | None = None
    warnings: list[str] = field(default_factory=list)
    model_seconds: float = 0.0
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    #: how the photo was deblurred (``Result.method``), the kernel's side and the estimator's confidence
    method: str | None = None
    kernel_size: int | None = None
    confidence: float | None = None
    kernel: Path | None = None
    #: why that method was chosen (the last of ``Result.notes``), for ``-v`` and ``--json``
    decision: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record (paths as strings, times rounded to the millisecond)."""
        return {
            "input": str(self.input),
            "output": None if self.output is None else str(self.output),
            "status": self.status,
            "reason": self.reason,
            "megapixels": round(self.megapixels, 3),
            "seconds": round(self.seconds, 3),
            "model_seconds": round(self.model_seconds, 3),
            "compare": None if self.compare is None else str(self.compare),
            "warnings": list(self.warnings),
            "method": self.method,
            "kernel_size": self.kernel_size,
            "confidence": None if self.confidence is None else round(self.confidence, 3),
            "kernel": None if self.kernel is None else str(self.kernel),
            "decision": self.decision,
        }

    def as_json(self) -> str:
        """One JSON line; ASCII-only, so a file name that is not valid UTF-8 (kept as surrogates) cannot
        break a strict UTF-8 stdout, and ``json.loads`` + ``os.fsencode`` give back its exact bytes."""
        return json.dumps(self.as_dict(), ensure_ascii=True)


# --------------------------------------------------------------------------------------------- stages


def compare_path(output: Path) -> Path:
    """``out/photo.png`` -> ``out/photo_compare.jpg``."""
    return output.with_name(f"{output.stem}_compare.jpg")


def kernel_path(output: Path) -> Path:
    """``out/photo.png`` -> ``out/photo_kernel.png``."""
    return output.with_name(f"{output.stem}_kernel.png")


def write_compare(path: Path, before: np.ndarray, after: np.ndarray, kernel: np.ndarray | None, photo: Photo, *, overwrite: bool = True, method: str = "") -> None:
    """Input | output side by side at full resolution (JPEG, the photo's RGB ICC profile kept) under a band
    that labels the halves ("input", "output: ``method``"), with the ``kernel`` that was deconvolved with (if
    any) drawn in the output's top-left corner. The strip carries :data:`deblurcli.batch.COMPARE_MARKER`, so
    no later run takes it for a photo. An existing file is replaced only with ``overwrite``
    (``OutputExistsError`` otherwise)."""
    from deblurcli.atomic import atomic_write_bytes
    from deblurcli.batch import COMPARE_MARKER
    from deblurcli.photo import encode_preview_jpeg

    side = np.concatenate([before, after], axis=1)
    strip = (np.clip(side, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if kernel is not None:
        _inset_kernel(strip, kernel, x0=before.shape[1])
    labels = ("input", f"output: {method}" if method else "output")
    strip = np.concatenate([_label_band(strip.shape[0], before.shape[1], after.shape[1], labels), strip], axis=0)
    atomic_write_bytes(path, encode_preview_jpeg(strip, photo, comment=COMPARE_MARKER), overwrite=overwrite)


def method_label(result: Result) -> str:
    """How a photo was deblurred, in the words of a compare strip's label: ``kernel 21 px``, ``unchanged``,
    ``network``, and for a network chosen over an estimate the estimate it did not trust
    (``network (kernel estimate 9 px, confidence 0.00: not used)``), so that the strip says why."""
    if result.method == "kernel" and result.kernel_size is not None:
        return f"kernel {result.kernel_size} px"
    if result.method == "network" and result.point and result.patched is not None:
        return f"network on {result.patched:.0%} of the photo (the kernel estimate is a point; the rest unchanged)"
    if result.method == "network" and result.point:
        return "network (the kernel estimate is a point, but part of the photo is blurred)"
    if result.method == "network" and result.kernel_size is not None and result.confidence is not None:
        return f"network (kernel estimate {result.kernel_size} px, confidence {result.confidence:.2f}: not used)"
    return result.method


def label_band_height(height: int) -> int:
    """Height of a compare strip's label band above a photo ``height`` pixels tall: about 1/25 of it (at
    least 16 px), so the labels are legible in a thumbnail and small beside the photo."""
    return max(16, round(height / 25))


def _label_band(height: int, left: int, right: int, labels: tuple[str, str]) -> np.ndarray:
    """A black band, as wide as the strip, with each half's label in white over its half."""
    from PIL import Image, ImageDraw, ImageFont

    band = label_band_height(height)
    picture = Image.new("RGB", (left + right, band))
    draw = ImageDraw.Draw(picture)
    try:
        font = ImageFont.load_default(size=round(band * 0.7))
    except TypeError:  # Pillow 10.0: only the small bitmap font, which takes no size and no anchor
        font = ImageFont.load_default()
    for x0, text in zip((0, left), labels):
        if isinstance(font, ImageFont.FreeTypeFont):
            draw.text((x0 + band // 3, band // 2), text, fill=(255, 255, 255), font=font, anchor="lm")
        else:
            draw.text((x0 + band // 3, 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(picture)


def _inset_kernel(strip: np.ndarray, kernel: np.ndarray, *, x0: int) -> None:
    """Draw ``kernel`` (white on black, framed) into ``strip`` at the output half's top-left corner, at most
    a quarter of the photo's shorter side, so the viewer sees what blur was undone."""
    import torch

    from deblurcli.kernel.psf import kernel_picture

    h, w = strip.shape[0], strip.shape[1] - x0
    side = max(1, min(h, w) // 4)
    scale = max(1, side // max(1, kernel.shape[0]))
    picture = kernel_picture(torch.from_numpy(kernel), scale=scale)
    ph, pw = min(picture.shape[0], h), min(picture.shape[1], w)
    strip[:ph, x0 : x0 + pw] = picture[:ph, :pw, None]


@dataclass
class _Read:
    """A read stage's result: the photo, or the reason the file is not processed (skip or failure)."""

    job: Job
    photo: Photo | None = None
    seconds: float = 0.0
    outcome: Outcome | None = None


def read_stage(job: Job, settings: Settings) -> Photo:
    """Decode ``job.src`` (raises PhotoError/OSError for the caller to turn into a failure)."""
    from deblurcli import (
        photo as photo_io,  # looked up at call time: tests stand in for read_photo
    )

    quiet_codec_libraries()
    return photo_io.read_photo(job.src, allow_huge=settings.allow_huge)


@functools.cache
def quiet_codec_libraries() -> None:
    """Stop libtiff printing its own lines on stderr ("tempfile.tif: Using code not yet in table.").

    Pillow hands libtiff's errors back as a return code, which becomes the file's one ``error:`` line; the
    library's default handlers also print them raw, without the photo's name, between our lines. Its
    handlers are process-wide C state, so this is done once, through Pillow's own copy of libtiff; where
    that cannot be reached (a Pillow without libtiff), nothing changes.
    """
    import ctypes

    from PIL import _imaging

    try:
        library = ctypes.CDLL(_imaging.__file__)
        for name in ("TIFFSetErrorHandler", "TIFFSetWarningHandler"):
            setter = getattr(library, name)
            setter.restype, setter.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
            setter(None)
    except (OSError, AttributeError):
        pass


def model_stage(photo: Photo, session: Session, progress: ProgressFn | None = None) -> Result:
    """The deblurred pixels of ``photo`` and how they were made; runs on the caller's thread."""
    return session.deblur(photo.rgb, progress)


def write_stage(job: Job, photo: Photo, result: Result, settings: Settings) -> tuple[list[str], Path | None, Path | None]:
    """Save ``result`` as ``job.dst`` with ``photo``'s metadata, and the compare strip and kernel picture if
    asked: (warnings, compare path, kernel picture path).

    The strip and the picture are extras: they replace an existing file only with ``--overwrite``
    (``--in-place`` replaces the photos, nothing beside them), and one that cannot be written is a warning,
    not a failure, since the photo itself is written by then (a full disk then stops the run at the next
    photo's write).
    """
    from deblurcli import photo as photo_io

    quiet_codec_libraries()
    warnings = photo_io.write_photo(job.dst, result.rgb, photo, quality=settings.quality, overwrite=settings.replaces)
    compare = picture = None
    if settings.compare:
        deconvolved = result.kernel if result.method == "kernel" else None
        compare = _extra(compare_path(job.dst), "compare strip", warnings, lambda path: write_compare(
            path, photo.rgb, result.rgb, deconvolved, photo, overwrite=settings.overwrite, method=method_label(result)
        ))
    if settings.save_kernel and result.kernel is not None:
        import torch

        from deblurcli.atomic import atomic_write_bytes
        from deblurcli.kernel.psf import kernel_picture
        from deblurcli.photo import encode_png

        png = encode_png(kernel_picture(torch.from_numpy(result.kernel)))
        picture = _extra(kernel_path(job.dst), "kernel picture", warnings, lambda path: atomic_write_bytes(
            path, png, overwrite=settings.overwrite
        ))
    return warnings, compare, picture


def complete_extras(job: Job, settings: Settings, skipped: Outcome) -> Outcome:
    """For a photo skipped because its output exists: make the ``--compare`` strip it lacks, from the input
    and that output (no model work), and say so in ``skipped``.

    A strip that could not be written after its photo was (a full disk) was otherwise never made: every
    re-run skips the photo. The kernel inset is the one thing such a strip lacks.
    """
    from deblurcli import photo as photo_io

    path = compare_path(job.dst)
    if not settings.compare or skipped.status != "skipped" or os.path.lexists(path):
        return skipped
    try:
        photo = read_stage(job, settings)
        after = photo_io.read_photo(job.dst, allow_huge=settings.allow_huge).rgb
        if after.shape != photo.rgb.shape:
            raise PhotoError(f"the output is {after.shape[1]}x{after.shape[0]}, the input {photo.rgb.shape[1]}x{photo.rgb.shape[0]}")
        write_compare(path, photo.rgb, after, None, photo, overwrite=False, method="the existing output")
    except Exception as exc:  # noqa: BLE001 - the photo is done; a missing extra is a warning
        skipped.warnings.append(f"compare strip {path.name} not made: {describe_failure(exc)}")
        return skipped
    skipped.compare, skipped.reason = path, f"{skipped.reason}; its missing compare strip was made from it"
    return skipped


def _extra(path: Path, what: str, warnings: list[str], write: Callable[[Path], None]) -> Path | None:
    """Write one extra file beside an output: its path, or None with the reason added to ``warnings``."""
    try:
        write(path)
    except OutputExistsError:
        warnings.append(f"{what} {path.name} exists and was kept (--overwrite replaces it)")
        return None
    except PhotoError as exc:
        warnings.append(f"{what} not written: {exc}")
        return None
    return path


def _done(job: Job, photo: Photo, result: Result, seconds: float, model_seconds: float, written: tuple[list[str], Path | None, Path | None]) -> Outcome:
    warnings, compare, picture = written
    height, width = photo.rgb.shape[:2]
    return Outcome(
        job.src, job.dst, "done", None, width * height / 1e6, seconds, compare, [*photo.warnings, *warnings],
        model_seconds, method=result.method, kernel_size=result.kernel_size, confidence=result.confidence,
        kernel=picture, decision=result.notes[-1] if result.notes else None,
    )


def process(job: Job, session: Session, settings: Settings, progress: ProgressFn | None = None) -> Outcome:
    """Read, deblur and write one photo, one stage after the other; raises for the caller to report."""
    start = time.perf_counter()
    photo = read_stage(job, settings)
    model_start = time.perf_counter()
    result = model_stage(photo, session, progress)
    model_seconds = time.perf_counter() - model_start
    written = write_stage(job, photo, result, settings)
    return _done(job, photo, result, time.perf_counter() - start, model_seconds, written)


# ------------------------------------------------------------------------------------------- failures


def describe_failure(exc: BaseException) -> str:
    """One line for a failed file: the library's own message, or an unforeseen exception's text squeezed
    into one line -- never its class name (``OverflowError``, ``_ExifFormatError``: internal words the user
    cannot act on; ``-v`` prints the traceback that has them)."""
    from PIL import Image

    if isinstance(exc, DeblurError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "not enough memory for this photo (try a smaller --tile)"
    if isinstance(exc, Image.DecompressionBombError):
        return "too many pixels to read safely (a decompression bomb?); pass --allow-huge if the photo is genuine"
    if isinstance(exc, OSError):
        return " ".join((exc.strerror or str(exc)).split())
    text = " ".join(str(exc).split())[:300]
    return f"cannot process this photo: {text}" if text else "cannot process this photo (an internal error; -v shows it)"


def failure_outcome(job: Job, exc: BaseException, settings: Settings) -> Outcome:
    """The outcome for a file whose processing raised ``exc``.

    A refused write because the output appeared meanwhile is a skip, not a failure: another run (a second
    process on the same folder, a neighbouring array task) finished that photo first.
    """
    message = describe_failure(exc)
    if isinstance(exc, OutputExistsError) and not settings.replaces:
        return Outcome(job.src, job.dst, "skipped", WRITTEN_BY_OTHER_RUN)
    return Outcome(job.src, job.dst, "failed", message, exception=exc)


def is_unexpected(exc: BaseException | None) -> bool:
    """Whether a failure is a bug or an unforeseen library error (worth a traceback with ``-v``)."""
    return exc is not None and not isinstance(exc, (DeblurError, MemoryError, OSError))


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)).rstrip()


# ------------------------------------------------------------------------------------------- pipeline


def stamp(path: Path) -> Stamp:
    """What identifies the file at ``path`` now (None if there is none): a replaced file has a new inode."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def in_place_problem(job: Job) -> str | None:
    """Why ``--in-place`` must not replace ``job.src``, or None.

    The atomic write renames a new file over the old one: that would turn a symbolic link into a file (the
    photo it points to left blurry) and split a hard-linked photo (its other names left blurry), so both
    are refused rather than half done.
    """
    try:
        st = os.lstat(job.src)
    except OSError:
        return None  # the read reports it
    if os.path.islink(job.src):
        return "is a symbolic link; --in-place would replace the link by a file (run it on the file it points to)"
    if st.st_nlink > 1:
        return f"has {st.st_nlink} hard links; --in-place would split them (the other names would keep the old photo)"
    return None


def claim_job(job: Job, settings: Settings, before: Stamp) -> tuple[Claim | None, Outcome | None]:
    """Claim ``job``'s output before any work on it: (the claim, None) to go ahead, or (None, the skip or
    failure that replaces the work).

    ``before`` is the output's :func:`stamp` when this run started: an output that changed since was
    written by another run (for ``--in-place``, the photo was already deblurred in place), so it is not
    done again even though the claim is free by now.
    """
    from deblurcli.atomic import claim_output

    skipped = settings.existing(job, WRITTEN_BY_OTHER_RUN)
    if skipped is not None:
        return None, skipped
    problem = in_place_problem(job) if settings.in_place else None
    if problem is not None:
        return None, Outcome(job.src, job.dst, "failed", problem)
    held = claim_output(job.dst)
    if held is None:
        return None, Outcome(job.src, job.dst, "skipped", CLAIMED_BY_OTHER_RUN)
    if stamp(job.dst) != before:
        held.release()
        return None, Outcome(job.src, job.dst, "skipped", WRITTEN_BY_OTHER_RUN)
    return held, None


def _read_or_skip(job: Job, settings: Settings, before: Stamp, claims: dict[int, Claim], index: int) -> _Read:
    """Reader thread: claim the output (see :func:`claim_job`; the claim goes into ``claims``), then decode."""
    try:
        held, outcome = claim_job(job, settings, before)
    except Exception as exc:  # noqa: BLE001 - an output folder that cannot be written is that file's failure
        return _Read(job, outcome=failure_outcome(job, exc, settings))
    if outcome is not None:
        return _Read(job, outcome=outcome)
    assert held is not None
    claims[index] = held
    start = time.perf_counter()
    try:
        photo = read_stage(job, settings)
    except Exception as exc:  # noqa: BLE001 - any failure to read is that file's failure
        return _Read(job, outcome=failure_outcome(job, exc, settings))
    return _Read(job, photo, time.perf_counter() - start)


def _write(job: Job, photo: Photo, result: Result, settings: Settings, seconds: float, model_seconds: float) -> Outcome:
    """Writer thread: the write stage, timed; exceptions travel in the future to the calling thread."""
    start = time.perf_counter()
    written = write_stage(job, photo, result, settings)
    return _done(job, photo, result, seconds + time.perf_counter() - start, model_seconds, written)


class _Stop(Exception):
    """Internal: a full disk ends the run after the failure has been reported."""


def run_jobs(
    jobs: Sequence[Job],
    session: Session,
    settings: Settings,
    *,
    on_result: Callable[[int, Outcome], None],
    on_start: Callable[[Job], None] | None = None,
    progress: ProgressFn | None = None,
    overlap_io: bool = True,
) -> RunEnd:
    """Process ``jobs`` in order; ``on_result(index, outcome)`` is called on this thread, in input order.

    The model runs on the calling thread (``on_start(job)`` just before it, ``progress`` during it);
    with ``overlap_io`` one reader and one writer thread decode and save the neighbouring photos (see
    the module docstring), without it each photo is read, deblurred and written before the next one --
    the same bytes either way. Outputs that exist when a photo's turn comes are skipped unless
    ``settings`` replaces them, and so are photos another run has claimed or finished meanwhile
    (:func:`claim_job`). Returns "disk_full" after the file that found the disk full (reported as
    failed), "interrupted" on Ctrl-C (every write already started is finished and reported first),
    "completed" otherwise.
    """
    before = [stamp(job.dst) for job in jobs]
    if not overlap_io:
        return _run_sequential(jobs, before, session, settings, on_result, on_start, progress)
    return _Pipeline(jobs, before, session, settings, on_result, on_start, progress).run()


def _run_sequential(
    jobs: Sequence[Job],
    before: Sequence[Stamp],
    session: Session,
    settings: Settings,
    on_result: Callable[[int, Outcome], None],
    on_start: Callable[[Job], None] | None,
    progress: ProgressFn | None,
) -> RunEnd:
    from deblurcli.errors import DiskFullError

    held: Claim | None = None
    try:
        for index, job in enumerate(jobs):
            try:
                held, skipped = claim_job(job, settings, before[index])
            except Exception as exc:  # noqa: BLE001 - an unwritable output folder is this file's failure
                held, skipped = None, failure_outcome(job, exc, settings)
            if skipped is not None:
                on_result(index, skipped)
                continue
            if on_start is not None:
                on_start(job)
            try:
                outcome = process(job, session, settings, progress)
            except DiskFullError as exc:
                on_result(index, Outcome(job.src, job.dst, "failed", str(exc), exception=exc))
                return "disk_full"
            except Exception as exc:  # noqa: BLE001 - whatever goes wrong with one file is that file's failure
                outcome = failure_outcome(job, exc, settings)
            finally:
                if held is not None:
                    held.release()
            on_result(index, outcome)
    except KeyboardInterrupt:
        return "interrupted"
    finally:
        if held is not None:
            held.release()
    return "completed"


class _Pipeline:
    """The overlapped run: reads one photo ahead and writes one behind while the model works.

    Pending results sit in ``self.pending`` in input order, each either a finished Outcome or the
    writer's Future; they are reported from the front as soon as they are complete, so the order of
    results never depends on thread timing.
    """

    def __init__(
        self,
        jobs: Sequence[Job],
        before: Sequence[Stamp],
        session: Session,
        settings: Settings,
        on_result: Callable[[int, Outcome], None],
        on_start: Callable[[Job], None] | None,
        progress: ProgressFn | None,
    ) -> None:
        self.jobs, self.before, self.session, self.settings = jobs, before, session, settings
        #: the claims held, by job index: taken by the reader, released when the result is reported
        self.claims: dict[int, Claim] = {}
        self.on_result, self.on_start, self.progress = on_result, on_start, progress
        self.pending: deque[tuple[int, Outcome | Future[Outcome]]] = deque()
        self.writing: Future[Outcome] | None = None
        self.reader = ThreadPoolExecutor(1, thread_name_prefix="deblurcli-read")
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="deblurcli-write")

    def run(self) -> RunEnd:
        end: RunEnd = "completed"
        try:
            self._loop()
        except _Stop:
            end = "disk_full"
        except KeyboardInterrupt:
            end = "interrupted"
        finally:
            # Not-started reads are dropped; the write in flight (its model work is done) is finished.
            self.reader.shutdown(wait=True, cancel_futures=True)
            self.writer.shutdown(wait=True)
        try:
            if end != "completed":
                self._flush(final=True)
        except _Stop:
            end = "disk_full"
        except KeyboardInterrupt:
            end = "interrupted"
        finally:
            for index in list(self.claims):  # photos read ahead but never started, or cut short
                self.claims.pop(index).release()
        return end

    def _loop(self) -> None:
        ahead = self.reader.submit(_read_or_skip, self.jobs[0], self.settings, self.before[0], self.claims, 0) if self.jobs else None
        for index, job in enumerate(self.jobs):
            assert ahead is not None
            read = ahead.result()
            ahead = (
                self.reader.submit(_read_or_skip, self.jobs[index + 1], self.settings, self.before[index + 1], self.claims, index + 1)
                if index + 1 < len(self.jobs)
                else None
            )
            if read.outcome is not None:
                self.pending.append((index, read.outcome))
                self._flush()
                continue
            assert read.photo is not None
            if self.on_start is not None:
                self.on_start(job)
            start = time.perf_counter()
            try:
                result = model_stage(read.photo, self.session, self.progress)
            except Exception as exc:  # noqa: BLE001 - a model failure is this file's failure
                self.pending.append((index, failure_outcome(job, exc, self.settings)))
                self._flush()
                continue
            model_seconds = time.perf_counter() - start
            if self.writing is not None:
                self.writing.exception()  # one write at a time: the model waits rather than piling up photos
                self._flush()
            self.writing = self.writer.submit(
                _write, job, read.photo, result, self.settings, read.seconds + model_seconds, model_seconds
            )
            self.pending.append((index, self.writing))
            del read, result  # the writer holds the only references now
            self._flush()
        self._flush(final=True)

    def _flush(self, *, final: bool = False) -> None:
        """Report finished results from the front (waiting for each if ``final``); a full disk stops."""
        from deblurcli.errors import DiskFullError

        while self.pending:
            index, item = self.pending[0]
            if isinstance(item, Future):
                if not (final or item.done()):
                    return
                job = self.jobs[index]
                try:
                    outcome = item.result()
                except DiskFullError as exc:
                    self.pending.clear()
                    self.on_result(index, Outcome(job.src, job.dst, "failed", str(exc), exception=exc))
                    raise _Stop from None
                except Exception as exc:  # noqa: BLE001 - a failed write is this file's failure
                    outcome = failure_outcome(job, exc, self.settings)
            else:
                outcome = item
            self.pending.popleft()
            claim = self.claims.get(index)
            if claim is not None:
                claim.release()  # before it leaves self.claims: an interrupt here is caught by run()'s clean-up
                del self.claims[index]
            self.on_result(index, outcome)
