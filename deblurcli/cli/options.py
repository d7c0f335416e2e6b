"""Click option callbacks shared by several commands, so ``deblur`` and ``deblur eval`` parse the same
option the same way (one definition, one error message)."""

from __future__ import annotations

import click


def parse_tile(_ctx: click.Context, _param: click.Parameter, value: str) -> int | None:
    """``--tile auto`` (None: sized from free memory), ``0`` (whole image) or a size in pixels."""
    if value.strip().lower() == "auto":
        return None
    try:
        tile = int(value)
    except ValueError:
        raise click.BadParameter("expected 'auto', 0 (whole image) or a tile size in pixels") from None
    if tile < 0:
        raise click.BadParameter("a tile size cannot be negative")
    return tile
