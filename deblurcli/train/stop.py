"""Stopping a run cleanly: SIGINT/SIGTERM set a flag the loop checks between steps."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from typing import Any


class StopFlag:
    """SIGINT/SIGTERM set a flag checked between steps, so a checkpoint is written from a consistent
    state; a second Ctrl-C interrupts immediately (the previous checkpoint is still intact)."""

    #: Under torchrun a Ctrl-C reaches each worker twice (from the terminal and forwarded by the agent),
    #: so there a second signal this soon after the first is the same request, not an impatient user.
    DUPLICATE_WINDOW_S = 5.0

    def __init__(self, distributed: bool = False) -> None:
        self.reason: str | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._window = self.DUPLICATE_WINDOW_S if distributed else 0.0
        self._first = 0.0

    def _handle(self, signum: int, frame: Any) -> None:
        if self.reason is not None:
            if time.monotonic() - self._first < self._window:
                return
            raise KeyboardInterrupt
        self.request("interrupted" if signum == signal.SIGINT else "terminated")

    def request(self, reason: str) -> None:
        """Stop at the next step boundary (a signal here, or one another rank received)."""
        if self.reason is None:
            self._first = time.monotonic()
        self.reason = reason

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: signals stay with the caller
            pass
        try:
            yield
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
