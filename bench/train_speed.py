"""Training throughput of ``deblur train`` (samples/s) for the default generator at 256x256 crops.

Measures the real training step (``Trainer.train_step``: crop gathering, on-device blur synthesis,
forward, losses, backward, optimiser, EMA) on the CPU and, when present, on the GPU, after a few warm-up
steps. It also times batch preparation alone (crops + synthesis) so the data side's share is visible.

    python bench/train_speed.py                      # default: nafnet-s, batch 8, 256², L1/Charbonnier only
    python bench/train_speed.py --lpips 0.1 --adv 0.005 --random-lpips   # the GAN recipe, offline
    python bench/train_speed.py --devices cuda --batch-size 32 --steps 50

Photos come from ``--photos`` (default ``../shared/data/train`` when it exists), else random textures are
generated in a temporary folder, which is enough for a speed figure.
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

from deblurcli.train.loop import Trainer, TrainOptions

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


def measure(device: str, photos: Path, args: argparse.Namespace) -> dict[str, float | str]:
    """samples/s of full training steps and of batch preparation alone on ``device``."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = TrainOptions(
            output=Path(tmp) / "run", synthetic=photos, arch=args.arch, batch_size=args.batch_size, crop=args.crop,
            lpips=args.lpips, adv=args.adv, device=device, precision=args.precision, max_steps=10**9,
            val_count=1, val_crop=64, lpips_pretrained=not args.random_lpips,
        )
        trainer = Trainer(opts, Console(file=io.StringIO()))
        trainer.t_start = time.monotonic()
        dev = trainer.device
        for _ in range(args.warmup):
            trainer.train_step()
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        sync(dev)
        step_s = (time.perf_counter() - t0) / args.steps
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.batch()
        sync(dev)
        batch_s = (time.perf_counter() - t0) / args.steps
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        return {
            "device": name, "precision": str(trainer.dtype).replace("torch.", ""),
            "samples_per_s": args.batch_size / step_s, "s_per_step": step_s, "data_share": batch_s / step_s,
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="nafnet", help="generator preset (default: nafnet = nafnet-s)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="timed steps per device")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--lpips", type=float, default=0.0)
    p.add_argument("--adv", type=float, default=0.0)
    p.add_argument("--random-lpips", action="store_true", help="LPIPS on a random backbone (no download needed)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS if DEFAULT_PHOTOS.is_dir() else None)
    p.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        photos = args.photos or make_textures(Path(tmp))
        print(f"{args.arch}, batch {args.batch_size} x {args.crop}², lpips {args.lpips}, adv {args.adv}, photos {photos}")
        for device in args.devices.split(","):
            r = measure(device, photos, args)
            print(
                f"{r['device']:<40} {r['precision']:<9} {r['samples_per_s']:8.2f} samples/s  "
                f"{r['s_per_step']:.3f} s/step  (crops + synthesis: {100 * float(r['data_share']):.0f}% of a step)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
