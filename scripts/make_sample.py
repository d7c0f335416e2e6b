"""Make the README's quick-start photo: a freely licensed sharp photo, blurred by our own synthesis.

    python scripts/make_sample.py [--src ../shared/data/train/free_photos/scikit_image__coffee.jpg]
                                  [--out samples/coffee_blurry.jpg] [--seed 3]

The source is scikit-image's ``coffee`` photo (Rachel Michetti, CC0 1.0; see samples/LICENSE.md), so the
sample can ship in the repository and be redistributed without conditions. It is downscaled to at most
800 px on the long side, then blurred once by :func:`deblurcli.blur.synthesize` with a seeded generator and
a *moderate*, plain camera-shake setting: an 8-10 px path, blurred in linear light, no spatially varying
blur, a little sensor noise and no JPEG round trip before the final save. The result must be visibly
blurred yet typical of a hand-held shot (a model trained on this synthesis should clearly improve it), and
the same seed gives the same file on the same machine. It is written as JPEG under 150 KB. Exits 0 with a
message when the source photo is absent (the shared data is not everywhere).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from deblurcli.blur import BlurConfig

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MAX_SIDE = 800
MAX_BYTES = 150_000


def blur_config() -> BlurConfig:
    """Moderate, plain camera shake: what a quick-start photo should show, nothing exotic (imported here
    so that --help does not import torch)."""
    from deblurcli.blur import BlurConfig

    return BlurConfig(
        min_extent=8.0,
        max_extent=10.0,
        exposure_fractions=(0.5, 1.0),
        nonuniform_prob=0.0,
        linear_prob=1.0,
        saturation_prob=0.0,
        noise_prob=1.0,
        shot_noise=(5e-5, 5e-5),
        read_noise=(5e-6, 5e-6),
        srgb_noise=(0.003, 0.003),
        jpeg_prob=0.0,
        sharp_prob=0.0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data" / "train" / "free_photos" / "scikit_image__coffee.jpg")
    parser.add_argument("--out", type=Path, default=REPO / "samples" / "coffee_blurry.jpg")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.src.is_file():
        print(f"skipped: {args.src} is absent (the shared photos are not here)")
        return 0

    import torch
    from PIL import Image

    from deblurcli.atomic import atomic_write_bytes
    from deblurcli.blur import synthesize
    from deblurcli.photo import read_photo

    rgb = np.asarray(read_photo(args.src).rgb, dtype=np.float32)
    h, w = rgb.shape[:2]
    scale = min(1.0, MAX_SIDE / max(h, w))
    if scale < 1.0:
        small = Image.fromarray(np.round(rgb * 255).astype(np.uint8)).resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
        rgb = np.asarray(small, dtype=np.float32) / np.float32(255)
    sharp = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    blurry = synthesize(sharp, blur_config(), torch.Generator().manual_seed(args.seed))[0].permute(1, 2, 0).numpy()
    image = Image.fromarray(np.round(np.clip(blurry, 0, 1) * 255).astype(np.uint8))
    for quality in (90, 85, 80, 75):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality, optimize=True)
        if buffer.tell() <= MAX_BYTES:
            break
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, buffer.getvalue())
    psnr = 10 * np.log10(1.0 / float(np.mean((np.asarray(image, np.float64) / 255 - rgb) ** 2)))
    print(f"{args.out}: {image.width}x{image.height}, {buffer.tell() // 1024} KB (JPEG q{quality}), "
          f"PSNR against the sharp photo {psnr:.2f} dB, seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
