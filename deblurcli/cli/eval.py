"""``deblur eval``: the seed's metric table (PSNR, SSIM, MS-SSIM, FSIM, VIF) plus LPIPS on any pairs.

Each blurry image is deblurred by a model (loaded once, run through the same tiled engine as ``deblur``)
or read from ``--outputs DIR`` (``DIR/<pair key>.<ext>``, e.g. another method's results), then the blurry
input and the output are both scored against the sharp target, so the table shows what the model
*gained*, not only where it ended. Metric conventions are the literature's and are documented in
:mod:`deblurcli.metrics`. Pairs are found by :mod:`deblurcli.pairs`, exactly as ``deblur train`` finds them.

``--max-shift S`` scores up to a shift, the blind-deblurring protocol: PSNR and SSIM are the best over
every integer displacement of the image within ±S px, on the sharp image's central region; the other
metrics use that region at the best-PSNR shift (see :mod:`deblurcli.metrics`). Use it for blur whose
kernel centre is unknown (recorded camera shake), where a restored photo may sit a few pixels off.

A pair that cannot be scored (unreadable, sizes differ, output missing) is reported as an error and the
others are still scored; the exit code is then 1. Metrics that do not apply (an image too small for
MS-SSIM, LPIPS without its backbone) are "n/a" with a note and do not change the exit code.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from deblurcli.cli.options import (
    INFERENCE_PRECISION_HELP,
    backend_option,
    device_option,
    method_options,
    model_option,
    precision_option,
    require_extra,
    threads_option,
    tile_option,
)

if TYPE_CHECKING:
    import numpy as np
    from rich.table import Table

    from deblurcli.pairs import Pair

SCOPES = ("input", "output", "gain")


@dataclass
class ImageResult:
    """The figures for one pair: the blurry input and the output, each scored against the sharp image."""

    pair: Pair
    width: int
    height: int
    input: dict[str, float | None]
    output: dict[str, float | None]
    gain: dict[str, float | None]
    #: how the output was made (``auto`` reports its choice per image); None for existing outputs
    method: str | None = None


@dataclass
class Report:
    """Everything ``deblur eval`` found: per-image results, means, and the lines explaining gaps."""

    root: str
    source: dict[str, str]
    settings: dict[str, Any]
    images: list[ImageResult]
    mean: dict[str, dict[str, float | None]]
    notes: list[str]
    problems: list[str]
    errors: list[str]


@click.command("eval")
@click.option("--pairs", "pairs_dir", type=click.Path(path_type=Path, file_okay=False), help="Folder of blurry/sharp pairs (blur/ + sharp/, GoPro, or side-by-side).")
@method_options
@model_option("Catalogue model to evaluate (default: the default model; see 'deblur models').")
@click.option("--weights", type=click.Path(path_type=Path, dir_okay=False, exists=True), help="Weights file to evaluate instead of a catalogue model.")
@click.option("--outputs", "outputs_dir", type=click.Path(path_type=Path, file_okay=False, exists=True), help="Score already-deblurred images DIR/<key>.<ext> instead of running a model.")
@click.option("--side-by-side", is_flag=True, help="Each image holds sharp (left) | blurry (right) halves, as in the seed's data.")
@click.option("--csv-pairs", type=click.Path(path_type=Path, dir_okay=False), help="CSV with blur,sharp columns (paths relative to the CSV) instead of a folder layout.")
@click.option("--json", "as_json", is_flag=True, help="Print every per-image figure and the means as one JSON object on stdout, instead of the table.")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path, dir_okay=False), help="Write every per-image figure and the means as CSV.")
@click.option("--save-outputs", type=click.Path(path_type=Path, file_okay=False), help="Keep the deblurred images (8-bit PNG, as scored) as DIR/<key>.png.")
@click.option("--compare", "compare_dir", type=click.Path(path_type=Path, file_okay=False), help="Write blurry | output | sharp strips with their PSNR as DIR/<key>.png.")
@click.option("--crop-border", type=click.IntRange(min=0), default=0, show_default=True, help="Ignore this many pixels on every side.")
@click.option("--max-shift", type=click.IntRange(min=0), default=0, show_default=True, metavar="S", help="Score up to a shift (blind-deblurring protocol): PSNR and SSIM are the best over integer shifts within ±S px, on the sharp image minus an S-px border; the other metrics use that region at the best-PSNR shift. 0 = aligned.")
@click.option("--y-channel", is_flag=True, help="Score BT.601 luma (MATLAB rgb2ycbcr) instead of RGB; LPIPS stays RGB.")
@click.option("--lpips-net", type=click.Choice(["alex", "vgg", "squeeze"]), default="alex", show_default=True, help="LPIPS backbone (its ImageNet weights come from torchvision's cache).")
@click.option("--no-lpips", is_flag=True, help="Leave LPIPS out (no ImageNet backbone needed); the same switch as in 'deblur train'.")
@device_option("Where the model and the metrics run (auto: CUDA, else MPS, else CPU).")
@precision_option(INFERENCE_PRECISION_HELP)
@backend_option
@tile_option
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N pairs (sorted by name).")
@threads_option
def command(
    pairs_dir: Path | None,
    method: str,
    kernel: Path | None,
    kernel_size: int,
    blur_domain: str,
    refiner: str,
    model_name: str | None,
    weights: Path | None,
    outputs_dir: Path | None,
    side_by_side: bool,
    csv_pairs: Path | None,
    as_json: bool,
    csv_path: Path | None,
    save_outputs: Path | None,
    compare_dir: Path | None,
    crop_border: int,
    max_shift: int,
    y_channel: bool,
    lpips_net: str,
    no_lpips: bool,
    device: str,
    precision: str,
    backend: str,
    tile: int | None,
    limit: int | None,
    threads: int | None,
) -> None:
    """Score a model (or existing outputs) on blurry/sharp pairs: PSNR, SSIM, MS-SSIM, FSIM, VIF, LPIPS.

    \b
      deblur eval --pairs testset/                      method auto, the default model
      deblur eval --pairs testset/ --method kernel      kernel estimation + deconvolution only
      deblur eval --pairs GoPro/test --model NAME --json > gopro.json
      deblur eval --pairs testset/ --outputs results/   someone else's outputs
      deblur eval --pairs heldout/ --max-shift 5        best over shifts of up to 5 px
    """
    from deblurcli.cli.errors import setup_error
    from deblurcli.errors import DeblurError

    if pairs_dir is None and csv_pairs is None:
        raise click.UsageError("give --pairs DIR (or --csv-pairs FILE)")
    if outputs_dir is not None and (model_name or weights):
        raise click.UsageError("--outputs scores existing images; it cannot be combined with --model or --weights")
    if csv_pairs is not None and side_by_side:
        raise click.UsageError("--side-by-side describes a folder of images; a CSV lists separate files")
    require_extra("eval", "piq", *(() if no_lpips else ("lpips",)))
    try:
        report = evaluate(
            pairs_dir if pairs_dir is not None else Path("."),
            method=method,
            kernel=kernel,
            kernel_size=kernel_size,
            blur_domain=blur_domain,
            refiner=refiner,
            model_name=model_name,
            weights=weights,
            outputs_dir=outputs_dir,
            side_by_side=side_by_side,
            csv_pairs=csv_pairs,
            save_outputs=save_outputs,
            compare_dir=compare_dir,
            crop_border=crop_border,
            max_shift=max_shift,
            y_channel=y_channel,
            lpips_net="none" if no_lpips else lpips_net,
            device=device,
            precision=precision,
            backend=backend,
            tile=tile,
            limit=limit,
            threads=threads,
        )
        if as_json:
            click.echo(json.dumps(to_json(report), indent=2, allow_nan=False))
            show_notes(report)
        else:
            show(report)
        if csv_path is not None:
            write_csv(report, csv_path)
    except DeblurError as exc:
        line, code = setup_error(exc, model_label=str(weights) if weights is not None else model_name and f"--model {model_name}")
        click.echo(f"error: {line}", err=True)
        raise SystemExit(code) from None
    if report.errors:
        raise SystemExit(1)


@dataclass
class _Scoring:
    """What every pair is scored with: the metric function, the LPIPS backbone in use and the gaps found."""

    score: Callable[..., dict[str, float | None]]
    lpips_net: str | None
    crop: int
    gaps: dict[str, tuple[int, str]]


def evaluate(
    root: Path,
    *,
    method: str = "auto",
    model_name: str | None = None,
    weights: Path | None = None,
    kernel: Path | None = None,
    kernel_size: int = 35,
    blur_domain: str = "auto",
    refiner: str = "auto",
    outputs_dir: Path | None = None,
    side_by_side: bool = False,
    csv_pairs: Path | None = None,
    save_outputs: Path | None = None,
    compare_dir: Path | None = None,
    crop_border: int = 0,
    max_shift: int = 0,
    y_channel: bool = False,
    lpips_net: str = "alex",
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
    tile: int | None = None,
    limit: int | None = None,
    threads: int | None = None,
) -> Report:
    """Score every pair; per-pair failures are collected in ``Report.errors`` (and printed) rather than raised.
    ``threads``: CPU threads for the methods and the metrics (default: PyTorch's choice). The kernel estimate
    depends on rounding, so figures compared across runs want the same thread count."""
    from rich.console import Console
    from rich.progress import Progress

    from deblurcli import metrics
    from deblurcli.devices import resolve_device, set_threads
    from deblurcli.errors import DeblurError
    from deblurcli.pairs import find_pairs

    if threads is not None:
        set_threads(threads)
    scan = find_pairs(root, side_by_side=side_by_side, csv=csv_pairs)
    pairs = scan.pairs[:limit] if limit else scan.pairs
    problems = list(scan.problems)
    dev = resolve_device(device)
    if outputs_dir is not None:
        produce, source = _existing_outputs(outputs_dir, problems), {"outputs": str(outputs_dir)}
    else:
        produce, source = _session_outputs(
            method=method, model=model_name, weights=weights, kernel=kernel, kernel_size=kernel_size, blur_domain=blur_domain,
            refiner=refiner, device=device, precision=precision, backend=backend, tile=tile,
        )
    for line in problems[:10]:
        click.echo(f"warning: {line}", err=True)
    if len(problems) > 10:
        click.echo(f"warning: ... and {len(problems) - 10} more unpaired or ambiguous files", err=True)

    lpips_model, lpips_note = metrics.make_lpips(lpips_net)
    if lpips_model is not None:
        lpips_model = lpips_model.to(dev)
    scoring = _Scoring(
        functools.partial(
            metrics.image_metrics, crop_border=crop_border, y_channel=y_channel, lpips_model=lpips_model, device=dev,
            max_shift=max_shift,
        ),
        lpips_net if lpips_model is not None else None, crop_border + max_shift, {},
    )
    results: list[ImageResult] = []
    errors: list[str] = []
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("scoring", total=len(pairs))
        for pair in pairs:
            progress.update(task, description=pair.key)
            try:
                results.append(_score_pair(pair, produce, scoring, save_outputs, compare_dir))
            except DeblurError as exc:
                errors.append(str(exc))
                click.echo(f"error: {exc}", err=True)
            progress.advance(task)
    settings = {
        "channel": "y" if y_channel else "rgb",
        "crop_border": crop_border,
        "max_shift": max_shift,
        "quantized": "8-bit",
        "ssim": "11x11 Gaussian window, sigma 1.5, no downsampling",
        "lpips_net": scoring.lpips_net,
        "psnr_null_means": "identical images (infinite PSNR)",
    }
    return _report(csv_pairs if csv_pairs is not None else root, source, settings, results, problems, errors, scoring, lpips_note)


#: Makes the output for a pair: (pixels, the method that made them or None for existing outputs).
Produce = Callable[["Pair", "np.ndarray", "np.ndarray"], tuple["np.ndarray", "str | None"]]


def _session_outputs(**options: Any) -> tuple[Produce, dict[str, str]]:
    """Outputs made by one Session (built once for every pair), and how the report names their source."""
    from deblurcli.devices import keep_host_memory
    from deblurcli.session import Session
    from deblurcli.weights import default_model_name

    keep_host_memory()
    session = Session(**options)
    source = {"method": str(options["method"])}
    if session.model is not None:
        if options["model"] or options["weights"] is None:
            source["model"] = options["model"] or default_model_name()
        if options["weights"] is not None:
            source["weights"] = str(options["weights"])
    if session.refiner is not None:
        source["refiner"] = session.refiner_label

    def produce(_pair: Pair, blur: np.ndarray, _sharp: np.ndarray) -> tuple[np.ndarray, str | None]:
        result = session.deblur(blur)
        return result.rgb, result.method

    return produce, source


def _existing_outputs(outputs_dir: Path, problems: list[str]) -> Produce:
    """Outputs read from ``outputs_dir/<key>.<ext>`` (someone else's method)."""
    from deblurcli.pairs import index_images

    outputs = index_images(outputs_dir, problems)

    def produce(pair: Pair, _blur: np.ndarray, sharp: np.ndarray) -> tuple[np.ndarray, str | None]:
        return _read_output(outputs, outputs_dir, pair, sharp.shape), None

    return produce


def _score_pair(pair: Pair, produce: Produce, scoring: _Scoring, save_outputs: Path | None, compare_dir: Path | None) -> ImageResult:
    """One pair: its output made (or read), quantised as saved, and it and the blurry input scored."""
    from deblurcli import metrics
    from deblurcli.errors import DeblurError, PairsError
    from deblurcli.pairs import load_pair

    blur, sharp = load_pair(pair)
    out, method = produce(pair, blur, sharp)
    out = metrics.quantize8(out)
    try:
        scored_in, scored_out = scoring.score(blur, sharp), scoring.score(out, sharp)
    except DeblurError as exc:
        raise PairsError(f"{pair.blur}: {exc}") from None
    h, w = (n - 2 * scoring.crop for n in sharp.shape[:2])
    for key, reason in metrics.unavailable(h, w, scoring.lpips_net).items():
        count, first = scoring.gaps.get(key, (0, reason))
        scoring.gaps[key] = (count + 1, first)
    if save_outputs is not None:
        _write_png(save_outputs / f"{pair.key}.png", out)
    if compare_dir is not None:
        _write_png(compare_dir / f"{pair.key}.png", compare_strip(blur, out, sharp, scored_in["psnr"], scored_out["psnr"]))
    return ImageResult(pair, w, h, scored_in, scored_out, metrics.gain(scored_out, scored_in), method)


def _report(
    root: Path, source: dict[str, str], settings: dict[str, Any], results: list[ImageResult], problems: list[str],
    errors: list[str], scoring: _Scoring, lpips_note: str | None,
) -> Report:
    from deblurcli import metrics

    notes = [lpips_note] if lpips_note else []
    notes += [
        f"{metrics.LABELS[key]} n/a for {count} of {len(results)} image(s): {first}"
        for key, (count, first) in sorted(scoring.gaps.items(), key=lambda item: metrics.METRICS.index(item[0]))
    ]
    methods = [r.method for r in results if r.method is not None]
    if methods and source.get("method") == "auto":
        counts = ", ".join(f"{name} {methods.count(name)}" for name in sorted(set(methods)))
        notes.append(f"auto chose: {counts}")
    mean_in = metrics.mean_metrics(r.input for r in results)
    mean_out = metrics.mean_metrics(r.output for r in results)
    return Report(
        root=str(root), source=source, settings=settings, images=results,
        mean={"input": mean_in, "output": mean_out, "gain": metrics.gain(mean_out, mean_in)},
        notes=notes, problems=problems, errors=errors,
    )


def _read_output(outputs: Mapping[str, Path], outputs_dir: Path, pair: Pair, shape: tuple[int, ...]) -> np.ndarray:
    """The existing output for ``pair`` (``outputs_dir/<key>.<ext>``), checked against the sharp size."""
    from deblurcli.errors import PairsError, PhotoError
    from deblurcli.photo import read_photo

    path = outputs.get(pair.key)
    if path is None:
        raise PairsError(f"{outputs_dir / pair.key}.*: no output image for {pair.blur}")
    try:
        out = read_photo(path).rgb
    except PhotoError as exc:
        raise PhotoError(f"{path}: {exc}") from None
    if out.shape != shape:
        raise PairsError(f"{path}: output is {out.shape[1]}x{out.shape[0]} but the sharp image is {shape[1]}x{shape[0]}")
    return out


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """An 8-bit PNG of ``rgb``, written atomically (the bytes scored are exactly the bytes kept)."""
    import numpy as np
    from PIL import Image

    from deblurcli.atomic import atomic_write_bytes

    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())


def compare_strip(
    blur: np.ndarray, out: np.ndarray, sharp: np.ndarray, psnr_in: float | None, psnr_out: float | None
) -> np.ndarray:
    """blurry | output | sharp side by side, each labelled, with the PSNR of the blurry input and output."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    h, w = sharp.shape[:2]
    strip = Image.fromarray(np.round(np.clip(np.concatenate([blur, out, sharp], axis=1), 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default(size=max(10, min(h, w) // 20))
    gain = psnr_out - psnr_in if psnr_in is not None and psnr_out is not None and math.isfinite(psnr_in) else None
    labels = [
        f"blurry {_fmt('psnr', psnr_in)} dB",
        f"output {_fmt('psnr', psnr_out)} dB" + (f" ({gain:+.2f})" if gain is not None and math.isfinite(gain) else ""),
        "sharp",
    ]
    pad = max(2, min(h, w) // 80)
    for i, label in enumerate(labels):
        x0, y0, x1, y1 = draw.textbbox((i * w + 2 * pad, 2 * pad), label, font=font)
        draw.rectangle((x0 - pad, y0 - pad, x1 + pad, y1 + pad), fill=(0, 0, 0))
        draw.text((i * w + 2 * pad, 2 * pad), label, fill=(255, 255, 255), font=font)
    return np.asarray(strip, dtype=np.float32) / 255.0


def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.2f}" if key == "psnr" else f"{value:.4f}"


def _fmt_gain(key: str, value: float | None, color: bool) -> str:
    from deblurcli.metrics import HIGHER_IS_BETTER

    if value is None or math.isinf(value):
        return ""
    text = f"{value:+.2f}" if key == "psnr" else f"{value:+.4f}"
    if not color or value == 0:
        return text
    good = (value > 0) == HIGHER_IS_BETTER[key]
    return f"[{'green' if good else 'red'}]{text}[/]"


def build_table(report: Report, color: bool = True) -> Table:
    """Per image an ``input`` and an ``output`` row (with the gain), then the means and the mean gain."""
    from rich.table import Table

    from deblurcli.metrics import LABELS, METRICS

    source = ", ".join(f"{k} {v}" for k, v in report.source.items())
    table = Table(
        title=f"deblur eval: {len(report.images)} pair(s) from {report.root} ({source})",
        caption=(
            f"{report.settings['channel'].upper()}, 8-bit, crop {report.settings['crop_border']} px; "
            + (f"best over shifts of up to ±{report.settings['max_shift']} px; " if report.settings.get("max_shift") else "")
            + "SSIM 11x11 Gaussian s=1.5, no downsampling; LPIPS lower is better"
        ),
    )
    table.add_column("image", overflow="fold")
    table.add_column("")
    for key in METRICS:
        table.add_column(LABELS[key], justify="right")
    for r in report.images:
        table.add_row(r.pair.key, "input", *(_fmt(k, r.input[k]) for k in METRICS))
        table.add_row(
            "", "output", *(f"{_fmt(k, r.output[k])} {_fmt_gain(k, r.gain[k], color)}".rstrip() for k in METRICS),
            end_section=True,
        )
    for scope in SCOPES:
        values = report.mean[scope]
        cells = [(_fmt_gain(k, values[k], color) or "n/a") if scope == "gain" else _fmt(k, values[k]) for k in METRICS]
        table.add_row("mean" if scope == "input" else "", scope, *cells, style="bold")
    return table


def show(report: Report) -> None:
    """The table on stdout, then :func:`show_notes`."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # a log or a pasted report should not wrap at 80 columns
        console = Console(width=160)
    console.print(build_table(report, color=console.is_terminal))
    show_notes(report)


def show_notes(report: Report) -> None:
    """Notes and the error count on stderr, unwrapped so paths stay copyable."""
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    if report.errors:
        click.echo(f"{len(report.errors)} pair(s) could not be scored (see the errors above)", err=True)


def _finite(value: float | None) -> float | None:
    """JSON has no infinity: a non-finite figure (only PSNR of identical images) becomes null."""
    return value if value is not None and math.isfinite(value) else None


def to_json(report: Report) -> dict[str, Any]:
    """The report as a strict-JSON-serialisable dict: per-image objects and a ``mean`` object."""

    def block(values: Mapping[str, float | None]) -> dict[str, float | None]:
        return {k: _finite(v) for k, v in values.items()}

    return {
        "pairs": report.root,
        "source": report.source,
        "settings": report.settings,
        "count": len(report.images),
        "images": [
            {
                "key": r.pair.key,
                "blur": str(r.pair.blur),
                "sharp": str(r.pair.sharp) if r.pair.sharp is not None else None,
                "side_by_side": r.pair.side_by_side,
                "width": r.width,
                "height": r.height,
                "method": r.method,
                **{scope: block(getattr(r, scope)) for scope in SCOPES},
            }
            for r in report.images
        ],
        "mean": {scope: block(report.mean[scope]) for scope in SCOPES},
        "notes": report.notes,
        "problems": report.problems,
        "errors": report.errors,
    }


def write_csv(report: Report, path: Path) -> None:
    """One row per image and a final ``mean`` row; columns ``input_psnr`` ... ``gain_lpips``.

    Infinite PSNR is written ``inf`` (Python and pandas read it back as a float); n/a is an empty cell.
    """
    from deblurcli.metrics import METRICS
    from deblurcli.atomic import atomic_write_bytes

    columns = [f"{scope}_{key}" for scope in SCOPES for key in METRICS]

    def cells(values: Mapping[str, Mapping[str, float | None]]) -> list[str]:
        return ["" if values[s][k] is None else repr(float(values[s][k])) for s in SCOPES for k in METRICS]  # type: ignore[arg-type]

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["key", "blur", "sharp", "width", "height", *columns])
    for r in report.images:
        scopes = {"input": r.input, "output": r.output, "gain": r.gain}
        writer.writerow([r.pair.key, r.pair.blur, r.pair.sharp or "", r.width, r.height, *cells(scopes)])
    writer.writerow(["mean", "", "", "", "", *cells(report.mean)])
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))
