"""Click option callbacks shared by several commands, so ``deblur`` and ``deblur eval`` parse the same
option the same way (one definition, one error message)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def tiling_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--tile`` and ``--overlap``, declared once for every command that runs the tiled engine."""
    command = click.option("--overlap", type=click.IntRange(min=0), default=32, show_default=True, help="Cross-fade width between tiles, in pixels.")(command)
    return click.option("--tile", default="auto", show_default=True, callback=parse_tile, help="Tile size in pixels, 0 for the whole image, auto to size from free memory.")(command)


def output_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--strength``, ``--compare``, ``--overwrite``: how results are written, the same for the CLI and Ray."""
    command = click.option("--overwrite", is_flag=True, help="Replace outputs that already exist (default: skip them).")(command)
    command = click.option("--compare", is_flag=True, help="Also write NAME_compare.jpg: input and output side by side.")(command)
    return click.option("--strength", type=click.FloatRange(0.0, 1.0), default=1.0, show_default=True, help="Blend with the input: 1 is the full result, 0 the input.")(command)


def device_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--device``, ``--precision``, ``--threads``: where and how the work runs, for every inference command."""
    command = click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: PyTorch's choice).")(command)
    command = click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True, help="Network precision (auto: bf16 on CPUs with native bf16, else fp32; bf16/fp16 on GPU). Deconvolution always runs in fp32.")(command)
    return click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps (an absent device is an error).")(command)


def method_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--method``, ``--kernel``, ``--kernel-size``, ``--refiner``: how photos are deblurred (see
    docs/how_deblurcli_decides.md)."""
    from deblurcli.decide import METHODS

    command = click.option("--refiner", default="auto", show_default=True, metavar="[auto|none|NAME|FILE]", help="Network run over the kernel method's deconvolution (auto: the catalogue's refiner, if one ships; none: the deconvolution as it is).")(command)

    command = click.option("--kernel-size", type=click.IntRange(3, 255), default=35, show_default=True, metavar="N", help="Largest camera-shake kernel to look for, in pixels of the photo.")(command)
    command = click.option("--kernel", type=click.Path(path_type=Path, dir_okay=False, exists=True), help="Deconvolve with this known blur kernel (a PNG or .npy PSF) instead of estimating one.")(command)
    return click.option("--method", type=click.Choice(METHODS), default="auto", show_default=True, help="auto: deconvolve camera shake with an estimated kernel, the network for other blur, sharp photos left unchanged; network; kernel.")(command)
