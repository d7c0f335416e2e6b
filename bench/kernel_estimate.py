"""Blind kernel estimation quality and speed on training photos blurred by our own kernel families.

For each photo and family: blur the sharp photo in sRGB by a 13-27 px kernel ('valid' region), add 1 %
Gaussian noise, quantise to 8 bits; estimate the kernel from the luminance; report the kernel's
normalised cross-correlation with the true one (up to shift), and the PSNR gain over the blurry input
after non-blind deconvolution with the estimate and with the true kernel (PSNR up to a ±5 px shift on
the sharp photo minus an 8 px border). Also: the do-no-harm gate on the sharp photos and on mild 3-7 px
blur, and seconds per estimate. Families: ``train`` (``deblurcli.blur.random_kernels``) and
``heldout`` (``deblurcli.valsets.heldout_kernels``). Needs ../shared/data/train.

    nice -n 5 python bench/kernel_estimate.py --photos 12 --threads 1 --gate   # quality + gate
    nice -n 5 python bench/kernel_estimate.py --speed --threads 2               # 1 MP and 12 MP timing

Seconds per estimate are CPU seconds (``time.process_time``) because the machine is shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deblurcli.blur import BlurConfig, apply_kernels, random_kernels
from deblurcli.kernel.confidence import kernel_ncc, near_delta_mass
from deblurcli.kernel.deconv import deconvolve
from deblurcli.kernel import estimate
from deblurcli.metrics import quantize8, shift_tolerant_psnr
from deblurcli.valsets import heldout_kernels

TRAIN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "train"
BORDER = 8


def photos(count: int) -> list[tuple[str, np.ndarray]]:
    """Every few bsds500 photos plus some free photos (resized to a 768 px long side), sRGB H x W x 3."""
    bsds = sorted((TRAIN / "bsds500").glob("*.jpg"))
    free = sorted(p for p in (TRAIN / "free_photos").iterdir() if p.suffix.lower() in {".jpg", ".png"})
    n_free = count // 3
    picks = bsds[:: max(1, len(bsds) // (count - n_free))][: count - n_free] + free[:: max(1, len(free) // max(1, n_free))][:n_free]
    out = []
    for p in picks:
        im = Image.open(p).convert("RGB")
        if max(im.size) > 768:
            s = 768 / max(im.size)
            im = im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS)
        out.append((p.stem[:24], np.asarray(im, dtype=np.float32) / 255))
    return out


def grey_of(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))


def blur(rgb: np.ndarray, kernel: torch.Tensor, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(blurry, sharp) 'valid' crops: blurred in sRGB, 1 % noise, 8 bits."""
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    r = kernel.shape[-1] // 2
    out = apply_kernels(x, kernel[None, None].float())[0].permute(1, 2, 0).numpy()
    out = out[r:-r, r:-r] + rng.normal(0, 0.01, out[r:-r, r:-r].shape).astype(np.float32)
    return quantize8(out), rgb[r:-r, r:-r]


def score(out: np.ndarray, sharp: np.ndarray) -> float:
    b = BORDER
    return shift_tolerant_psnr(quantize8(out)[b:-b, b:-b], sharp[b:-b, b:-b], max_shift=5)


def deblur(blurry: np.ndarray, kernel: torch.Tensor) -> np.ndarray:
    img = torch.from_numpy(blurry).permute(2, 0, 1)
    return deconvolve(img, kernel.float()).permute(1, 2, 0).numpy()


def true_kernels(family: str, n: int, seed: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    sizes = [int(v) for v in rng.integers(13, 28, n)]
    if family == "heldout":
        return [torch.from_numpy(k) for k in heldout_kernels(rng, sizes)]
    cfg = BlurConfig(kernel_size=33, min_extent=13, max_extent=27)
    return list(random_kernels(n, cfg, torch.Generator().manual_seed(seed), "cpu")[:, 0])


def run_family(family: str, pics: list[tuple[str, np.ndarray]], seed: int, only: set[int]) -> list[dict[str, float]]:
    rows = []
    rng = np.random.default_rng(seed + 1)
    for index, ((name, rgb), kt) in enumerate(zip(pics, true_kernels(family, len(pics), seed))):
        blurry, sharp = blur(rgb, kt, rng)  # drawn even when skipped, so --only keeps the others' noise
        if index not in only:
            continue
        t0 = time.process_time()  # CPU seconds: the machine is shared, wall time says little
        est = estimate.estimate_kernel(grey_of(blurry))
        secs = time.process_time() - t0
        base = score(blurry, sharp)
        gain_true = score(deblur(blurry, kt), sharp) - base
        gain_est = 0.0 if est.near_delta else score(deblur(blurry, est.kernel), sharp) - base
        row = dict(ncc=kernel_ncc(est.kernel, kt), gain=gain_est, ceiling=gain_true, conf=est.confidence,
                   near=float(est.near_delta), secs=secs, **{k: est.details.get(k, math.nan) for k in
                   ("agreement", "support_share", "residual_ratio", "near_delta_mass", "stopband_noise_ratio",
                    "stopband_ratio")})
        rows.append(row)
        print(f"{family:8s} {name:24s} ncc {row['ncc']:.2f} gain {gain_est:+6.2f} (true {gain_true:+6.2f}) "
              f"conf {est.confidence:.2f} agr {row['agreement']:.2f} share {row['support_share']:.2f} "
              f"res {row['residual_ratio']:.1f} stop {row['stopband_noise_ratio']:.1f}/{row['stopband_ratio']:.1f} nd {row['near_delta_mass']:.2f} "
              f"{secs:.1f}s", flush=True)
    return rows


def summarise(family: str, rows: list[dict[str, float]]) -> None:
    g = np.array([r["gain"] for r in rows])
    c = np.array([r["conf"] for r in rows])
    used = np.where(c >= 0.5, g, 0.0)
    print(f"== {family}: ncc {np.mean([r['ncc'] for r in rows]):.3f}, gain {g.mean():+.2f} dB "
          f"(true kernel {np.mean([r['ceiling'] for r in rows]):+.2f}), failures {int((g < 0).sum())}/{len(g)}, "
          f"worst {g.min():+.2f}; gated by conf>=0.5: {used.mean():+.2f} dB, kept {int((c >= 0.5).sum())}, "
          f"losses kept {int(((c >= 0.5) & (g < 0)).sum())}; CPU s/estimate {np.mean([r['secs'] for r in rows]):.2f}")


def gate_checks(pics: list[tuple[str, np.ndarray]]) -> None:
    """The do-no-harm gate: near-delta mass on sharp photos (+1 % noise) and on 3, 5, 7 px straight blurs.

    For the sharp photos also the PSNR of the photo deconvolved with the estimate against the photo
    itself (what a user loses if the gate does not fire and confidence lets the kernel through).
    """
    rng = np.random.default_rng(7)
    for name, rgb in pics:
        noisy = quantize8(rgb + rng.normal(0, 0.01, rgb.shape).astype(np.float32))
        est = estimate.estimate_kernel(grey_of(noisy))
        kept = math.inf if est.near_delta else score(deblur(noisy, est.kernel), noisy)
        masses = []
        for length in (3, 5, 7):
            k = torch.zeros(length, length)
            k[length // 2] = 1.0 / length
            masses.append(near_delta_mass(estimate.estimate_kernel(grey_of(blur(rgb, k, rng)[0])).kernel))
        print(f"gate {name:24s} sharp {near_delta_mass(est.kernel):.2f} (conf {est.confidence:.2f}, "
              f"stop {est.details.get('stopband_noise_ratio', math.nan):.1f}/{est.details.get('stopband_ratio', math.nan):.1f}, "
              f"deconvolved {kept:.1f} dB)  3px {masses[0]:.2f}  5px {masses[1]:.2f}  7px {masses[2]:.2f}",
              flush=True)


def speed(pics: list[tuple[str, np.ndarray]]) -> None:
    """Wall and CPU seconds of one estimate on a 1 MP and a 12 MP photo (an upscaled blurred photo)."""
    rng = np.random.default_rng(3)
    blurry = blur(pics[-1][1], true_kernels("heldout", 1, 5)[0], rng)[0]
    grey = grey_of(blurry)[None, None]
    for label, size in (("1 MP", (864, 1152)), ("12 MP", (3000, 4000))):
        big = torch.nn.functional.interpolate(grey, size=size, mode="bilinear", align_corners=False)[0, 0]
        t0, c0 = time.perf_counter(), time.process_time()
        estimate.estimate_kernel(big)
        print(f"speed {label}: {time.perf_counter() - t0:.2f} s wall, {time.process_time() - c0:.2f} s CPU "
              f"({torch.get_num_threads()} threads)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--families", default="train,heldout")
    ap.add_argument("--gate", action="store_true", help="also run the do-no-harm gate checks")
    ap.add_argument("--speed", action="store_true", help="only time one estimate on a 1 MP and a 12 MP photo")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="override an estimator setting, e.g. gamma=200")
    ap.add_argument("--only", default="", help="comma-separated photo indices to run")
    args = ap.parse_args()
    for item in args.set:
        key, value = item.split("=")
        estimate.SETTINGS = dataclasses.replace(estimate.SETTINGS, **{key: type(getattr(estimate.SETTINGS, key))(value)})
    torch.set_num_threads(args.threads)
    pics = photos(args.photos)
    if args.speed:
        speed(pics)
        return
    only = {int(i) for i in args.only.split(",")} if args.only else set(range(len(pics)))
    for fam in filter(None, args.families.split(",")):
        summarise(fam, run_family(fam, pics, args.seed, only))
    if args.gate:
        gate_checks(pics[:6])


if __name__ == "__main__":
    main()
