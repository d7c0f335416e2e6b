"""Training throughput of ``deblur train`` (samples/s) for the default generator.

Measures the real training step (``Trainer.train_step``: crop gathering, on-device blur synthesis,
forward, losses, backward, optimiser, EMA) after a few warm-up steps, and times batch preparation alone
(crops + synthesis) so the data side's share is visible. ``--variants`` compares step settings in one
process, interleaved step by step, so that a machine shared with other jobs slows them alike and the
ratios stay meaningful:

    python bench/train_speed.py --batch-size 6 --crop 160                     # today's CPU recipe
    python bench/train_speed.py --batch-size 8 --crop 128 --variants fp32,fp32-nchw,bf16
    python bench/train_speed.py --lpips 0.1 --adv 0.005 --random-lpips        # the GAN recipe, offline
    python bench/train_speed.py --devices cuda --batch-size 32 --steps 50

A variant is ``auto`` (what ``deblur train`` does), ``fp32``, ``bf16`` or ``fp16``, optionally with
``-nchw`` (channels-first memory layout instead of the trainer's channels-last) and ``-tN`` (N torch
threads), e.g. ``auto-t1``. Photos come from
``--photos`` (default ``../shared/data/train`` when it exists), else random textures are generated in a
temporary folder, which is enough for a speed figure.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console

from deblurcli.devices import resolve_precision
from deblurcli.train.loop import Trainer
from deblurcli.train.options import TrainOptions

DEFAULT_PHOTOS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "train"


def make_textures(folder: Path, count: int = 16, size: tuple[int, int] = (512, 768)) -> Path:
    """Random smooth textures: enough stand-in photos for a throughput measurement."""
    rng = np.random.default_rng(0)
    for i in range(count):
        small = (rng.random((size[0] // 16, size[1] // 16, 3)) * 255).astype(np.uint8)
        Image.fromarray(small).resize((size[1], size[0]), Image.Resampling.BICUBIC).save(folder / f"t{i}.png")
    return folder


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_variant(trainer: Trainer, variant: str) -> None:
    """Give a fresh trainer a variant's autocast dtype and memory layout."""
    precision, *flags = variant.split("-")
    if precision != "auto":
        trainer.dtype = trainer.recipe.dtype = resolve_precision(precision, trainer.device)
    if "nchw" in flags:
        trainer.channels_last = False
        trainer.generator.to(memory_format=torch.contiguous_format)
        if trainer.critic is not None:
            trainer.critic.to(memory_format=torch.contiguous_format)


def threads_of(variant: str, default: int) -> int:
    found = [int(f[1:]) for f in variant.split("-")[1:] if f.startswith("t") and f[1:].isdigit()]
    return found[0] if found else default


def measure(device: str, photos: Path, args: argparse.Namespace) -> list[dict[str, float | str]]:
    """samples/s of full training steps per variant and of batch preparation alone on ``device``.

    Each variant gets its own trainer (model and optimiser state in its own layout), and the variants
    take turns step by step."""
    variants = args.variants.split(",")
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for k, variant in enumerate(variants):
            opts = TrainOptions(
                output=Path(tmp) / f"run{k}", synthetic=photos, arch=args.arch, batch_size=args.batch_size,
                crop=args.crop, lpips=args.lpips, adv=args.adv, device=device, max_steps=10**9, warmup_steps=0,
                val_count=1, val_crop=64, lpips_pretrained=not args.random_lpips, max_side=args.max_side,
            )
            trainers[variant] = trainer = Trainer(opts, Console(file=io.StringIO()))
            set_variant(trainer, variant)
            torch.set_num_threads(threads_of(variant, threads))
            for _ in range(args.warmup):
                trainer.train_step()
        dev = next(iter(trainers.values())).device
        seconds = dict.fromkeys(variants, 0.0)
        for _ in range(args.steps):
            for variant, trainer in trainers.items():
                torch.set_num_threads(threads_of(variant, threads))
                sync(dev)
                t0 = time.perf_counter()
                trainer.train_step()
                sync(dev)
                seconds[variant] += time.perf_counter() - t0
        torch.set_num_threads(threads)
        first = next(iter(trainers.values()))
        t0 = time.perf_counter()
        for _ in range(args.steps):
            first.batch()
        sync(dev)
        batch_s = (time.perf_counter() - t0) / args.steps
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
        rows: list[dict[str, float | str]] = []
        for variant, trainer in trainers.items():
            step_s = seconds[variant] / args.steps
            layout = "channels-last" if trainer.channels_last else "nchw"
            setting = f"{str(trainer.dtype).replace('torch.', '')}, {layout}, {threads_of(variant, threads)} threads"
            rows.append({
                "device": name, "variant": f"{variant} ({setting})",
                "samples_per_s": args.batch_size / step_s, "s_per_step": step_s, "data_share": batch_s / step_s,
            })
        return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="nafnet", help="generator preset (default: nafnet = nafnet-s)")
    p.add_argument("--batch-size", type=int, default=6)
    p.add_argument("--crop", type=int, default=160)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant and device")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--lpips", type=float, default=0.0)
    p.add_argument("--adv", type=float, default=0.0)
    p.add_argument("--random-lpips", action="store_true", help="LPIPS on a random backbone (no download needed)")
    p.add_argument("--variants", default="auto", help="comma list, e.g. auto,fp32-nchw (see the docstring)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--max-side", type=int, default=512, help="shrink photos to this side (loading time only)")
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS if DEFAULT_PHOTOS.is_dir() else None)
    p.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        photos = args.photos or make_textures(Path(tmp))
        print(f"{args.arch}, batch {args.batch_size} x {args.crop}², lpips {args.lpips}, adv {args.adv}, photos {photos}")
        for device in args.devices.split(","):
            for r in measure(device, photos, args):
                print(
                    f"{r['device']:<24} {r['variant']:<44} {r['samples_per_s']:7.2f} samples/s  "
                    f"{r['s_per_step']:.3f} s/step  (crops + synthesis: {100 * float(r['data_share']):.0f}% of a step)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
