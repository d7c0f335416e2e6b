"""Throughput of the motion-blur synthesis (``deblurcli.blur.synthesize``), in samples per second.

The synthesis runs inside the training loop, so it must cost far less than a training step. Prints one
line per (device, batch, size) and a per-stage breakdown for the default configuration::

    python bench/blur_speed.py                 # CPU, and CUDA when present
    python bench/blur_speed.py --batch 16 --size 256 --repeats 5
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable

import torch

from deblurcli.blur import (
    BlurConfig,
    apply_kernels,
    random_homography_paths,
    random_kernels,
    synthesize,
    warp_average,
)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Mean seconds per call after one warm-up call, synchronising CUDA so the time is the device's."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def bench(device: torch.device, batch: int, size: int, repeats: int) -> None:
    gen = torch.Generator(device=device).manual_seed(0)
    sharp = torch.rand(batch, 3, size, size, device=device, generator=gen)
    cfg = BlurConfig()
    no_jpeg = dataclasses.replace(cfg, jpeg_prob=0.0)
    rows = {
        "synthesize (default)": lambda: synthesize(sharp, cfg, gen),
        "synthesize (no JPEG)": lambda: synthesize(sharp, no_jpeg, gen),
    }
    kernels = random_kernels(batch, cfg, gen)
    paths = random_homography_paths(batch, cfg, gen, size, size)
    stages = {
        "  random_kernels": lambda: random_kernels(batch, cfg, gen),
        "  apply_kernels (fft)": lambda: apply_kernels(sharp, kernels),
        "  warp_average (all samples)": lambda: warp_average(sharp, paths),
    }
    print(f"{device.type}  batch {batch}  {size}x{size}  threads {torch.get_num_threads()}")
    for name, fn in {**rows, **stages}.items():
        sec = timed(fn, device, repeats)
        print(f"{name:30s} {sec * 1000:8.1f} ms/batch  {batch / sec:8.1f} samples/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", action="append", help="cpu, cuda (default: cpu and cuda if present)")
    args = parser.parse_args()
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    for name in devices:
        bench(torch.device(name), args.batch, args.size, args.repeats)
        if name == "cpu":
            bench(torch.device(name), 8, 128, args.repeats)  # the NAFNet CPU training step's shape


if __name__ == "__main__":
    main()
