"""Picture for docs/how_deblurcli_decides.md: one held-out camera-shake photo, blurry | auto | sharp.

    python scripts/kernel_path_picture.py                       # cemetry -> docs/images/kernel_path_cemetry.jpg
    python scripts/kernel_path_picture.py --photo monarch -o monarch.jpg

The photo is blurred exactly as ``bench/camera_shake.py`` blurs it (its kernel, 1 % noise, 8 bits), deblurred
by ``Session(method="auto")`` as ``deblur`` would, and a centre crop of the three is laid side by side with
the true kernel (over the blurry panel) and the estimated one (over auto's) in the top-left corners. The
PSNR of each panel is printed (bench scoring: up to a ±5 px shift, border dropped). Needs ../shared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import camera_shake  # noqa: E402

from deblurcli.kernel.psf import kernel_picture  # noqa: E402
from deblurcli.metrics import quantize8  # noqa: E402
from deblurcli.session import Session  # noqa: E402


def inset(panel: np.ndarray, kernel: np.ndarray) -> None:
    """Draw ``kernel`` (scaled up, white on black, a grey frame) into the panel's top-left corner."""
    pic = kernel_picture(kernel, scale=max(2, 96 // max(kernel.shape)))
    pic = np.pad(pic, 2, constant_values=128)
    h, w = pic.shape
    panel[4 : 4 + h, 4 : 4 + w] = pic[..., None] / 255.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default="cemetry", help="a LIVE1 photo name (default cemetry)")
    parser.add_argument("--crop", type=int, nargs=2, default=(320, 400), metavar=("H", "W"))
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "images" / "kernel_path_cemetry.jpg")
    args = parser.parse_args()
    if not camera_shake.PHOTOS.is_dir():
        print(f"{camera_shake.PHOTOS} is absent: nothing to draw")
        return 0
    paths = [p for p in camera_shake.photo_paths(camera_shake.PHOTOS, None) if p.stem == args.photo]
    if not paths:
        print(f"no photo named {args.photo} in {camera_shake.PHOTOS}")
        return 2
    sharp = quantize8(np.asarray(camera_shake.load_photos(paths, None)[args.photo], dtype=np.float32))
    blurry, kernel, target = camera_shake.degrade(sharp, args.photo, 0)
    result = Session(method="auto").deblur(blurry)
    scores = {name: camera_shake.score(img, target)[0] for name, img in (("blurry", blurry), ("auto", result.rgb))}
    print(f"{args.photo}: blurry {scores['blurry']:.2f} dB, auto {scores['auto']:.2f} dB ({result.method}; "
          f"{'; '.join(result.notes)})")
    h, w = args.crop
    y0, x0 = (target.shape[0] - h) // 2, (target.shape[1] - w) // 2
    panels = [np.array(img[y0 : y0 + h, x0 : x0 + w], dtype=np.float32) for img in (blurry, result.rgb, target)]
    inset(panels[0], kernel)
    if result.kernel is not None:
        inset(panels[1], result.kernel)
    strip = np.concatenate([np.pad(p, ((0, 0), (0, 4), (0, 0)), constant_values=1.0) for p in panels], 1)[:, :-4]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(strip, 0, 1) * 255 + 0.5).astype(np.uint8)).save(args.output, quality=90)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
