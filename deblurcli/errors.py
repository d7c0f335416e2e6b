"""Errors a user can act on.

Each exception's ``str()`` is one line that says what went wrong and, where possible, what to do. The CLI
translates them once, at its edge (:mod:`deblurcli.cli.errors`): the class says which option or file the
line is about and which exit code it means, so no caller routes on the message's wording.
"""


class DeblurError(Exception):
    """Base class for every error deblurcli reports to the user as one line."""


class OptionError(DeblurError):
    """An option's value cannot work (a tile too small for the model, a strength above 1, ...): a usage
    error, named after ``option`` (the CLI's spelling) when there is one."""

    option: str = ""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        if option is not None:
            self.option = option


class DeviceError(OptionError):
    """A requested device is not available on this machine."""

    option = "--device"


class PrecisionError(DeviceError):
    """A requested precision is not available on the device."""

    option = "--precision"


class PhotoError(DeblurError):
    """A photo cannot be read or written (unsupported, broken, too large, unwritable)."""


class OutputExistsError(PhotoError):
    """The output file exists and replacing it was not asked for (another run may have written it)."""


class KernelError(DeblurError):
    """A blur kernel file (``--kernel``) cannot be read or is not a kernel."""


class DiskFullError(PhotoError):
    """The output device is full (ENOSPC/EDQUOT): every further write there would fail too, so a batch
    should stop rather than report the same error for each remaining file."""


class WeightsError(DeblurError):
    """Model weights cannot be found, downloaded, verified or loaded."""


class PairsError(DeblurError):
    """Blurry/sharp training or evaluation pairs are missing, unpaired or mismatched."""


class MissingExtraError(DeblurError):
    """A command needs an optional dependency that is not installed; the line names the extra to install."""


class ConfigError(DeblurError):
    """The settings file (``config.toml``) cannot be read or written, or holds a value of the wrong kind."""
