"""Errors a user can act on.

Each exception's ``str()`` is one line that says what went wrong and, where possible, what to do. The CLI
prints it (prefixed with the file it concerns) and exits non-zero; it never shows a traceback for them.
"""


class DeblurError(Exception):
    """Base class for every error deblurcli reports to the user as one line."""


class PhotoError(DeblurError):
    """A photo cannot be read or written (unsupported, broken, too large, unwritable)."""


class DiskFullError(PhotoError):
    """The output device is full (ENOSPC/EDQUOT): every further write there would fail too, so a batch
    should stop rather than report the same error for each remaining file."""


class WeightsError(DeblurError):
    """Model weights cannot be found, downloaded, verified or loaded."""


class DeviceError(DeblurError):
    """A requested device or precision is not available on this machine."""


class PairsError(DeblurError):
    """Blurry/sharp training or evaluation pairs are missing, unpaired or mismatched."""
