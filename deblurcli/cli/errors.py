"""Library errors into what the user sees, in one place: the line to print and the exit code.

The library raises typed :class:`~deblurcli.errors.DeblurError` subclasses; every command translates them
here, so the same failure reads the same from ``deblur``, ``deblur eval`` and ``deblur cluster``, and no
command decides by the wording of a message.
"""

from __future__ import annotations

from deblurcli.errors import DeblurError, OptionError, WeightsError

#: Exit codes shared by the commands: 1 the work failed, 2 the command line cannot work.
EXIT_FAILED = 1
EXIT_USAGE = 2


def setup_error(exc: DeblurError, *, model_label: str | None = None) -> tuple[str, int]:
    """(the line to print after ``error:``, exit code) for a failure before any photo was processed.

    An option that cannot work is a usage error named after the option; weights that cannot be loaded are
    named after the ``--model``/``--weights`` the user gave (``model_label``; None when the default model
    was used, whose name the message itself carries).
    """
    if isinstance(exc, OptionError):
        return (f"{exc.option}: {exc}" if exc.option else str(exc)), EXIT_USAGE
    if isinstance(exc, WeightsError) and model_label is not None:
        return f"{model_label}: {exc}", EXIT_FAILED
    return str(exc), EXIT_FAILED
