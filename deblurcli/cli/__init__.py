"""The ``deblur`` command group: a thin Click layer over the library, one file per command.

``deblur PATH...`` runs the default command (``deblur.py``); ``train``, ``eval`` and ``models`` sit beside
it. Command modules are imported only when needed, and import torch only inside their functions, so
``deblur --help`` and ``deblur --version`` stay fast.
"""

from __future__ import annotations

import importlib
import sys

import click

from deblurcli._version import __version__

#: command name -> module under deblurcli.cli that defines a Click command called ``command``.
COMMANDS = {
    "deblur": "deblur",
    "train": "train",
    "eval": "eval",
    "models": "models",
    "cluster": "cluster",
}
DEFAULT_COMMAND = "deblur"


class DefaultGroup(click.Group):
    """A group whose first argument, when it is not a subcommand name, goes to the default command.

    ``deblur photo.jpg`` means ``deblur deblur photo.jpg``; a file literally called ``train`` is reached
    as ``deblur ./train`` (or ``deblur deblur train``), since only bare subcommand names are routed.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        return importlib.import_module(f"deblurcli.cli.{module}").command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        group_flags = {"--help", "-h", "--version"}
        if args and args[0] not in COMMANDS and args[0] not in group_flags:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


@click.group(
    cls=DefaultGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Run 'deblur deblur --help' (or 'deblur PHOTO --help') for the options of the default command.",
)
@click.version_option(__version__, "--version", prog_name="deblurcli")
def group() -> None:
    """Remove motion blur from photos.

    \b
      deblur photo.jpg -o sharp.jpg        one photo, EXIF/ICC kept
      deblur dir/ --recursive -o out/      a whole tree of photos
      deblur train --pairs mydata/         fine-tune on your own pairs
      deblur eval --pairs testset/         PSNR / SSIM / MS-SSIM / FSIM / VIF / LPIPS
      deblur models                        which models exist, which are cached
      deblur cluster IN OUT                the same on a Ray cluster (extra 'ray')
    """


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; exit code 2 for usage errors (Click's convention)."""
    group.main(args=argv if argv is not None else sys.argv[1:], prog_name="deblur")
