"""Setup shared by every test module."""

import signal

import pytest

# A test run started in the background by a non-interactive shell (as CI harnesses may do) inherits
# SIGINT as *ignored*, and so would every CLI process the tests start. The interrupt tests need Python's
# normal Ctrl-C behaviour here and in those children (a handled signal is reset to default on exec).
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _no_user_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's ``DEBLUR_MODEL`` must not change which model the tests (and the CLIs they start) use."""
    monkeypatch.delenv("DEBLUR_MODEL", raising=False)
