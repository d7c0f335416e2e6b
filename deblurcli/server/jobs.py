"""The server's photo queue: uploads in, one photo at a time through the CLI's own stages, results out.

Why one worker thread: the model already uses every core a CPU has (and a GPU's memory), so two photos
at once would each take twice as long and risk running out of memory; queued photos wait their turn and
the page shows their place in the queue.

Each photo gets a private temporary folder under the queue's root folder, with names the server chooses
(``photo.jpg``, ``photo_deblurred.jpg``, ``before.jpg``, ...): nothing the client sends, not even its file
name, becomes a path. The folder is removed when the photo is deleted, cancelled, expires or the server
stops, and the root folder with it at the end.

A client that goes away is noticed in three ways: a request waiting on ``POST /api/deblur`` cancels its
photo when its connection closes; a page that is closed or left says so (``navigator.sendBeacon`` to
``POST /api/jobs/ID/cancel``); and, for a page that could not say it (a crashed browser, a lost
network), a photo the page stops asking about for ``lease`` seconds is cancelled. The lease is minutes,
not seconds, because browsers slow the timers of hidden tabs to about one wake-up a minute. A cancelled
photo stops at the next tile.
"""

from __future__ import annotations

import logging
import queue
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from deblurcli.photo import Photo
    from deblurcli.runner import Settings
    from deblurcli.session import Result, Session

log = logging.getLogger(__name__)

Status = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"done", "failed", "cancelled"})

#: Most photos waiting at once: beyond it an upload is refused (503) rather than filling the disk.
MAX_QUEUED = 100
#: Most finished photos kept for download; the oldest are removed first.
MAX_FINISHED = 50

#: Formats recognised by their first bytes, for an upload whose name has no usable suffix (``curl -F
#: photo=@-``): the suffix decides the output's format, as it does for the CLI.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", ".jpg"),
    (0, b"\x89PNG\r\n\x1a\n", ".png"),
    (8, b"WEBP", ".webp"),
    (0, b"II*\x00", ".tif"),
    (0, b"MM\x00*", ".tif"),
    (8, b"avif", ".avif"),
    (8, b"heic", ".heic"),
)
_PLAIN_SUFFIX = re.compile(r"\.[a-z0-9]{1,5}")


class Cancelled(Exception):
    """Raised inside the worker when a photo's client went away or deleted it; never shown to anyone."""


@dataclass(frozen=True)
class Options:
    """What the page lets a photographer choose per photo; one Session exists per distinct value."""

    method: str
    model: str
    strength: float


def upload_suffix(name: str, head: bytes) -> str:
    """The suffix the uploaded file is stored under: the client's, when it is one the CLI reads or at
    least a plain suffix (so a RAW file is refused with the CLI's own message), else one recognised from
    the content, else none (the reader then says what the content is not)."""
    from deblurcli.photo import SUPPORTED_SUFFIXES

    suffix = Path(client_base_name(name)).suffix.lower()
    if suffix in SUPPORTED_SUFFIXES or _PLAIN_SUFFIX.fullmatch(suffix):
        return suffix
    for offset, magic, found in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return found
    return ""


def client_base_name(name: str) -> str:
    """The last component of a client's file name (browsers send a bare name, other clients may send
    ``C:\\photos\\x.jpg``), without control characters; used for display and the download name only."""
    base = re.split(r"[\\/]", name)[-1]
    return "".join(ch for ch in base if ch.isprintable()).strip() or "photo"


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] as 8-bit pixels for a preview, rounded as the compare strip is."""
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@dataclass
class Job:
    """One uploaded photo, from the queue to its download. Fields the worker updates are read by the
    request handlers while it runs: each is a plain value replaced whole, so a reader never sees half of
    one, and ``status`` is set last."""

    id: str
    name: str  #: the client's file name, for display and the download name only
    options: Options
    folder: Path
    source: Path
    previews: bool  #: whether to make the before/after JPEGs the page shows (the plain API does not)
    watched: bool  #: whether a waiting request watches it (then the page lease does not apply)
    status: Status = "queued"
    stage: str = "waiting"
    tiles: tuple[int, int] = (0, 0)
    error: str | None = None
    method: str | None = None
    kernel_size: int | None = None
    confidence: float | None = None
    decision: str | None = None
    warnings: list[str] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    output: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)  #: "before.jpg", "after.jpg", "kernel.png"
    touched: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def download_name(self) -> str:
        """``IMG_1234_deblurred.jpg`` for ``IMG_1234.jpg``: the CLI's default output name, with the output's
        suffix (HEIC inputs are written as JPEG)."""
        stem = Path(client_base_name(self.name)).stem or "photo"
        suffix = self.output.suffix if self.output is not None else self.source.suffix
        return f"{stem}_deblurred{suffix}"

    def as_dict(self, position: int | None) -> dict[str, Any]:
        """The JSON the page polls: where the photo is, what ran, and which files can be fetched."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "stage": self.stage,
            "position": position,
            "tiles": list(self.tiles),
            "error": self.error,
            "method": self.method,
            "kernel_size": self.kernel_size,
            "confidence": None if self.confidence is None else round(self.confidence, 3),
            "decision": self.decision,
            "warnings": list(self.warnings),
            "width": self.width,
            "height": self.height,
            "seconds": None if self.seconds is None else round(self.seconds, 2),
            "options": {"method": self.options.method, "model": self.options.model, "strength": self.options.strength},
            "download_name": self.download_name if self.status == "done" else None,
            "files": sorted(self.files) + (["result"] if self.status == "done" else []),
        }


class SessionCache:
    """One :class:`Session` per (method, model), loaded when first asked for, the least recently used one
    dropped beyond ``size`` so that a server whose users try every model does not hold them all.

    Strength needs no Session of its own: :meth:`Session.with_strength` shares the loaded networks.
    Only the worker thread calls :meth:`get`, so no lock is needed.
    """

    def __init__(self, build: Callable[[str, str], Session], size: int = 2) -> None:
        self.build, self.size = build, size
        self.sessions: OrderedDict[tuple[str, str], Session] = OrderedDict()

    def get(self, options: Options) -> Session:
        key = (options.method, options.model)
        session = self.sessions.pop(key, None)
        if session is None:
            while len(self.sessions) >= self.size:
                self.sessions.popitem(last=False)
            session = self.build(options.method, options.model)
        self.sessions[key] = session
        return session if session.strength == options.strength else session.with_strength(options.strength)


class JobQueue:
    """Uploaded photos, processed one at a time on a worker thread, kept for download for ``keep`` seconds
    after they were last asked about. ``lease``: a page's photo not asked about for this long while it
    waits or runs is cancelled (its page was closed)."""

    def __init__(self, sessions: SessionCache, settings: Settings, *, root: Path | None = None, lease: float = 180.0, keep: float = 3600.0) -> None:
        self.sessions, self.settings, self.lease, self.keep = sessions, settings, lease, keep
        self.root = Path(tempfile.mkdtemp(prefix="deblurcli-serve-", dir=root))
        self.jobs: dict[str, Job] = {}
        self.waiting: queue.Queue[Job | None] = queue.Queue()
        self.order: list[str] = []  #: ids of queued photos, first to run first (for the page's "n ahead")
        self.lock = threading.Lock()
        self.current: Job | None = None
        self.stopping = threading.Event()
        self.worker = threading.Thread(target=self._work, name="deblurcli-serve-worker", daemon=True)
        # Its own thread, since the worker is busy exactly when a closed page's photo must be cancelled.
        self.janitor = threading.Thread(target=self._sweep_every, args=(1.0,), name="deblurcli-serve-janitor", daemon=True)
        self.worker.start()
        self.janitor.start()

    # ------------------------------------------------------------------------------------- requests

    def submit(self, name: str, upload: IO[bytes], options: Options, *, previews: bool, watched: bool) -> Job:
        """Store an upload (read from ``upload``) in a new folder and queue it. Raises :class:`QueueFull`, or
        OSError when it cannot be stored (then nothing is left of it)."""
        with self.lock:
            if len(self.order) >= MAX_QUEUED:
                raise QueueFull(f"{MAX_QUEUED} photos are already waiting; try again when some are done")
        head = upload.read(16)
        folder = Path(tempfile.mkdtemp(prefix="photo-", dir=self.root))
        source = folder / f"photo{upload_suffix(name, head)}"
        try:
            with open(source, "wb") as fh:
                fh.write(head)
                shutil.copyfileobj(upload, fh, 1 << 20)
        except BaseException:  # a full disk, or the request cancelled: no half-stored upload stays behind
            shutil.rmtree(folder, ignore_errors=True)
            raise
        job = Job(secrets.token_urlsafe(12), client_base_name(name), options, folder, source, previews, watched)
        with self.lock:
            self.jobs[job.id] = job
            self.order.append(job.id)
        self.waiting.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        """The photo called ``job_id`` (None when unknown or expired); asking renews its lease."""
        with self.lock:
            job = self.jobs.get(job_id)
        if job is not None:
            job.touched = time.monotonic()
        return job

    def position(self, job: Job) -> int | None:
        """How many photos run before ``job`` (0: it is next or running), None once it is finished."""
        with self.lock:
            if job.id in self.order:
                return self.order.index(job.id) + (self.current is not None)
        return 0 if job.status == "running" else None

    def remove(self, job_id: str) -> bool:
        """Cancel the photo if it waits or runs, and delete it and its files; whether it existed."""
        with self.lock:
            job = self.jobs.pop(job_id, None)
            if job is None:
                return False
            if job.id in self.order:
                self.order.remove(job.id)
            # Decided under the lock the worker takes when a photo stops, so exactly one of the two removes
            # the folder: the worker, for a photo still running, or this call.
            running = job.status == "running"
            if job.status == "queued":
                self._finish(job, "cancelled")
            job.cancel.set()
        if not running:
            shutil.rmtree(job.folder, ignore_errors=True)
        return True

    def counts(self) -> dict[str, int]:
        """How many photos wait, run and are kept (``/api/health``)."""
        with self.lock:
            return {"queued": len(self.order), "running": int(self.current is not None), "kept": len(self.jobs)}

    def sweep(self) -> None:
        """Cancel page photos whose page went away; delete finished photos unasked-for past ``keep``, and
        the oldest beyond :data:`MAX_FINISHED`."""
        now = time.monotonic()
        with self.lock:
            jobs = list(self.jobs.values())
        finished = sorted((j for j in jobs if j.status in FINISHED), key=lambda j: j.touched)
        excess = len(finished) - MAX_FINISHED
        stale = [j for i, j in enumerate(finished) if i < excess or now - j.touched > self.keep]
        stale += [j for j in jobs if j.status not in FINISHED and not j.watched and now - j.touched > self.lease]
        for job in stale:
            if job.status not in FINISHED:
                log.info("photo %s: its page stopped asking about it, cancelled", job.name)
            self.remove(job.id)

    def close(self) -> None:
        """Stop the worker (a running photo stops at its next tile) and remove every file."""
        with self.lock:
            ids = list(self.jobs)
        self.stopping.set()
        for job_id in ids:
            self.remove(job_id)
        self.waiting.put(None)
        self.worker.join(timeout=30)
        self.janitor.join(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)

    # --------------------------------------------------------------------------------------- worker

    def _sweep_every(self, seconds: float) -> None:
        while not self.stopping.wait(seconds):
            self.sweep()

    def _work(self) -> None:
        while True:
            job = self.waiting.get()
            if job is None:
                return
            with self.lock:
                if job.id not in self.order:
                    continue  # removed while it waited
                self.order.remove(job.id)
                self.current = job
                job.status = "running"
            try:
                self._run(job)
            finally:
                with self.lock:
                    self.current = None
                    removed = job.cancel.is_set()  # removed while it ran: its folder is the worker's to delete
                if removed:
                    shutil.rmtree(job.folder, ignore_errors=True)

    def _run(self, job: Job) -> None:
        """Read, deblur and write one photo with the runner's stages -- the same calls, in the same order, as
        ``deblur`` makes -- then the previews the page shows."""
        from deblurcli.runner import describe_failure, format_traceback, is_unexpected

        start = time.perf_counter()
        try:
            self._stages(job)
        except Cancelled:
            self._finish(job, "cancelled")
            return
        except Exception as exc:  # noqa: BLE001 - whatever goes wrong with one photo is that photo's failure
            if job.cancel.is_set():
                self._finish(job, "cancelled")
                return
            job.error = describe_failure(exc)
            if is_unexpected(exc):  # a bug, not a bad photo: worth the traceback in the server's log
                log.warning("photo %s failed: %s\n%s", job.name, job.error, format_traceback(exc))
            self._finish(job, "failed")
            return
        job.seconds = time.perf_counter() - start
        self._finish(job, "done")

    def _stages(self, job: Job) -> None:
        from deblurcli.batch import InputFile, plan_jobs
        from deblurcli.runner import model_stage, read_stage, write_stage

        def check() -> None:
            if job.cancel.is_set():
                raise Cancelled

        def progress(done: int, total: int) -> None:
            job.tiles = (done, total)
            check()

        # The output is named by the CLI's own rule (photo.jpg -> photo_deblurred.jpg, HEIC -> .jpg).
        (run,) = plan_jobs([InputFile(job.source, Path(job.source.name))], None)
        job.stage = "loading model"
        session = self.sessions.get(job.options)
        check()
        job.stage = "reading"
        photo = read_stage(run, self.settings)
        job.width, job.height = photo.size
        check()
        job.stage = "deblurring"
        result = model_stage(photo, session, progress)
        check()
        job.stage = "writing"
        warnings, _compare, kernel = write_stage(run, photo, result, self.settings)
        job.method, job.kernel_size, job.confidence = result.method, result.kernel_size, result.confidence
        job.decision = result.notes[-1] if result.notes else None
        job.warnings = [*photo.warnings, *warnings]
        if kernel is not None:
            job.files["kernel.png"] = kernel
        if job.previews:
            check()
            job.stage = "making previews"
            self._previews(job, photo, result)
        job.output = run.dst

    @staticmethod
    def _previews(job: Job, photo: Photo, result: Result) -> None:
        """Full-resolution 8-bit JPEGs of the input and the result (with the photo's ICC profile) for the
        slider: browsers show few of the formats the CLI writes (no TIFF, no 16 bits)."""
        from deblurcli.atomic import atomic_write_bytes
        from deblurcli.photo import encode_preview_jpeg

        for name, rgb in (("before.jpg", photo.rgb), ("after.jpg", result.rgb)):
            path = job.folder / name
            atomic_write_bytes(path, encode_preview_jpeg(to_uint8(rgb), photo, quality=92), overwrite=True)
            job.files[name] = path

    @staticmethod
    def _finish(job: Job, status: Status) -> None:
        job.stage = status
        job.status = status
        job.finished.set()


class QueueFull(Exception):
    """Too many photos are waiting; the upload is refused (503) and nothing is stored."""
