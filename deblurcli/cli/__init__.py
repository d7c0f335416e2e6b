"""The ``deblur`` command group: a thin Click layer over the library, one file per command.

``deblur PATH...`` runs the default command (``deblur.py``); ``train``, ``eval``, ``models``, ``cluster``
and ``serve`` sit beside it. Command modules are imported only when needed, and import torch only inside
their functions, so ``deblur --help`` and ``deblur --version`` stay fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from deblurcli._version import __version__
from deblurcli.cli import interrupts

#: command name -> module under deblurcli.cli that defines a Click command called ``command``.
COMMANDS = {
    "deblur": "deblur",
    "train": "train",
    "eval": "eval",
    "models": "models",
    "cluster": "cluster",
    "serve": "serve",
}
DEFAULT_COMMAND = "deblur"


class DefaultGroup(click.Group):
    """A group whose first argument, when it is not a subcommand name, goes to the default command.

    ``deblur photo.jpg`` means ``deblur deblur photo.jpg``; a file literally called ``train`` is reached
    as ``deblur ./train`` (or ``deblur deblur train``), since only bare subcommand names are routed.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; Ctrl-C or SIGTERM before it handles them itself (while its module and torch are
        imported, say) is exit 130 with one line, not Click's "Aborted!" and exit 1."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise click.exceptions.Exit(interrupts.EXIT_INTERRUPTED) from None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        return importlib.import_module(f"deblurcli.cli.{module}").command

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "[OPTIONS] PATH... | COMMAND [ARGS]...")

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The default command's options first, since ``deblur PHOTO`` is what most runs are; then the
        group's own options and the commands, the default one marked ``*``."""
        default = self.get_command(ctx, DEFAULT_COMMAND)
        assert default is not None
        sub_ctx = click.Context(default, info_name=DEFAULT_COMMAND, parent=ctx)
        rows = [
            record
            for param in default.get_params(sub_ctx)
            if isinstance(param, click.Option) and "--help" not in param.opts
            and (record := param.get_help_record(sub_ctx)) is not None
        ]
        with formatter.section(f"Options of the default command ({DEFAULT_COMMAND}*)"):
            formatter.write_dl(rows)
        super().format_options(ctx, formatter)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click lists them, with ``*`` after the default command's name (as click-default-group does)."""
        commands = [(name, cmd) for name in self.list_commands(ctx) if (cmd := self.get_command(ctx, name)) is not None]
        names = [name + ("*" if name == DEFAULT_COMMAND else "") for name, _ in commands]
        limit = formatter.width - 6 - max(map(len, names))
        with formatter.section("Commands"):
            formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, (_, cmd) in zip(names, commands)])

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        group_flags = {"--help", "-h", "--version"}
        if args and args[0] not in COMMANDS and args[0] not in group_flags:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


@click.group(
    cls=DefaultGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="* the default command: 'deblur PATH...' runs 'deblur deblur PATH...'. 'deblur COMMAND --help' for the others.",
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
      deblur serve --open                  a local page: before/after at 1:1 (extra 'serve')
    """


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; exit code 2 for usage errors (Click's convention), 130 when interrupted.

    SIGINT and SIGTERM are handled from here on (:mod:`deblurcli.cli.interrupts`), before any heavy import,
    so that a signal while torch loads is exit 130 too, and a second one cannot cut a clean-up short.
    """
    interrupts.install()
    group.main(args=argv if argv is not None else sys.argv[1:], prog_name="deblur")
