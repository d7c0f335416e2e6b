"""``deblur cluster IN... OUT``: the same job as ``deblur IN -o OUT``, spread over a Ray cluster.

A thin layer over :func:`deblurcli.ray.deblur_paths`: the plan (input discovery, output names, skipping
existing outputs) and the per-file work are the library's, so OUT ends up exactly as ``deblur`` would
leave it. Results are printed when the cluster is done -- output paths, or one JSON object per file with
``--json`` -- with ``error:`` lines and a summary on stderr. Needs ``pip install 'deblurcli[ray]'``.

Exit codes: 0 all done (or skipped), 1 some files failed, 2 usage error or Ray/device unavailable.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from deblurcli.cli.options import (
    INFERENCE_PRECISION_HELP,
    backend_option,
    device_option,
    method_options,
    model_option,
    output_options,
    precision_option,
    tiling_options,
)


@click.command("cluster", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path, file_okay=False))
@click.option("-r", "--recursive", is_flag=True, help="Go into sub-folders; the tree is mirrored under OUT.")
@click.option("--address", metavar="ADDR", help="Ray cluster to join ('auto', ray://host:10001; default: RAY_ADDRESS, else a local Ray).")
@click.option("--actors", type=click.IntRange(min=1), help="Model copies working at once (default: one per GPU, else one per --cpus-per-actor CPUs).")
@click.option("--cpus-per-actor", type=click.FloatRange(min=0.5), help="CPUs each model copy reserves and uses as torch threads (default 2 with GPUs, else up to 4).")
@click.option("--gpus-per-actor", type=click.FloatRange(min=0.0), help="GPUs each model copy reserves (default 1 when the cluster has GPUs, else 0).")
@method_options
@model_option("Catalogue model (see 'deblur models'; default: $DEBLUR_MODEL, else 'deblur models default').")
@click.option("--weights", type=click.Path(path_type=Path, dir_okay=False, exists=True), help="Weights file (on a file system every node sees).")
@tiling_options
@device_option("Device on each worker (auto: its GPU if it has one, else its CPU).")
@precision_option(INFERENCE_PRECISION_HELP)
@backend_option
@output_options
@click.option("--save-kernel", is_flag=True, help="Also write NAME_kernel.png: the blur kernel that was estimated (or given).")
@click.option("--allow-huge", is_flag=True, help="Read images above the decompression-bomb limit.")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True, help="JPEG/WebP quality of the outputs.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file on stdout (the result table).")
@click.option("-q", "--quiet", is_flag=True, help="No summary or warnings; errors only.")
@click.pass_context
def command(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    output: Path,
    recursive: bool,
    address: str | None,
    actors: int | None,
    cpus_per_actor: float | None,
    gpus_per_actor: float | None,
    method: str,
    kernel: Path | None,
    kernel_size: int,
    blur_domain: str,
    refiner: str,
    model_name: str | None,
    weights: Path | None,
    tile: int | None,
    overlap: int,
    device: str,
    precision: str,
    backend: str,
    strength: float,
    compare: bool,
    overwrite: bool,
    save_kernel: bool,
    allow_huge: bool,
    quality: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Deblur photos and folders on a Ray cluster, writing into OUT as 'deblur IN -o OUT' would.

    \b
      deblur cluster shoot/ sharp/ -r                    a local Ray on this machine
      deblur cluster /data/in /data/out -r --address auto   an existing cluster

    Paths must be visible at the same place on every node (a shared file system). Existing outputs are
    skipped unless --overwrite. Exit codes: 0 all done, 1 some files failed, 2 usage error or Ray missing.
    """
    from deblurcli.batch import PlanError
    from deblurcli.cli.deblur import Reporter
    from deblurcli.cli.errors import setup_error
    from deblurcli.errors import DeblurError
    from deblurcli.ray import ClusterOptions, deblur_paths, import_ray

    reporter = Reporter(quiet=quiet, verbose=False, as_json=as_json)
    try:
        import_ray()
    except DeblurError as exc:
        reporter.general_error(str(exc))
        ctx.exit(2)
    started = time.perf_counter()
    try:
        outcomes = deblur_paths(
            inputs, output, recursive=recursive, method=method, model=model_name, weights=weights, kernel=kernel,
            kernel_size=kernel_size, blur_domain=blur_domain, refiner=refiner, device=device, precision=precision, backend=backend, tile=tile,
            overlap=overlap, strength=strength, compare=compare, save_kernel=save_kernel, overwrite=overwrite,
            allow_huge=allow_huge, quality=quality, address=address,
            cluster=ClusterOptions(actors, cpus_per_actor, gpus_per_actor),
        )
    except PlanError as exc:
        raise click.UsageError(str(exc)) from None
    except DeblurError as exc:
        line, code = setup_error(exc, model_label=str(weights) if weights is not None else model_name and f"--model {model_name}")
        reporter.general_error(line)
        ctx.exit(code)
    if not outcomes:
        reporter.note(f"no photos found in {', '.join(map(str, inputs))}")
        ctx.exit(0)
    for outcome in outcomes:
        if outcome.status == "failed":
            reporter.error(outcome.input, outcome.reason or "failed")
        for warning in outcome.warnings:
            reporter.warning(outcome.input, warning)
        reporter.result(outcome)
    reporter.summary(outcomes, 0, time.perf_counter() - started)
    ctx.exit(1 if any(o.status == "failed" for o in outcomes) else 0)
