"""Options shared by several commands, so ``deblur``, ``deblur eval``, ``deblur train`` and ``deblur cluster``
spell, show and parse the same option the same way (one definition, one error message)."""

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


#: What ``--tile`` and ``--device`` take, shown in place of click's generic TEXT.
TILE_METAVAR = "[auto|0|N]"
DEVICE_METAVAR = "[auto|cpu|cuda[:N]|mps]"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: ``auto`` precision for inference, as :func:`deblurcli.devices.resolve_precision` decides it.
INFERENCE_PRECISION_HELP = (
    "Network precision. auto: bf16 on CPUs with native bf16 (AVX512-BF16, AMX or Arm BF16), else fp32; "
    "bf16 on GPUs that have it, else fp16. Deconvolution always runs in fp32."
)


def tile_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--tile auto|0|N``, for every command that runs the tiled engine."""
    return click.option("--tile", default="auto", show_default=True, metavar=TILE_METAVAR, callback=parse_tile, help="Tile size in pixels, 0 for the whole image, auto to size from free memory.")(command)


def tiling_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--tile`` and ``--overlap``, declared once for every command that writes tiled photos."""
    command = click.option("--overlap", type=click.IntRange(min=0), default=32, show_default=True, help="Cross-fade width between tiles, in pixels.")(command)
    return tile_option(command)


def device_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--device``; its help names what else the device is used for in that command."""
    return click.option("--device", default="auto", show_default=True, metavar=DEVICE_METAVAR, help=help_text)


def precision_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--precision``; ``auto`` means something else for training than for inference, hence the help text."""
    return click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True, help=help_text)


def _check_backend(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """``--backend openvino`` without OpenVINO is one line naming the extra, before any photo is looked at."""
    if value == "openvino":
        require_extra("openvino", "openvino")
    return value


def backend_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--backend``: which runtime runs the network (:mod:`deblurcli.backends`)."""
    from deblurcli.backends import BACKEND_ENV, BACKENDS

    return click.option(
        "--backend", type=click.Choice(BACKENDS, case_sensitive=False), default="auto", show_default=True,
        envvar=BACKEND_ENV, show_envvar=True, callback=_check_backend,
        help="Runtime of the network. openvino: CPU only, NAFNet models, the 'openvino' extra; auto: openvino "
        "where it is installed and the precision is bf16, else torch.",
    )(command)


def output_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--strength``, ``--compare``, ``--overwrite``: how results are written, the same for the CLI and Ray."""
    command = click.option("--overwrite", is_flag=True, help="Replace outputs that already exist (default: skip them).")(command)
    command = click.option("--compare", is_flag=True, help="Also write NAME_compare.jpg: input and output side by side.")(command)
    return click.option("--strength", type=click.FloatRange(0.0, 1.0), default=1.0, show_default=True, help="Blend with the input: 1 is the full result, 0 the input.")(command)


def threads_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--threads``: CPU threads, for every command that computes (a job sharing the machine is given fewer;
    kernel-method figures are compared at one thread count, since the estimate depends on rounding)."""
    return click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: PyTorch's choice).")(command)


def device_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--device``, ``--precision``, ``--backend``, ``--threads``: where and how the work runs, for every
    inference command."""
    command = threads_option(command)
    command = backend_option(command)
    command = precision_option(INFERENCE_PRECISION_HELP)(command)
    return device_option("Where the network runs (auto: CUDA, else MPS, else CPU; an absent device is an error).")(command)


def _catalogue_name(value: str | None, *, trained: bool, deblurring: bool) -> str | None:
    """``value`` if it names a catalogue model (one with weights, when ``trained``; a deblurring model, not a
    refiner, when ``deblurring``), else a usage error (exit 2) that lists the models that fit."""
    if value is None:
        return None
    from deblurcli.errors import WeightsError
    from deblurcli.weights import get_entry, is_trained, list_models

    try:
        entry = get_entry(value)
    except WeightsError:
        entry = None
    if entry is None or (trained and not is_trained(entry)) or (deblurring and entry.role != "deblur"):
        names = ", ".join(e.name for e in list_models() if is_trained(e) and (e.role == "deblur" or not deblurring))
        if entry is None:
            why = "is not in the catalogue"
        elif trained and not is_trained(entry):
            why = "has no trained weights yet"
        else:
            why = "refines deconvolutions (pass it as --refiner)"
        raise click.BadParameter(f"model {value!r} {why}; choose one of: {names} (see 'deblur models'), or pass --weights FILE")
    return value


def parse_model(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``--model NAME``: a catalogue deblurring model that can run."""
    return _catalogue_name(value, trained=True, deblurring=True)


def parse_downloadable(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Any catalogue model with weights, a refiner too (``deblur models download``)."""
    return _catalogue_name(value, trained=True, deblurring=False)


def parse_catalogued(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Any catalogue model, trained or not (``deblur models show`` describes both)."""
    return _catalogue_name(value, trained=False, deblurring=False)


def model_option(help_text: str, *, dest: str = "model_name") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--model NAME``, checked against the catalogue while the command line is parsed."""
    return click.option("--model", dest, metavar="NAME", callback=parse_model, help=help_text)


def require_extra(extra: str, *modules: str) -> None:
    """Check that a command's optional dependencies import before any work starts: a missing extra is one
    line naming it (exit 2, like a missing Ray for ``deblur cluster``), not a failure minutes into a run."""
    from deblurcli.errors import MissingExtraError
    from deblurcli.extras import require

    try:
        for module in modules:
            require(module, extra)
    except MissingExtraError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(2) from None


def method_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--method``, ``--kernel``, ``--kernel-size``, ``--blur-domain``, ``--refiner``: how photos are deblurred
    (see docs/how_deblurcli_decides.md)."""
    from deblurcli.decide import BLUR_DOMAINS, METHODS

    command = click.option("--refiner", default="auto", show_default=True, metavar="[auto|none|NAME|FILE]", help="Network run over the kernel method's deconvolution (auto: the catalogue's refiner, if one ships; none: the deconvolution as it is).")(command)

    command = click.option("--blur-domain", type=click.Choice(BLUR_DOMAINS), default="auto", show_default=True, help="Where the kernel method estimates and deconvolves: srgb (the photo's values as stored: blur added to a finished image), linear (light, as a camera blurs it), or auto: judged per photo (see docs/how_deblurcli_decides.md).")(command)
    command = click.option("--kernel-size", type=click.IntRange(3, 255), default=35, show_default=True, metavar="N", help="Largest camera-shake kernel to look for, in pixels of the photo.")(command)
    command = click.option("--kernel", type=click.Path(path_type=Path, dir_okay=False, exists=True), help="Deconvolve with this known blur kernel (a PNG or .npy PSF) instead of estimating one.")(command)
    return click.option("--method", type=click.Choice(METHODS), default="auto", show_default=True, help="auto: deconvolve camera shake with an estimated kernel, the network for other blur, sharp photos left unchanged; network; kernel.")(command)
