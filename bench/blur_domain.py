"""Deconvolve in the photo's encoding or in linear light? It depends on where the blur happened.

    python bench/blur_domain.py --photos 6 --threads 1

The LIVE1 photos (``../shared/data/val/live1``) are blurred by the held-out shake family of
``bench/camera_shake.py`` (same kernels per photo) twice: in sRGB, as that bench does, and in linear light
(decode, blur, encode), as a camera does; then 1 % Gaussian noise and 8 bits. Each is deconvolved

* with the true kernel, in sRGB and in linear light (``kernel.domain``: decoded, noise scaled by the curve's
  mean slope, encoded back), and
* blind, as ``deblur --method kernel --refiner none --blur-domain auto`` does: estimated in sRGB and in
  linear light, the domain chosen by ``domain.choose_domain`` (its ratio and choice are printed), then
  estimated and deconvolved in that domain,

and scored like ``bench/camera_shake.py`` (PSNR gain up to a ±5 px shift, border dropped). The mean gains
and how often each domain was chosen are printed last, per blur domain.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from camera_shake import blur_valid, score, stream_rng  # noqa: E402
from shake_kernels import SIZES, shake_kernel  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--val", type=Path, default=Path("../shared/data/val/live1"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    import torch
    from PIL import Image

    from deblurcli.kernel.deconv import Deconvolver
    from deblurcli.kernel.domain import from_linear, linear_noise, to_linear
    from deblurcli.metrics import quantize8
    from deblurcli.session import Session

    torch.set_num_threads(args.threads)
    photos = sorted(args.val.glob("*"))[: args.photos]
    if not photos:
        sys.exit(f"no photos in {args.val}")
    blind = Session("kernel", device="cpu", refiner="none", blur_domain="auto")
    columns = ("true srgb", "true linear", "blind, auto domain")
    print("| blur in | photo | input dB | " + " | ".join(columns) + " | ratio | chosen |")
    print("|---|---|---|" + "---|" * (len(columns) + 2))
    means, chosen = {}, {}
    for where in ("srgb", "linear"):
        gains: dict[str, list[float]] = {c: [] for c in columns}
        picks = []
        for path in photos:
            sharp = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
            rng = stream_rng(args.seed, path.name)
            kernel = shake_kernel(rng, int(rng.integers(SIZES[0], SIZES[1] + 1)))
            if where == "srgb":
                blurred = blur_valid(sharp, kernel)
            else:
                light = to_linear(torch.from_numpy(sharp)).numpy()
                blurred = from_linear(torch.from_numpy(blur_valid(light, kernel))).numpy()
            blurry = quantize8(blurred + rng.normal(0.0, 0.01, blurred.shape).astype(np.float32))
            r = (kernel.shape[0] - 1) // 2
            target = sharp[r:-r, r:-r]
            before = score(blurry, target)[0]
            y = torch.from_numpy(blurry).permute(2, 0, 1)[None]
            k = torch.from_numpy(kernel).float()
            outputs = {
                "true srgb": Deconvolver(k, noise=0.01)(y),
                "true linear": Deconvolver(k, noise=linear_noise(y, 0.01), domain="linear")(y),
            }
            row = {name: score(out[0].permute(1, 2, 0).numpy(), target)[0] - before for name, out in outputs.items()}
            result = blind.deblur(blurry)
            row["blind, auto domain"] = score(result.rgb, target)[0] - before
            note = next((n for n in result.notes if n.startswith("blurred in")), "")
            pick = "linear" if note.startswith("blurred in linear") else "srgb" if note else "-"
            ratio = note.split("ratio ")[1].split(" ")[0] if "ratio " in note else "-"
            picks.append(pick)
            for c in columns:
                gains[c].append(row[c])
            cells = " | ".join(f"{row[c]:+.2f}" for c in columns)
            print(f"| {where} | {path.stem} | {before:.2f} | {cells} | {ratio} | {pick} |", flush=True)
        means[where] = {c: float(np.mean(v)) for c, v in gains.items()}
        chosen[where] = f"srgb {picks.count('srgb')}, linear {picks.count('linear')}"
    for where, m in means.items():
        cells = " | ".join(f"**{m[c]:+.2f}**" for c in columns)
        print(f"| **{where}, mean** | {len(photos)} photos | | {cells} | | {chosen[where]} |")


if __name__ == "__main__":
    main()
