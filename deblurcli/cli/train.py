"""``deblur train``: fine-tune a generator (or train one from scratch) on pairs or on synthetic blur.

A thin Click layer: options become a :class:`deblurcli.train.options.TrainOptions` and the loop does the rest.
The run folder (``-o``) holds ``checkpoints/last.pt`` (resumable state), ``log.csv`` and the exported
EMA weights ``best.safetensors`` / ``last.safetensors``, which ``deblur --weights`` and ``deblur eval
--weights`` take directly.

The same command runs on several GPUs or machines when started by ``torchrun`` (one process per GPU);
only rank 0 writes to the run folder and reports, see :mod:`deblurcli.train.distributed`.
"""

from __future__ import annotations

from pathlib import Path

import click

from deblurcli.cli.options import device_option, model_option, precision_option, require_extra, threads_option
from deblurcli.models import registry  # torch-free: the --arch choices come from its presets
from deblurcli.train import loss_names  # torch-free too: the loss choices


@click.command("train")
@click.option("--pairs", "pairs", type=click.Path(path_type=Path, file_okay=False), help="Folder of blurry/sharp pairs (blur/ + sharp/, GoPro, or side-by-side).")
@click.option("--csv-pairs", type=click.Path(path_type=Path, dir_okay=False), help="CSV with blur,sharp columns instead of a folder layout.")
@click.option("--synthetic", type=click.Path(path_type=Path, file_okay=False), help="Folder of sharp photos: blurry inputs are synthesised on the fly.")
@click.option("--side-by-side", is_flag=True, help="Each pairs image holds sharp (left) | blurry (right) halves.")
@click.option("--val-pairs", type=click.Path(path_type=Path, file_okay=False), help="Validate on this pairs folder instead of a held-out 5% of the training data.")
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False), required=True, help="Run folder: checkpoints, log.csv, best/last.safetensors.")
@click.option("--arch", type=click.Choice(registry.generator_choices()), help="Train a fresh model of this preset; a bare architecture name is its default preset (nafnet = nafnet-s).")
@model_option("Start from this catalogue model (default: the default model, see 'deblur models').", dest="model")
@click.option("--weights", type=click.Path(path_type=Path, dir_okay=False, exists=True), help="Start from this weights file.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Crops per step (per process under torchrun).")
@click.option("--crop", type=click.IntRange(min=16), default=256, show_default=True, help="Training crop side in pixels.")
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many steps (default 10000 when no --max-minutes).")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), help="Stop after this much training time (counted across --resume).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate (default 1e-3 fresh, 1e-4 fine-tuning); cosine decay.")
@click.option("--loss", "pixel_loss", type=click.Choice(loss_names.PIXEL_LOSS_NAMES), default="charbonnier", show_default=True, help="Pixel loss.")
@click.option("--lpips", type=click.FloatRange(min=0), default=0.1, show_default=True, help="LPIPS weight (0 disables it, as --no-lpips does).")
@click.option("--no-lpips", is_flag=True, help="Train without LPIPS (no ImageNet backbone needed); the same switch as in 'deblur eval'.")
@click.option("--lpips-net", type=click.Choice(loss_names.LPIPS_NETS), default="alex", show_default=True, help="LPIPS backbone (torchvision ImageNet weights, cached in $TORCH_HOME).")
@click.option("--adv", type=click.FloatRange(min=0), default=0.005, show_default=True, help="Adversarial weight (0 disables the critic).")
@click.option("--gan", type=click.Choice(loss_names.GAN_LOSS_NAMES), default="wgan-gp", show_default=True, help="Adversarial loss.")
@click.option("--diffaug", default="color,translation,cutout", show_default=True, help="DiffAugment policy for the critic (comma list, or none).")
@click.option("--val-every", type=click.IntRange(min=1), default=1000, show_default=True, help="Validate (and export weights) every N steps.")
@click.option("--val-count", type=click.IntRange(min=1), default=32, show_default=True, help="At most this many validation images.")
@click.option("--val-crop", type=click.IntRange(min=0), default=256, show_default=True, help="Validate on centre crops of this side (0: whole images).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=1000, show_default=True, help="Checkpoint every N steps (and at least every 10 minutes).")
@click.option("--sharp-prob", type=click.FloatRange(min=0, max=1, max_open=True), help="Share of --synthetic samples left unblurred, so the model learns to leave sharp photos alone (default 0.1).")
@click.option("--dynamic-prob", type=click.FloatRange(min=0, max=1), default=0.0, show_default=True, help="Share of --synthetic samples given a moving object with its own blur (dynamic scenes).")
@click.option("--max-side", type=click.IntRange(min=0), help="Shrink training images to this longest side when loading (default 1024 for --synthetic, none for pairs; 0 = never).")
@device_option("Where training runs (auto: CUDA, else MPS, else CPU).")
@precision_option("auto: bf16 on GPUs that have it, else fp16; fp32 on CPUs, where bf16 training is not validated.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for initialisation, crops, synthetic blur and the validation split.")
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last checkpoint.")
@threads_option
def command(
    pairs: Path | None,
    csv_pairs: Path | None,
    synthetic: Path | None,
    side_by_side: bool,
    val_pairs: Path | None,
    output: Path,
    arch: str | None,
    model: str | None,
    weights: Path | None,
    batch_size: int,
    crop: int,
    max_steps: int | None,
    max_minutes: float | None,
    lr: float | None,
    pixel_loss: str,
    lpips: float,
    no_lpips: bool,
    lpips_net: str,
    adv: float,
    gan: str,
    diffaug: str,
    val_every: int,
    val_count: int,
    val_crop: int,
    checkpoint_every: int,
    sharp_prob: float | None,
    dynamic_prob: float,
    max_side: int | None,
    device: str,
    precision: str,
    seed: int,
    resume: bool,
    threads: int | None,
) -> None:
    """Train a deblurring generator; weights land in OUTPUT/best.safetensors and OUTPUT/last.safetensors.

    \b
      deblur train --pairs mydata/ -o runs/mine                 fine-tune the default model
      deblur train --synthetic photos/ --arch nafnet -o runs/s  from scratch on synthetic blur
      deblur train ... -o runs/s --resume                       continue after a stop or a crash
      torchrun --nproc_per_node=4 -m deblurcli train ...        4 GPUs (--batch-size is per GPU)
      deblur train ... --threads 1                              one core, the others left to other work
    Ctrl-C stops after the current step and writes a checkpoint.
    """
    from rich.console import Console

    from deblurcli.cli.errors import setup_error
    from deblurcli.errors import DeblurError
    from deblurcli.train import distributed
    from deblurcli.train.diffaug import parse_policy
    from deblurcli.train.loop import train
    from deblurcli.train.options import TrainOptions

    if side_by_side and csv_pairs is not None:
        raise click.UsageError("--side-by-side describes a folder of images; a CSV lists separate files")
    try:
        parse_policy(diffaug)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--diffaug") from None
    if no_lpips:
        lpips = 0.0
    require_extra("train", "piq", *(("lpips",) if lpips > 0 else ()))
    opts = TrainOptions(
        output=output, synthetic=synthetic, pairs=pairs, pairs_csv=csv_pairs, side_by_side=side_by_side,
        val_pairs=val_pairs, arch=arch, model=model, weights=weights, batch_size=batch_size, crop=crop,
        max_steps=max_steps, max_minutes=max_minutes, lr=lr, pixel_loss=pixel_loss, lpips=lpips,
        lpips_net=lpips_net, adv=adv, gan=gan, diffaug=diffaug, val_every=val_every, val_count=val_count, val_crop=val_crop,
        checkpoint_every=checkpoint_every, sharp_prob=sharp_prob, dynamic_prob=dynamic_prob, max_side=max_side,
        device=device, precision=precision, seed=seed, resume=resume,
    )
    if threads is not None:
        from deblurcli.devices import set_threads

        set_threads(threads)
    console = Console(stderr=True, soft_wrap=True)  # long progress lines stay whole in log files
    try:
        result = train(opts, console)
    except DeblurError as exc:
        rank = distributed.env_rank()
        line, code = setup_error(exc)
        if rank == 0:
            click.echo(f"error: {line}", err=True)
        elif not isinstance(exc, distributed.AllRanksError):  # rank 0 reports the errors every rank shares
            click.echo(f"error: [rank {rank}] {line}", err=True)
        raise SystemExit(code) from None
    if result.stopped != "budget":
        raise SystemExit(130 if result.stopped == "interrupted" else 143)
