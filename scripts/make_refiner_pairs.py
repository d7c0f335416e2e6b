"""Training pairs for the kernel path's refiner: (deconvolved photo, sharp photo), for ``deblur train --pairs``.

    python scripts/make_refiner_pairs.py ../shared/data/train -o runs/refiner-pairs
    python scripts/make_refiner_pairs.py ../shared/data/train -o runs/refiner-pairs --variants 2 --max-side 512

The refiner is a network that takes what the kernel method hands back — a deconvolution with the ringing,
amplified noise and small kernel errors it leaves — and returns the sharp photo. It must learn on exactly
that input, so each pair is made the way ``deblur --method kernel`` would make it:

- a sharp photo (shrunk so its longest side is ``--max-side``), blurred by a **training-family** kernel
  (:func:`deblurcli.blur.random_kernels`: 5-29 px paths; never ``bench/shake_kernels.py``, the judge's
  family) in sRGB or linear light, over the photo's valid region only (no synthesised border), then
  Gaussian noise of 0-1.5 % and 8-bit quantisation;
- the deconvolution the Session hands the refiner (``Session("kernel", refiner=None)``: the blur domain judged
  per photo, the prior on luminance and two opponent axes, the noise measured on the photo), with the
  **blind estimate** for most pairs, otherwise the **true kernel perturbed** (rotated, scaled, shifted,
  noised) to cover estimates that are close but not right. A blind pair whose estimate the sharp-photo gate
  passes takes a perturbed kernel instead: auto never deconvolves such a photo, so the refiner never sees it;
- the sharp photo aligned to the deconvolution (an estimated kernel may sit a few pixels off-centre, and a
  pixel loss on misaligned pairs teaches blur): the best integer shift within ±6 px, both cropped to the overlap.

``pairs.csv`` beside ``blur/`` and ``sharp/`` lists each pair's kernel source, confidence and PSNRs, so the
set's difficulty can be read before training. Deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deblurcli.blur import BlurConfig, apply_kernels, linear_to_srgb, random_kernels, srgb_to_linear  # noqa: E402
from deblurcli.errors import PhotoError  # noqa: E402
from deblurcli.photo import SUPPORTED_SUFFIXES, read_photo  # noqa: E402
from deblurcli.session import Session  # noqa: E402

#: Training-family kernels for the refiner: paths of 5-29 px on a 35 px canvas (the default search size).
KERNELS = BlurConfig(kernel_size=35, min_extent=5.0, max_extent=29.0)
#: Share of pairs deconvolved with the blind estimate (the rest: the true kernel, perturbed).
ESTIMATED_SHARE = 0.6
#: The blind kernel method exactly as ``deblur --method kernel --refiner none`` runs it: estimate, blur domain
#: judged per photo (sRGB or linear light), deconvolution with the noise measured on the photo.
BLIND = Session("kernel", refiner=None)
#: Largest integer shift searched when aligning the sharp photo to the deconvolution.
ALIGN = 6


def photo_paths(root: Path) -> list[Path]:
    """Every readable photo under ``root`` (links followed only inside it), sorted for determinism."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in SUPPORTED_SUFFIXES and p.is_file())


def shrink(rgb: torch.Tensor, max_side: int) -> torch.Tensor:
    """``C x H x W`` shrunk (antialiased) so its longest side is at most ``max_side``."""
    h, w = rgb.shape[-2:]
    scale = max_side / max(h, w)
    if scale >= 1:
        return rgb
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(rgb[None], size=size, mode="bicubic", antialias=True, align_corners=False)[0].clamp(0, 1)


def perturb(kernel: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The true kernel made slightly wrong, as a good estimate is: rotated ±5°, scaled ±7 %, shifted up to
    1 px, with up to 10 % of its peak as positive noise on its support's neighbourhood."""
    u = torch.rand(5, generator=gen)
    angle = math.radians(10 * (u[0].item() - 0.5))
    scale = 1 + 0.14 * (u[1].item() - 0.5)
    shift = (2 * u[2:4] - 1) * (2 / kernel.shape[-1])
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[cos, -sin, shift[0].item()], [sin, cos, shift[1].item()]], dtype=torch.float32)
    grid = F.affine_grid(theta[None], [1, 1, *kernel.shape[-2:]], align_corners=False)
    warped = F.grid_sample(kernel[None, None], grid, align_corners=False)[0, 0].clamp(min=0)
    near = F.max_pool2d(warped[None, None], 5, stride=1, padding=2)[0, 0] > 0
    noise = torch.rand(warped.shape, generator=gen) * near * warped.max() * 0.1 * u[4].item()
    out = warped + noise
    return out / out.sum()


def blur_valid(sharp: torch.Tensor, kernel: torch.Tensor, linear: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(blurred, target)``: ``sharp`` convolved with ``kernel`` over its valid region, and the sharp region
    each blurred pixel is centred on (the same size)."""
    r = kernel.shape[-1] // 2
    x = srgb_to_linear(sharp) if linear else sharp
    y = apply_kernels(x[None], kernel[None, None], method="fft")[0]
    y = linear_to_srgb(y.clamp(0, 1)) if linear else y
    crop = (..., slice(r, y.shape[-2] - r), slice(r, y.shape[-1] - r))
    return y[crop], sharp[crop]


def align(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Both cropped to the overlap at the integer shift (±ALIGN px) where the output best matches the target,
    and that PSNR."""
    h, w = output.shape[-2:]
    core = output[:, ALIGN : h - ALIGN, ALIGN : w - ALIGN]
    best = (-1.0, 0, 0)
    for dy in range(-ALIGN, ALIGN + 1):
        for dx in range(-ALIGN, ALIGN + 1):
            ref = target[:, ALIGN + dy : h - ALIGN + dy, ALIGN + dx : w - ALIGN + dx]
            mse = float(((core - ref) ** 2).mean())
            psnr = 10 * math.log10(1 / max(mse, 1e-10))
            if psnr > best[0]:
                best = (psnr, dy, dx)
    psnr, dy, dx = best
    return core, target[:, ALIGN + dy : h - ALIGN + dy, ALIGN + dx : w - ALIGN + dx], psnr


def save_png(path: Path, chw: torch.Tensor) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = (chw.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    Image.fromarray(array).save(path)


def make_pair(sharp: torch.Tensor, name: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, object]]:
    """One (deconvolved, aligned sharp) pair and its figures, seeded by (``seed``, ``name``)."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{name}".encode()))
    kernel = random_kernels(1, KERNELS, gen)[0, 0]
    u = torch.rand(3, generator=gen)
    blurred, target = blur_valid(sharp, kernel, linear=bool(u[0] < 0.5))
    sigma = 0.015 * float(u[1])
    noisy = blurred + sigma * torch.randn(blurred.shape, generator=gen)
    y = torch.round(noisy.clamp(0, 1) * 255) / 255
    rgb = np.ascontiguousarray(y.permute(1, 2, 0).numpy())
    result = BLIND.deblur(rgb) if float(u[2]) < ESTIMATED_SHARE else None
    if result is not None and result.method == "kernel":
        source, confidence, size = "estimated", float(result.confidence), int(result.kernel.shape[-1])
    else:  # drawn perturbed, or the gate called the blurred photo sharp (auto would never deconvolve it)
        used = perturb(kernel, gen)
        if used.shape[-1] % 2 == 0:  # an even support crop: pad to odd, keeping the centre
            used = F.pad(used, (0, 1, 0, 1))
        result = Session("kernel", kernel=used, refiner=None).deblur(rgb)
        source, confidence, size = "perturbed", float("nan"), int(used.shape[-1])
    out = torch.from_numpy(result.rgb).permute(2, 0, 1)
    out_c, target_c, aligned = align(out, target)
    _, target_in, blurry = align(y, target)
    info = {"name": name, "source": source, "confidence": round(confidence, 3), "true_size": int(kernel.shape[-1]),
            "kernel_size": size, "noise": round(sigma, 4), "psnr_blurry": round(blurry, 2),
            "psnr_deconvolved": round(aligned, 2)}
    return out_c, target_c, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", type=Path, help="folder of sharp photos (searched recursively)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="pairs folder to write (blur/, sharp/)")
    parser.add_argument("--variants", type=int, default=2, help="pairs per photo, each with its own blur")
    parser.add_argument("--max-side", type=int, default=512, help="shrink photos to this longest side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="at most this many photos")
    args = parser.parse_args(argv)
    paths = photo_paths(args.photos)[: args.limit]
    if not paths:
        print(f"no photos under {args.photos}", file=sys.stderr)
        return 1
    rows = []
    start = time.perf_counter()
    for i, path in enumerate(paths):
        try:
            sharp = torch.from_numpy(read_photo(path).rgb).permute(2, 0, 1).float()
        except PhotoError as exc:
            print(f"skipped {path}: {exc}", file=sys.stderr)
            continue
        sharp = shrink(sharp, args.max_side)
        for v in range(args.variants):
            name = f"{path.stem}_{v}"
            out, target, info = make_pair(sharp, name, args.seed)
            save_png(args.output / "blur" / f"{name}.png", out)
            save_png(args.output / "sharp" / f"{name}.png", target)
            rows.append(info)
        if (i + 1) % 10 == 0:
            gain = np.mean([r["psnr_deconvolved"] - r["psnr_blurry"] for r in rows])
            print(f"{i + 1}/{len(paths)} photos, {time.perf_counter() - start:.0f} s, mean deconvolution gain {gain:+.2f} dB",
                  flush=True)
    with open(args.output / "pairs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for source in ("estimated", "perturbed"):
        part = [r["psnr_deconvolved"] - r["psnr_blurry"] for r in rows if r["source"] == source]
        if part:
            print(f"{source}: {len(part)} pairs, deconvolution gain mean {np.mean(part):+.2f} dB, "
                  f"median {np.median(part):+.2f}, worst {min(part):+.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
