"""Ctrl-C and SIGTERM for every command: the first one stops the work, later ones cannot cut the clean-up.

Python's defaults make a second Ctrl-C raise in the middle of the clean-up the first one started (the
write being finished, the temporary file being removed: a 0-byte leftover and a lost photo), and let
SIGTERM kill the process at once (exit 143) wherever it lands, imports and model loading included. Here
the first SIGINT or SIGTERM raises ``KeyboardInterrupt`` -- which every command turns into exit 130 -- and
later ones only say that the clean-up is under way. A user who really wants out presses Ctrl-C again:
at :data:`QUIT_AT` signals the process ends at once (exit 130), and whatever temporary file it leaves is
removed by the next run (:func:`deblurcli.atomic.remove_stale_temp_files`).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

#: Exit code of an interrupted command (128 + SIGINT, the shell's convention).
EXIT_INTERRUPTED = 130
#: The signal count at which the process gives up its clean-up and exits at once.
QUIT_AT = 4

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Handler:
    """Counts SIGINT/SIGTERM: the first raises KeyboardInterrupt, later ones are noted (see the module)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, _signum: int, _frame: Any) -> None:
        self.count += 1
        if self.count == 1:
            raise KeyboardInterrupt
        # os.write, not print: the signal may land inside a write to sys.stderr, which is not reentrant.
        if self.count >= QUIT_AT:
            os.write(2, b"interrupted again: stopping now (the next run removes any temporary file left)\n")
            os._exit(EXIT_INTERRUPTED)
        if self.count == 2:
            os.write(2, f"interrupted: finishing the clean-up (interrupt {QUIT_AT - 2} more times to stop at once)\n".encode())


def install() -> None:
    """Handle SIGINT and SIGTERM this way for the rest of the process (the console script's first step)."""
    handler = _Handler()
    for sig in _SIGNALS:
        signal.signal(sig, handler)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """The same handling for the duration of a block, restoring the previous handlers after it.

    For a command run in process (tests, a library caller): :func:`install` covers the console script, and
    there its handler is kept, not replaced: a fresh count restored after the block would let a second
    Ctrl-C that lands after it (while the interpreter waits for the writer thread at exit) raise again.
    Only the main thread can set handlers; elsewhere the caller's own handling stays.
    """
    if isinstance(signal.getsignal(signal.SIGINT), _Handler):
        yield
        return
    try:
        previous = [signal.getsignal(sig) for sig in _SIGNALS]
        handler = _Handler()
        for sig in _SIGNALS:
            signal.signal(sig, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, old in zip(_SIGNALS, previous):
            signal.signal(sig, old)
