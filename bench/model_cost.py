"""Parameters, MACs per megapixel and measured CPU throughput of every registered architecture preset.

    python bench/model_cost.py                      # all presets, 256x256, 3 timed runs each
    python bench/model_cost.py --size 512 --only nafnet-s,dgf-light --json

MACs are counted with forward hooks on every Conv2d (output elements x input channels per group x kernel
area), which is where all these networks spend their compute; the element-wise work of NAFNet's gates and
norms is left out, as in the papers' GMAC figures. Throughput is from the fastest of ``--reps`` single-image
forward passes after one warm-up, on the CPU, in fp32, with ``torch.inference_mode``, in the layout the engine
uses (channels_last; ``--layout nchw`` for the plain one): the minimum, because on a shared machine every other
run only adds other processes' time. PatchGAN is timed on its 6-channel (blurry, candidate) input.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from deblurcli.models.registry import PRESETS, build, preset


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of the convolutions in one forward pass of ``x`` (per batch, not per image)."""
    total = 0

    def hook(module: nn.Conv2d, _inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += out.numel() * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return total


def measure(name: str, size: int, reps: int, layout: str = "channels_last") -> dict[str, float | int | str]:
    """Cost figures of preset ``name`` on a ``size x size`` input."""
    arch, config = preset(name)
    torch.manual_seed(0)
    model = build(arch, config).eval()
    channels = config.get("in_channels", 3)
    x = torch.rand(1, channels, size, size)
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    megapixels = size * size / 1e6
    macs = count_macs(model, x)  # also the warm-up run
    times = []
    with torch.inference_mode():
        for _ in range(reps):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    seconds = min(times)
    return {
        "name": name,
        "arch": arch,
        "params": sum(p.numel() for p in model.parameters()),
        "gmac_per_megapixel": macs / megapixels / 1e9,
        "gmac_per_256": macs / megapixels / 1e9 * 256 * 256 / 1e6,
        "size": size,
        "seconds": seconds,
        "megapixels_per_second": megapixels / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="square input side in pixels (default 256)")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per model (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--only", default=None, help="comma-separated preset names (default: all)")
    parser.add_argument("--json", action="store_true", help="one JSON object per model")
    parser.add_argument("--layout", choices=["channels_last", "nchw"], default="channels_last", help="memory layout")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.only.split(",") if args.only else list(PRESETS)
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        parser.error(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    if not args.json:
        print(f"CPU, {torch.get_num_threads()} threads, fp32, {args.layout}, {args.size}x{args.size}, best of {args.reps}")
        print(f"{'model':<12} {'arch':<9} {'params':>12} {'GMAC/MP':>9} {'GMAC/256²':>10} {'MP/s':>8}")
    for name in names:
        row = measure(name, args.size, args.reps, args.layout)
        if args.json:
            print(json.dumps(row))
        else:
            print(
                f"{row['name']:<12} {row['arch']:<9} {row['params']:>12,} {row['gmac_per_megapixel']:>9.1f} "
                f"{row['gmac_per_256']:>10.1f} {row['megapixels_per_second']:>8.3f}"
            )


if __name__ == "__main__":
    main()
