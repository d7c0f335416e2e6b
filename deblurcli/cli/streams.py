"""``deblur -`` (a photo read from stdin) and ``-o -`` (the photo written to stdout), for pipelines.

Both go through a file in a private temporary folder: stdin's bytes are saved there and read like any photo,
and the output is written there (atomically, with its metadata) and then copied to stdout. So a photo in a
pipe gets exactly what a photo on disk gets -- EXIF, ICC, bit depth, the same errors -- from the same code,
and nothing half-written ever reaches stdout: a photo that fails writes no bytes there at all.

With ``-o -`` stdout carries the photo and nothing else, so the listing of outputs is off and ``--json``
(which also wants stdout) is refused; the summary and any error still go to stderr. The format is
``--format``'s (default JPEG), since there is no file name to take it from.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from deblurcli.runner import Outcome

#: The command-line word for stdin (as an input) and stdout (as ``-o``).
STREAM = "-"
#: ``-o -``'s format when ``--format`` is not given.
DEFAULT_STREAM_FORMAT = "jpg"


@dataclass
class Streams:
    """Where stdin's photo was saved (``src``) and where the photo for stdout is written (``dst``)."""

    src: Path | None = None
    dst: Path | None = None

    def shown(self, path: Path) -> str:
        """``path`` as the user knows it: ``-`` for the temporary stand-ins of stdin and stdout."""
        return STREAM if path in (self.src, self.dst) else str(path)

    def deliver(self, outcome: Outcome) -> None:
        """Name stdin and stdout ``-`` in ``outcome``, and copy a finished photo meant for stdout there.

        A reader that goes away before the photo is through (``| head -c 100``) makes it a failure: the
        photo did not arrive. stdout is then pointed at /dev/null, so that the flush at exit cannot fail too.
        """
        if outcome.input == self.src:
            outcome.input = Path(STREAM)
        if self.dst is None or outcome.output != self.dst:
            return
        outcome.output = Path(STREAM)
        if outcome.status != "done":
            return
        stdout = sys.stdout.buffer
        try:
            with open(self.dst, "rb") as photo:
                shutil.copyfileobj(photo, stdout)
            stdout.flush()
        except BrokenPipeError:
            outcome.status, outcome.reason = "failed", "stdout was closed before the whole photo was written"
            with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)


def _sniffed_suffix(head: bytes) -> str:
    """The extension for stdin's bytes, from their first bytes (the reader checks the content itself; the
    name only has to agree with it). Unknown content is called a JPEG, so that the reader, which looks at the
    content, is the one to say what it is not (``error: -: not a recognised image ...``)."""
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return ".tif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    if head[4:8] == b"ftyp":
        return ".avif" if head[8:12] in (b"avif", b"avis") else ".heic"
    return ".jpg"


def open_streams(paths: tuple[Path, ...], output: Path | None, stack: contextlib.ExitStack, *, fmt: str | None, in_place: bool, as_json: bool, extras: bool) -> tuple[tuple[Path, ...], Path | None, Streams | None]:
    """Replace ``-`` in the inputs and ``-o -`` by files in a temporary folder that ``stack`` removes at the
    end of the run: (paths, output, streams), the streams None (and no folder made) when neither is used. Every combination that cannot work is a usage error (exit 2) here,
    before stdin is read: several inputs with ``-o -`` or beside ``-``, ``-`` with ``--in-place`` or into a
    folder, ``-o -`` with ``--json`` or with extras (``--compare``, ``--save-kernel``) that have nowhere to
    go, and a photo's bytes for a terminal. A ``-`` input without ``-o`` writes to stdout, as a filter does.
    """
    from deblurcli.batch import FORMAT_SUFFIXES, output_is_file

    reading = any(str(p) == STREAM for p in paths)
    writing = (output is not None and str(output) == STREAM) or (reading and output is None)
    if not (reading or writing):
        return paths, output, None
    if reading:
        if len(paths) > 1:
            raise click.UsageError("'-' (a photo on stdin) cannot be combined with other inputs")
        if in_place:
            raise click.UsageError("'-' (a photo on stdin) has no file to replace: drop --in-place")
        if output is not None and not writing and not output_is_file(output):
            raise click.UsageError("a photo on stdin has no name to keep in a folder: give -o FILE, or -o - for stdout")
        if sys.stdin.buffer.isatty():
            raise click.UsageError("'-' reads a photo from stdin, but stdin is a terminal: pipe one in (deblur - < photo.jpg)")
    if writing:
        if as_json:
            raise click.UsageError("-o - writes the photo to stdout, where --json would write too: drop one of them")
        if extras:
            raise click.UsageError("--compare and --save-kernel write files beside the output, and -o - has no folder: give -o FILE")
        if not reading and (len(paths) != 1 or Path(paths[0]).is_dir()):
            raise click.UsageError("-o - writes one photo to stdout: give one photo file")
        if sys.stdout.isatty():
            raise click.UsageError("-o - would write a photo's bytes to the terminal: redirect stdout (> sharp.jpg) or give -o FILE")
    streams = Streams()
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deblur-stream-")))
    if reading:
        data = sys.stdin.buffer.read()
        streams.src = folder / f"stdin{_sniffed_suffix(data[:16])}"
        streams.src.write_bytes(data)
        paths = (streams.src,)
    if writing:
        streams.dst = folder / f"stdout{FORMAT_SUFFIXES[fmt or DEFAULT_STREAM_FORMAT]}"
        output = streams.dst
    return paths, output, streams
