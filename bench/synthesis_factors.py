"""Which part of realistic blur defeats the kernel path? The training synthesis, one factor at a time.

    python bench/synthesis_factors.py --photos 6 --threads 1

Each sharp validation photo (``.data/val/sharp``) is blurred by ``blur.synthesize`` with the same seed,
so the same camera-shake kernel (13-27 px), under a base configuration (uniform blur applied in sRGB, 1 %
Gaussian noise, nothing else) and then with one factor of the training synthesis switched on: blur in
linear light, spatially varying (rotation/zoom/tilt) blur, camera noise (Poisson-Gaussian in linear
light), JPEG; last, the training default itself. For each it prints the mean PSNR gain of

* ``kernel (sRGB)``: ``--method kernel --refiner none``, estimated and deconvolved in the photo's encoding,
  as deblurcli does;
* ``kernel (linear)``: the same on the photo decoded to linear light (the sRGB curve undone) and encoded
  back afterwards;
* ``auto`` (the default) and ``network``;

plus the estimator's mean confidence and how many photos auto sent to each method. The point is the
contrast between rows: which factor moves the kernel path, and whether the confidence follows it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--val", type=Path, default=Path(".data/val/sharp/sharp"), help="sharp photos (PNG)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=100)
    args = parser.parse_args()

    import torch
    from PIL import Image

    from deblurcli.blur import BlurConfig, linear_to_srgb, srgb_to_linear, synthesize
    from deblurcli.metrics import psnr as _psnr
    from deblurcli.session import Session

    torch.set_num_threads(args.threads)
    photos = sorted(args.val.glob("*.png"))[: args.photos]
    if not photos:
        sys.exit(f"no sharp photos in {args.val} (make them with scripts/make_valsets.py)")
    base = BlurConfig(
        min_extent=13, max_extent=27, nonuniform_prob=0, linear_prob=0, saturation_prob=0, noise_prob=1,
        shot_noise=(1e-12, 1e-12), read_noise=(1e-12, 1e-12), srgb_noise=(0.01, 0.01), jpeg_prob=0, sharp_prob=0,
    )
    variants = {
        "base: uniform, in sRGB, 1 % noise": base,
        "+ blur in linear light": dataclasses.replace(base, linear_prob=1.0),
        "+ spatially varying": dataclasses.replace(base, nonuniform_prob=1.0),
        "+ camera noise (Poisson-Gaussian)": dataclasses.replace(base, shot_noise=BlurConfig.shot_noise, read_noise=BlurConfig.read_noise, srgb_noise=(0.0, 0.015)),
        "+ JPEG (quality 60-95)": dataclasses.replace(base, jpeg_prob=1.0),
        "training default (no sharp samples)": BlurConfig(sharp_prob=0),
    }
    kernel = Session("kernel", device="cpu", refiner="none")
    auto, network = Session("auto", device="cpu"), Session("network", device="cpu")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {len(photos)} photos, {args.threads} thread(s)")
    print("| blur | input dB | kernel (sRGB) | kernel (linear) | confidence | auto | auto chose | network |")
    print("|---|---|---|---|---|---|---|---|")
    for name, cfg in variants.items():
        gains: dict[str, list[float]] = {"in": [], "srgb": [], "linear": [], "auto": [], "net": []}
        conf, chose = [], []
        for i, path in enumerate(photos):
            sharp_t = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), np.float32) / 255).permute(2, 0, 1)[None]
            blurry = synthesize(sharp_t, cfg, torch.Generator().manual_seed(args.seed + i))[0].permute(1, 2, 0).numpy().copy()
            sharp = sharp_t[0].permute(1, 2, 0).numpy()
            before = _psnr(blurry, sharp)
            gains["in"].append(before)
            r = kernel.deblur(blurry)
            gains["srgb"].append(_psnr(r.rgb, sharp) - before)
            conf.append(r.confidence or 0.0)
            lin = kernel.deblur(srgb_to_linear(torch.from_numpy(blurry)).numpy())
            back = linear_to_srgb(torch.from_numpy(np.clip(lin.rgb, 0, 1))).numpy()
            gains["linear"].append(_psnr(back, sharp) - before)
            a = auto.deblur(blurry)
            gains["auto"].append(_psnr(a.rgb, sharp) - before)
            chose.append(a.method)
            gains["net"].append(_psnr(network.run_network(blurry), sharp) - before)
        tally = ", ".join(f"{m} {chose.count(m)}" for m in ("kernel", "network", "unchanged") if chose.count(m))
        print(f"| {name} | {np.mean(gains['in']):.2f} | {np.mean(gains['srgb']):+.2f} | {np.mean(gains['linear']):+.2f} | "
              f"{np.mean(conf):.2f} | {np.mean(gains['auto']):+.2f} | {tally} | {np.mean(gains['net']):+.2f} |", flush=True)


if __name__ == "__main__":
    main()
