"""Non-blind deconvolution (``deblurcli.kernel.deconv``) with the TRUE kernel: quality ceiling and speed.

The protocol of reference/KERNEL_PATH.md: centre crops of the training photos, blurred in sRGB by camera-shake
kernels of 13-27 px (``deblurcli.blur.random_kernels`` and ``deblurcli.valsets.heldout_kernels``) as a *valid*
convolution (the scene continues beyond the frame, so the boundary is unknown, as in a real photo), Gaussian
noise, 8-bit rounding; scored with PSNR up to a +-5 px shift on the sharp crop minus an 8 px border.
Gains are PSNR(deconvolved) - PSNR(blurry). Each study prints its figures::

    python bench/deconv_speed.py gain --noise 0.005 0.01 0.02 0.03 --mult 0.5 1 2   # fits weight_for_noise
    python bench/deconv_speed.py prior        # the gradient prior on opponent colour axes vs per channel
    python bench/deconv_speed.py space        # blur in sRGB / linear light x deconvolve in sRGB / linear
    python bench/deconv_speed.py saturation   # lamps brighter than white: data mask on / off
    python bench/deconv_speed.py tiled        # engine whole vs tiled (agreement, dB) and tile margins
    python bench/deconv_speed.py speed --threads 2

Needs ../shared/data/train (skips with a message when it is absent).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deblurcli.blur import BlurConfig, apply_kernels, linear_to_srgb, random_kernels, srgb_to_linear
from deblurcli.engine import deblur_array, prepare_model
from deblurcli.kernel.deconv import Deconvolver, deconvolve, weight_for_noise
from deblurcli.kernel.noise import estimate_noise
from deblurcli.kernel.psf import normalise_kernel
from deblurcli.metrics import shift_tolerant_psnr
from deblurcli.tiling import TilePlan
from deblurcli.valsets import heldout_kernels

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "train"
FAMILIES = ("random", "heldout")


def photos(n: int, size: int) -> list[torch.Tensor]:
    """``n`` centre crops (3 x S x S, S <= size + 40) alternating BSDS500 and free photos."""
    bsds = sorted((DATA / "bsds500").glob("*.jpg"))[::3]
    free = sorted((DATA / "free_photos").glob("*.jpg"))
    files = [f for pair in zip(bsds, free) for f in pair][:n]
    out = []
    for f in files:
        a = np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255
        h, w, _ = a.shape
        s = min(size + 40, h, w)
        top, left = (h - s) // 2, (w - s) // 2
        out.append(torch.from_numpy(a[top : top + s, left : left + s].copy()).permute(2, 0, 1))
    return out


def kernels(n: int, family: str, seed: int) -> list[torch.Tensor]:
    """``n`` kernels of 13-27 px from the training (``random``) or held-out validation family."""
    if family == "random":
        cfg = BlurConfig(kernel_size=31, min_extent=12, max_extent=26)
        ks = random_kernels(n, cfg, torch.Generator().manual_seed(seed))[:, 0]
    else:
        rng = np.random.default_rng(seed)
        ks = torch.from_numpy(heldout_kernels(rng, [int(s) for s in rng.integers(13, 28, size=n)]))
    return [normalise_kernel(k) for k in ks]


def blur(
    sharp: torch.Tensor, k: torch.Tensor, noise: float, seed: int, linear: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(blurry, aligned sharp): valid blur in sRGB (or linear light), noise in sRGB, 8-bit rounding."""
    r = k.shape[-1] // 2
    x = srgb_to_linear(sharp) if linear else sharp
    b = apply_kernels(x[None], k[None, None])[0][:, r:-r, r:-r].clamp(0, 1)
    b = linear_to_srgb(b) if linear else b
    b = b + noise * torch.randn(b.shape, generator=torch.Generator().manual_seed(seed))
    return (b.clamp(0, 1) * 255 + 0.5).floor() / 255, sharp[:, r:-r, r:-r]


def score(out: torch.Tensor, sharp: torch.Tensor, border: int = 8) -> float:
    def u8(t: torch.Tensor) -> np.ndarray:
        a = t.permute(1, 2, 0).numpy()[border:-border, border:-border]
        return np.round(np.clip(a, 0, 1) * 255) / 255

    return shift_tolerant_psnr(u8(out), u8(sharp), 5)


def cases(
    args: argparse.Namespace, noise: float, linear: bool = False
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(family, blurry, sharp, kernel) for each family: even photos random kernels, odd ones held-out."""
    crops = photos(args.photos, args.size)
    for family in FAMILIES:
        ks = kernels(len(crops), family, args.seed)
        for i, (p, k) in enumerate(zip(crops, ks)):
            if (i % 2 == 0) == (family == "random"):
                yield (family, *blur(p, k, noise, args.seed + i, linear), k)


def report(rows: dict[tuple[str, str], list[float]]) -> None:
    for (family, name), values in rows.items():
        unit = "" if "/" in name else " dB"
        figures = f"mean {np.mean(values):+6.2f}{unit}  worst {min(values):+6.2f}"
        print(f"{family:8s} {name:32s} {figures}  {np.round(values, 2).tolist()}")


def study_gain(args: argparse.Namespace) -> None:
    rows: dict[tuple[str, str], list[float]] = {}
    for noise in args.noise:
        for family, b, s, k in cases(args, noise):
            base = score(b, s)
            for mult in args.mult:
                out = deconvolve(b, k, weight=weight_for_noise(noise) * mult)
                rows.setdefault((family, f"noise {noise:.3f} weight x{mult}"), []).append(score(out, s) - base)
            est = estimate_noise(b)
            out = deconvolve(b, k)  # the default: noise estimated, weight from the rule
            rows.setdefault((family, f"noise {noise:.3f} estimated"), []).append(score(out, s) - base)
            rows.setdefault((family, f"noise {noise:.3f} est/true"), []).append(est / noise)
    report(rows)


def study_prior(args: argparse.Namespace) -> None:
    """The colour prior: gradients shrunk on luminance/opponent axes (the default) or on R, G, B apart."""
    rows: dict[tuple[str, str], list[float]] = {}
    for noise in args.noise:
        for family, b, s, k in cases(args, noise):
            base = score(b, s)
            for name, opponent in (("per channel", False), ("opponent axes", True)):
                out = deconvolve(b, k, noise=noise, opponent=opponent)
                rows.setdefault((family, f"noise {noise:.3f} {name}"), []).append(score(out, s) - base)
    report(rows)


def study_space(args: argparse.Namespace) -> None:
    rows: dict[tuple[str, str], list[float]] = {}
    for blurred_in in ("srgb", "linear"):
        for family, b, s, k in cases(args, 0.01, linear=blurred_in == "linear"):
            base = score(b, s)
            out = deconvolve(b, k, noise=0.01)
            rows.setdefault((family, f"blur {blurred_in}, deconv sRGB"), []).append(score(out, s) - base)
            lin = srgb_to_linear(b)
            out = linear_to_srgb(deconvolve(lin, k, noise=estimate_noise(lin)))
            rows.setdefault((family, f"blur {blurred_in}, deconv linear"), []).append(score(out, s) - base)
    report(rows)


def lamps(sharp: torch.Tensor, seed: int) -> torch.Tensor:
    """Linear-light scene: clipped highlights doubled and six small lamps of 2-8x white."""
    g = torch.Generator().manual_seed(seed)
    lin = srgb_to_linear(sharp) + (sharp >= 0.97).float()
    s = lin.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    for _ in range(6):
        cy, cx = torch.randint(20, s - 20, (2,), generator=g).tolist()
        radius = int(torch.randint(2, 7, (1,), generator=g))
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius).float()
        lin = lin * (1 - disc) + disc * float(2 + 6 * torch.rand(1, generator=g))
    return lin


def study_saturation(args: argparse.Namespace) -> None:
    rows: dict[tuple[str, str], list[float]] = {}
    crops = photos(args.photos, args.size)
    for family in FAMILIES:
        for i, (p, k) in enumerate(zip(crops, kernels(len(crops), family, args.seed))):
            if (i % 2 == 0) != (family == "random"):
                continue
            r = k.shape[-1] // 2
            lin = lamps(p, args.seed + i)
            b = linear_to_srgb(apply_kernels(lin[None], k[None, None])[0][:, r:-r, r:-r].clamp(0, 1))
            b = b + 0.01 * torch.randn(b.shape, generator=torch.Generator().manual_seed(i))
            b = (b.clamp(0, 1) * 255 + 0.5).floor() / 255
            s = linear_to_srgb(lin.clamp(0, 1))[:, r:-r, r:-r]
            base = score(b, s)
            for masked in (True, False):
                out = deconvolve(b, k, noise=0.01, mask_saturated=masked)
                rows.setdefault((family, f"mask {'on' if masked else 'off'}"), []).append(score(out, s) - base)
    report(rows)


def study_tiled(args: argparse.Namespace) -> None:
    rows: dict[tuple[str, str], list[float]] = {}
    for family, b, s, k in cases(args, 0.01):
        base = score(b, s)
        rgb = b.permute(1, 2, 0).numpy()
        direct = deconvolve(b, k, noise=0.01)
        rows.setdefault((family, "deconvolve() gain"), []).append(score(direct, s) - base)
        for mult in (1, 2, 3):
            model = prepare_model(Deconvolver(k, noise=0.01, tile_margin=mult * k.shape[-1]), torch.device("cpu"))
            whole = torch.from_numpy(deblur_array(model, rgb, device="cpu", plan=TilePlan(0))).permute(2, 0, 1)
            plan = TilePlan(args.tile, 1, 32)
            tiled = torch.from_numpy(deblur_array(model, rgb, device="cpu", plan=plan)).permute(2, 0, 1)
            agree = -10 * math.log10(float((whole.double() - tiled.double()).square().mean()))
            rows.setdefault((family, f"margin {mult}k: engine whole gain"), []).append(score(whole, s) - base)
            rows.setdefault((family, f"margin {mult}k: tiled gain"), []).append(score(tiled, s) - base)
            rows.setdefault((family, f"margin {mult}k: tiled~whole dB"), []).append(agree)
    report(rows)


def study_speed(args: argparse.Namespace) -> None:
    k = kernels(1, "heldout", args.seed)[0]
    for side in (512, 1024):
        x = torch.rand(3, side, side)
        deconvolve(x, k, noise=0.01)
        start = time.perf_counter()
        for _ in range(args.repeats):
            deconvolve(x, k, noise=0.01)
        per = (time.perf_counter() - start) / args.repeats
        mp = side * side / 1e6
        print(f"{side} px, {k.shape[-1]} px kernel, {torch.get_num_threads()} threads: {per:.2f} s = "
              f"{per / mp * 0.25:.2f} s per 0.25 MP, {per / mp:.2f} s per MP")
    rgb = np.random.default_rng(0).random((1536, 2048, 3), dtype=np.float32)
    model = prepare_model(Deconvolver(k, noise=0.01), torch.device("cpu"))
    for tile in (512, 1024):
        start = time.perf_counter()
        deblur_array(model, rgb, device="cpu", plan=TilePlan(tile, 1, 32))
        per = time.perf_counter() - start
        print(f"engine 2048x1536, tile {tile}, margin {model.tile_margin}: {per:.1f} s = {per / 3.146:.2f} s per MP")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=("gain", "prior", "space", "saturation", "tiled", "speed"))
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.03])
    parser.add_argument("--mult", type=float, nargs="+", default=[1.0])
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.study != "speed" and not (DATA / "bsds500").is_dir():
        sys.exit(f"skipped: {DATA} is not here")
    studies = {
        "gain": study_gain,
        "prior": study_prior,
        "space": study_space,
        "saturation": study_saturation,
        "tiled": study_tiled,
        "speed": study_speed,
    }
    studies[args.study](args)


if __name__ == "__main__":
    main()
