"""Build the seeded validation sets (synthetic, heldout, sharp, dynamic) and print their blurry-input PSNR.

    python scripts/make_valsets.py [--src ../shared/data/val/live1] [--out .data/val] [--seed 0]

Writes ``OUT/<family>/blur/*.png`` + ``OUT/<family>/sharp/*.png`` for ``deblur eval --pairs OUT/<family>``.
The printed PSNR of the blurry inputs against the sharp photos (8-bit, data range 255, mean over images)
is the baseline a model must beat. Exits 0 with a message when the source folder is absent, so scripts
and CI without the shared data keep working.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deblurcli.valsets import FAMILIES, build_valset

REPO = Path(__file__).resolve().parent.parent


def psnr_u8(a: Path, b: Path) -> float:
    x = np.asarray(Image.open(a), dtype=np.float64)
    y = np.asarray(Image.open(b), dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data" / "val" / "live1")
    parser.add_argument("--out", type=Path, default=REPO / ".data" / "val")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", choices=FAMILIES, action="append", help="default: all four")
    args = parser.parse_args()
    if not args.src.is_dir():
        print(f"skipped: source folder {args.src} is absent (the shared validation photos are not here)")
        return 0
    for family in args.family or FAMILIES:
        start = time.perf_counter()
        blurs = build_valset(args.src, args.out / family, family=family, seed=args.seed)
        scores = [psnr_u8(p, p.parent.parent / "sharp" / p.name) for p in blurs]
        mean = float(np.mean(scores))
        spread = f"(min {min(scores):.2f}, max {max(scores):.2f})"
        shown = "identical (inf)" if np.isinf(mean) else f"{mean:.2f} dB {spread}"
        print(f"{family:9s} {len(blurs):3d} pairs -> {args.out / family}  blurry-vs-sharp PSNR {shown}  "
              f"[{time.perf_counter() - start:.1f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
